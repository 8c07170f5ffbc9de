"""Environment settings, validated once by the composition root (never at import time)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

BUNDLED_AGENTS = Path(__file__).resolve().parents[1] / "agents"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHIMERA_", extra="ignore")

    backend: Literal["local", "aws"] = "local"
    home: Path = Path(".chimera")
    agents_dir: Path = BUNDLED_AGENTS
    table_name: str = ""
    bus_name: str = "default"
    bundle_bucket: str = ""
    bundle_prefix: str = "agents/"
    budget_usd: float = Field(default=25.0, ge=0)
    deadline_s: float = Field(default=900.0, gt=0)
    shard_size: int = Field(default=64, gt=0, le=10_000)
    allow_wasi: bool = False
