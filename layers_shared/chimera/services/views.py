"""What the API and the CLI read: views over the stored state (no optimizer blobs)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from chimera.domain.genome import GeneSpec
from chimera.domain.models import ResourceLimits


class View(BaseModel):
    model_config = ConfigDict(frozen=True)


class AgentView(View):
    agent_id: str
    suite: str
    description: str
    obs_len: int
    genome: tuple[GeneSpec, ...]
    limits: ResourceLimits
    module_digest: str
    discovered_at: datetime
    live_version: int | None = Field(description="the version with the largest weight")
    weights: dict[int, float] = Field(description="genome version -> share of traffic")
    problems: list[str] = Field(
        default=[], description="stored state of this agent that could not be read (item: why)"
    )


class GenomeView(View):
    agent_id: str
    version: int
    genes: dict[str, float]
    training_fitness: float | None
    parent_version: int | None
    source_run: str | None
    live_weight: float
    created_at: datetime


class FitnessPointView(View):
    generation: int
    best: float
    mean: float
    std: float
    evaluations: int


class RunView(View):
    run_id: str
    agent_id: str
    suite: str
    strategy: str
    status: str
    seed: int
    population_size: int
    max_generations: int
    generation: int
    best_fitness: float | None
    incumbent_version: int | None
    champion_version: int | None
    decision: str | None
    started_at: datetime
    finished_at: datetime | None
    history: list[FitnessPointView]


class Check(View):
    ok: bool
    latency_ms: float
    detail: str = ""


class Health(View):
    status: Literal["ok", "degraded"]
    checks: dict[str, Check]


class CycleStarted(View):
    execution_id: str = Field(description="the execution's name: start again with it to dedupe")
    execution_arn: str
    status: str
