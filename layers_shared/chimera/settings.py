"""Environment settings, validated once by the composition root (never at import time).

A discriminated model on CHIMERA_BACKEND: `local` (the embedded default) or `aws`. Each
backend's required fields fail at start-up with the environment variable named.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chimera.domain.errors import ValidationFailedError

BUNDLED_AGENTS = Path(__file__).resolve().parents[1] / "agents"
ENV_PREFIX = "CHIMERA_"


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    budget_usd: float = Field(default=25.0, ge=0)
    deadline_s: float = Field(default=900.0, gt=0)
    shard_size: int = Field(default=64, gt=0, le=10_000)
    allow_wasi: bool = False
    # The evaluation Lambda's size: layer 8 prices the Lambda placement from these.
    evaluator_memory_mb: int = Field(default=1769, ge=128, le=10_240)
    evaluator_architecture: Literal["x86_64", "arm64"] = "x86_64"
    # How long a run stays owned by the execution driving it after its last step; another
    # execution takes it over sooner only when the owner is known to have stopped.
    run_lease_s: int = Field(default=900, gt=0, le=86_400)
    # KPI rollups: one aggregate per agent, genome version and window of this many seconds.
    rollup_window_s: int = Field(default=300, ge=1, le=86_400)


class LocalSettings(_Common):
    backend: Literal["local"] = "local"
    home: Path = Path(".chimera")
    agents_dir: Path = BUNDLED_AGENTS


class AwsSettings(_Common):
    backend: Literal["aws"]
    table_name: str = Field(min_length=1)
    bus_name: str = Field(min_length=1)
    bundle_bucket: str = Field(min_length=1)
    bundle_prefix: str = "agents/"
    artifact_bucket: str = Field(min_length=1)
    artifact_prefix: str = "artifacts/"
    cycle_state_machine_arn: str = ""


Settings = LocalSettings | AwsSettings
_BACKENDS: dict[str, type[LocalSettings] | type[AwsSettings]] = {
    "local": LocalSettings,
    "aws": AwsSettings,
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings of the backend CHIMERA_BACKEND names; errors name the variable."""
    env = os.environ if environ is None else environ
    backend = env.get(f"{ENV_PREFIX}BACKEND", "local")
    cls = _BACKENDS.get(backend)
    if cls is None:
        raise ValidationFailedError(
            f"{ENV_PREFIX}BACKEND", f"{backend!r} is not one of {sorted(_BACKENDS)}"
        )
    values = {k[len(ENV_PREFIX) :].lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "backend"
        raise ValidationFailedError(f"{ENV_PREFIX}{name.upper()}", err["msg"]) from exc
