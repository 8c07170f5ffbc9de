"""Environment settings, validated once by the composition root (never at import time).

A discriminated model on CHIMERA_BACKEND: `local` (the embedded default) or `aws`. Each
backend's required fields fail at start-up with the environment variable named.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chimera.domain.errors import ValidationFailedError
from chimera.domain.models import ExperimentConfig

BUNDLED_AGENTS = Path(__file__).resolve().parents[1] / "agents"
ENV_PREFIX = "CHIMERA_"


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    budget_usd: float = Field(default=25.0, ge=0)
    deadline_s: float = Field(default=900.0, gt=0)
    shard_size: int = Field(default=64, gt=0, le=10_000)
    # A generation of more shards than this is evaluated by a Distributed Map (shards staged
    # in the artifact store, one child execution each); fewer keep the inline Map, which AWS
    # runs at most 40 iterations at a time.
    distributed_map_threshold: int = Field(default=40, ge=0, le=100_000)
    # Where layer 8 places each segment: `auto` (the cheapest that keeps the deadline) or one
    # route the operator asks for (`chimera run --placement batch`); the cost is reserved
    # against the budget either way.
    placement: Literal["auto", "lambda", "batch", "sagemaker"] = "auto"
    # Pre-screening offspring with the agent's performance predictor (CHIMERA_PRESCREEN): `on`
    # screens where the suite opts in (its `prescreen_keep`) and a predictor is installed
    # for the agent; `off` evaluates every candidate the optimizer asks.
    prescreen: Literal["on", "off"] = "on"
    allow_wasi: bool = False
    # The evaluation Lambda's size: layer 8 prices the Lambda placement from these.
    evaluator_memory_mb: int = Field(default=1769, ge=128, le=10_240)
    evaluator_architecture: Literal["x86_64", "arm64"] = "x86_64"
    # How long a run stays owned by the execution driving it after its last step; another
    # execution takes it over sooner only when the owner is known to have stopped.
    run_lease_s: int = Field(default=900, gt=0, le=86_400)
    # KPI rollups: one aggregate per agent, genome version and window of this many seconds.
    rollup_window_s: int = Field(default=300, ge=1, le=86_400)
    # The canary every champion goes through (chimera.domain.models.ExperimentConfig).
    canary_steps: tuple[float, ...] = (0.05, 0.25, 0.5, 1.0)
    canary_bake_s: int = Field(default=600, ge=1, le=86_400)
    canary_min_samples: int = Field(default=100, ge=2)
    canary_max_bakes: int = Field(default=8, ge=1, le=1000)
    canary_alpha: float = Field(default=0.05, gt=0, lt=0.5)
    # The last step's judgement; sprt is planned for the suite's margin ("worse by the margin"
    # against "no worse at all") at this power.
    canary_analysis: Literal["sequential", "sprt", "welch"] = "sequential"
    canary_power: float = Field(default=0.8, gt=0, lt=1)

    @field_validator("canary_steps", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        """From the environment: `0.05,0.25,0.5,1` (checked by ExperimentConfig's rules)."""
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    def canary(self, **suite: Any) -> ExperimentConfig:
        """The canary configuration of this deployment, with a suite's own fields (`metric`,
        `margin`, `guardrails`) when given (ValidationFailedError naming the variable, or the
        suite's field)."""
        try:
            return ExperimentConfig.model_validate(
                {
                    "steps": self.canary_steps,
                    "bake_s": self.canary_bake_s,
                    "min_samples": self.canary_min_samples,
                    "max_bakes": self.canary_max_bakes,
                    "alpha": self.canary_alpha,
                    "analysis": self.canary_analysis,
                    "power": self.canary_power,
                    **suite,
                }
            )
        except ValidationError as exc:
            err = exc.errors()[0]
            # a rule across fields names its field first: "Value error, power: must ..."
            name = str(err["loc"][0]) if err["loc"] else err["msg"].split(", ", 1)[-1]
            name = name.split(":", 1)[0]
            ours = f"canary_{name}" in type(self).model_fields and name not in suite
            field = f"{ENV_PREFIX}CANARY_{name.upper()}" if ours else name
            raise ValidationFailedError(field, err["msg"]) from exc


class LocalSettings(_Common):
    backend: Literal["local"] = "local"
    home: Path = Path(".chimera")
    agents_dir: Path = BUNDLED_AGENTS
    # No clients here: while a canary bakes, the traffic generator drives this many jobs per
    # simulated second to each agent under experiment (chimera_local.traffic), and the clock
    # moves on by the bake (no real sleeping). Smaller steps than the cloud's, so a local run
    # reaches its verdicts in seconds.
    local_traffic_rate: float = Field(default=1.0, gt=0, le=1000)
    canary_steps: tuple[float, ...] = (0.2, 0.5, 1.0)
    canary_bake_s: int = Field(default=120, ge=1, le=86_400)
    canary_min_samples: int = Field(default=20, ge=2)


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
