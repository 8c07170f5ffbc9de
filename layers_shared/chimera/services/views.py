"""What the API and the CLI read: views over the stored state (no optimizer blobs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chimera.domain.genome import GeneSpec
from chimera.domain.models import ExperimentConfig, ResourceLimits


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


class ExperimentView(View):
    """A canary of a candidate genome against the live incumbent (no point history)."""

    experiment_id: str
    agent_id: str
    run_id: str | None = Field(description="the evolution run that proposed the candidate")
    execution_id: str | None = Field(description="the canary-rollout execution")
    candidate_version: int
    incumbent_version: int
    status: Literal["running", "concluded", "stopped"] = Field(
        description="concluded: by its analysis; stopped: by an operator, an alarm or a failure"
    )
    verdict: Literal["promoted", "rolled-back"] | None
    step: int = Field(description="index into config.steps: the current (or last) weight step")
    weight: float = Field(description="the candidate's share of traffic at that step")
    bakes: int = Field(description="bakes analysed in that step")
    p_value: float = Field(description="always-valid p-value of the primary metric")
    guardrail_p: float = Field(description="always-valid p-value of the error-rate guardrail")
    started_at: datetime
    step_started_at: datetime
    concluded_at: datetime | None
    reason: str | None = Field(description="why it concluded or was stopped")
    config: ExperimentConfig
    statistics: dict[str, Any] = Field(description="the last analysis (primary, srm, guardrails)")


class ExperimentPointView(View):
    """One analysis: a point of the statistic over time."""

    seq: int
    at: datetime
    step: int
    weight: float = Field(description="the candidate's share of traffic in this step")
    n_control: int = Field(description="incumbent jobs over the whole experiment")
    n_treatment: int = Field(description="candidate jobs over the whole experiment")
    difference: float | None = Field(description="candidate - incumbent, primary metric")
    lower: float | None = Field(description="confidence sequence, lower (null: unbounded)")
    upper: float | None = Field(description="confidence sequence, upper (null: unbounded)")
    p_value: float = Field(description="always-valid p-value")
    srm_p: float | None = Field(description="sample-ratio check of the step (chi-square)")
    error_rate: tuple[float | None, float | None] = Field(description="incumbent, candidate")
    latency_p95: tuple[float | None, float | None] = Field(description="ms: incumbent, candidate")
    decision: str = Field(description="bake, next, promote or rollback")


class ExperimentDetailView(ExperimentView):
    points: list[ExperimentPointView] = Field(description="every analysis, oldest first")


class RollbackView(View):
    """What an operator's rollback did: the live alias after it."""

    agent_id: str
    from_version: int = Field(description="the version that served before")
    to_version: int = Field(description="the version that serves now")
    changed: bool = Field(description="false: the alias already served only to_version")
    live_version: int
    weights: dict[int, float] = Field(description="genome version -> share of traffic")
    alias_revision: int
    stopped_experiment: ExperimentView | None = Field(
        description="the running canary this rollback stopped, if there was one"
    )
