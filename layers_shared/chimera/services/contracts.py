"""Inputs and outputs of the layer handlers: parsed at the edge, one model per action.

Each handler's event is a discriminated union on `action`; the state machines send these
shapes. Payloads carry ids, never large blobs.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Literal

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel, SqsRecordModel
from pydantic import BaseModel, ConfigDict, Field, Json, ValidationInfo, field_validator

from chimera.domain.events import KpiRecorded
from chimera.domain.models import (
    MAX_AGENTS,
    MAX_POPULATION,
    AgentId,
    ExperimentConfig,
    GateMode,
    KpiRecord,
    Name,
    RunId,
    Strategy,
    Suite,
    Text,
    Version,
)


class Msg(BaseModel):
    """Every contract: no unknown field, and no NaN or infinity in any float."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


ExecutionId = Annotated[str, Field(min_length=1, max_length=256)]


# -- layer 1 -------------------------------------------------------------------------------
class DiscoverRequest(Msg):
    action: Literal["discover"] = "discover"
    execution_id: ExecutionId


class DiscoverResult(Msg):
    agents: list[str]
    rejected: list[dict[str, str]]


# -- layer 2 -------------------------------------------------------------------------------
class PlanRequest(Msg):
    action: Literal["plan"] = "plan"
    execution_id: ExecutionId
    agents: list[AgentId] = Field(max_length=MAX_AGENTS)
    objective: str = Field(default="improve every agent on its suite", min_length=1, max_length=500)
    gate: GateMode = "improvement"


class PlanItem(Msg):
    execution_id: ExecutionId
    agent_id: AgentId
    suite: Suite
    action: Literal["evolve", "skip"]
    reason: str = Field(max_length=500)
    gate: GateMode = "improvement"


class PlanResult(Msg):
    items: list[PlanItem] = Field(max_length=MAX_AGENTS)


# -- layer 3 -------------------------------------------------------------------------------
class ValidateRequest(Msg):
    action: Literal["validate"] = "validate"
    execution_id: ExecutionId
    agent_id: AgentId


class ValidateResult(Msg):
    ok: bool
    problems: list[str]


class Differences(Msg):
    """Candidate minus incumbent on each hold-out item both scored (the same episodes or
    samples), summarised as moments: what the gate's paired test reads."""

    n: int = Field(ge=0, le=100_000_000)
    mean: float
    m2: float = Field(ge=0, description="sum of squared deviations from the mean")


class GateRequest(Msg):
    action: Literal["gate"] = "gate"
    execution_id: ExecutionId
    run_id: RunId
    candidate: KpiRecord
    incumbent: KpiRecord | None = None
    difference: Differences | None = None


class GateResult(Msg):
    approved: bool
    reason: str
    p_value: float | None = Field(
        default=None, ge=0, le=1, description="the paired test's, when one was made"
    )


# -- layer 4 -------------------------------------------------------------------------------
class Shard(Msg):
    run_id: RunId
    generation: int = Field(ge=0, le=1_000_000)
    shard: int = Field(ge=0, lt=MAX_POPULATION)
    start: int = Field(ge=0, lt=MAX_POPULATION)
    stop: int = Field(ge=1, le=MAX_POPULATION)

    @field_validator("stop")
    @classmethod
    def _after_start(cls, stop: int, info: ValidationInfo) -> int:
        start = info.data.get("start")
        if start is not None and stop <= start:
            raise ValueError(f"{stop} is not after start ({start})")
        return stop


class EvaluateShardRequest(Shard):
    action: Literal["evaluate"] = "evaluate"


class EvaluateShardResult(Msg):
    shard: int
    evaluated: int
    failed: str | None = None


class StageShardsRequest(Msg):
    """A generation's shards, before they are evaluated: staged for a Distributed Map when
    there are more than the deployment's `distributed_map_threshold`."""

    action: Literal["stage"] = "stage"
    execution_id: ExecutionId
    run_id: RunId
    generation: int = Field(ge=0, le=1_000_000)
    shards: list[Shard] = Field(min_length=1, max_length=MAX_POPULATION)


class StageShardsResult(Msg):
    distributed: bool
    shards: int
    bucket: str | None = Field(default=None, description="where the items and results lie")
    key: str | None = Field(default=None, description="the items object: a JSON array")
    results_prefix: str | None = Field(default=None, description="the ResultWriter's prefix")


class ResultWriterDetails(Msg):
    """Where a Distributed Map's ResultWriter put its manifest (the Map state's output)."""

    bucket: str = Field(alias="Bucket", min_length=1, max_length=255)
    key: str = Field(alias="Key", min_length=1, max_length=1024)


class MapRunOutput(Msg):
    map_run_arn: str = Field(alias="MapRunArn", min_length=1, max_length=2048)
    result_writer_details: ResultWriterDetails = Field(alias="ResultWriterDetails")


class CollectShardsRequest(Msg):
    action: Literal["collect"] = "collect"
    execution_id: ExecutionId
    run_id: RunId
    generation: int = Field(ge=0, le=1_000_000)
    map_run: MapRunOutput


class FailedShard(Msg):
    shard: int
    start: int
    stop: int
    error: str


class CollectShardsResult(Msg):
    shards: int
    succeeded: int
    failed: list[FailedShard] = Field(
        description="shards that failed past their retries: their candidates scored as failed"
    )


class HoldoutRequest(Msg):
    action: Literal["holdout"] = "holdout"
    execution_id: ExecutionId
    run_id: RunId


class HoldoutResult(Msg):
    candidate: KpiRecord
    incumbent: KpiRecord | None
    records: list[KpiRecord]
    difference: Differences | None = Field(
        default=None, description="per item, when both scored the same items"
    )


class PredictRequest(Msg):
    action: Literal["predict"] = "predict"
    agent_id: AgentId
    job_id: str = Field(min_length=1, max_length=256)
    observation: list[float] = Field(min_length=1, max_length=4096)


class PredictResult(Msg):
    agent_id: str
    genome_version: int
    job_id: str
    output: dict[str, object]
    latency_ms: float


# -- layer 5 -------------------------------------------------------------------------------
class IngestRequest(Msg):
    action: Literal["ingest"] = "ingest"
    records: list[KpiRecord] = Field(max_length=1000)


class KpiEnvelope(EventBridgeModel):
    """What EventBridge delivers for a KpiRecorded event (Powertools' envelope model)."""

    detail: KpiRecorded


class KpiMessage(SqsRecordModel):
    """One SQS message of the KPI queue: its body is the event's EventBridge envelope."""

    body: Json[KpiEnvelope]  # type: ignore[assignment]


class IngestResult(Msg):
    received: int
    new: int


class ReportRequest(Msg):
    action: Literal["report"] = "report"
    execution_id: ExecutionId


# -- layer 5: experiments (the canary-rollout state machine) ---------------------------------
ExperimentIdField = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,160}$")]
CanaryDecision = Literal["bake", "next", "promote", "rollback", "stopped"]


class StartExperimentRequest(Msg):
    action: Literal["start_experiment"] = "start_experiment"
    execution_id: ExperimentIdField = Field(description="the canary execution: the experiment id")
    agent_id: AgentId
    run_id: RunId | None = None
    candidate_version: Version
    incumbent_version: Version
    config: ExperimentConfig = ExperimentConfig()


class CanaryStep(Msg):
    """Where a canary stands after a task: what the state machine branches on."""

    experiment_id: str
    step: int
    bake: int = Field(description="bakes analysed in this step")
    bake_s: int
    weight: float
    decision: CanaryDecision = "bake"
    reason: str = ""


class AnalyzeRequest(Msg):
    action: Literal["analyze"] = "analyze"
    execution_id: ExecutionId
    experiment_id: ExperimentIdField
    step: int = Field(ge=0, le=16)
    bake: int = Field(ge=0)


class ShiftRequest(Msg):
    action: Literal["shift"] = "shift"
    execution_id: ExecutionId
    experiment_id: ExperimentIdField
    step: int = Field(ge=0, le=16, description="the step the experiment moves on from")


class ConcludeRequest(Msg):
    action: Literal["conclude"] = "conclude"
    execution_id: ExecutionId
    experiment_id: ExperimentIdField
    verdict: Literal["promoted", "rolled-back"]
    reason: Text = ""


class AbortRequest(Msg):
    action: Literal["abort"] = "abort"
    execution_id: ExecutionId
    experiment_id: ExperimentIdField
    error: dict[str, object] = Field(default={}, max_length=8)


class ExperimentOutcome(Msg):
    experiment_id: str
    status: str
    verdict: str | None
    reason: str


# -- layer 6 -------------------------------------------------------------------------------
class ChooseRequest(Msg):
    action: Literal["choose"] = "choose"
    execution_id: ExecutionId
    agent_id: AgentId


class StrategyChoice(Msg):
    strategy: Strategy
    population_size: int = Field(gt=1, le=MAX_POPULATION)
    max_generations: int = Field(gt=0, le=100_000)
    target_fitness: float | None
    reason: Text


class AdaptRequest(Msg):
    action: Literal["adapt"] = "adapt"
    execution_id: ExecutionId
    run_id: RunId


class AdaptResult(Msg):
    proceed: bool
    reason: str


# -- layer 7 -------------------------------------------------------------------------------
class StartRequest(Msg):
    action: Literal["start"] = "start"
    execution_id: ExecutionId
    agent_id: AgentId
    choice: StrategyChoice
    seed: int | None = None
    gate: GateMode = "improvement"


class StartResult(Msg):
    run_id: str
    resumed: bool
    phase: Literal["evolve", "finalize", "skip"] = Field(
        description="skip: another live execution holds the run's lease (see reason)"
    )
    generation: int
    reason: str | None = None


class RunRef(Msg):
    execution_id: ExecutionId
    run_id: RunId


class AskRequest(RunRef):
    action: Literal["ask"] = "ask"


class AskResult(Msg):
    run_id: str
    generation: int
    shards: list[Shard]


class TellRequest(RunRef):
    action: Literal["tell"] = "tell"
    generation: int | None = Field(
        default=None,
        ge=0,
        description="the generation asked; a retry after it was told returns the same result",
    )


class TellResult(Msg):
    run_id: str
    generation: int
    best_fitness: float | None


class ProposeRequest(RunRef):
    action: Literal["propose"] = "propose"


class ProposeResult(Msg):
    run_id: str
    candidate_version: int
    incumbent_version: int | None


class HandoffRequest(RunRef):
    action: Literal["handoff"] = "handoff"


class CanaryInput(Msg):
    """The canary-rollout execution's input (see StartExperimentRequest)."""

    agent_id: AgentId
    run_id: RunId
    candidate_version: Version
    incumbent_version: Version
    config: ExperimentConfig


class HandoffResult(Msg):
    experiment_id: ExperimentIdField = Field(description="also the canary execution's name")
    canary: CanaryInput


class CanaryStartedRequest(RunRef):
    action: Literal["canary_started"] = "canary_started"
    experiment_id: ExperimentIdField


class FinishRequest(RunRef):
    action: Literal["finish"] = "finish"
    reason: Text


MAX_ERROR_JSON = 40_000  # Step Functions: an error name <= 256 characters, a cause <= 32,768


class FailRequest(Msg):
    action: Literal["fail"] = "fail"
    execution_id: ExecutionId
    run_id: RunId | None = None
    error: dict[str, object] = Field(
        default={}, max_length=16, description="what Catch caught: {Error, Cause}"
    )

    @field_validator("error")
    @classmethod
    def _small(cls, error: dict[str, object]) -> dict[str, object]:
        try:
            size = len(json.dumps(error, allow_nan=False, default=str))
        except (ValueError, RecursionError) as exc:  # NaN, infinity, nesting too deep
            raise ValueError(f"not writable as JSON ({exc})") from exc
        if size > MAX_ERROR_JSON:
            raise ValueError(f"{size} characters of JSON, over {MAX_ERROR_JSON}")
        return error


class RunOutcome(Msg):
    run_id: str | None
    status: str
    decision: str


# -- layer 8 -------------------------------------------------------------------------------
class PlaceRequest(RunRef):
    action: Literal["place"] = "place"


class PlaceResult(Msg):
    placement: Literal["lambda", "batch"]
    detail: str
    estimated_usd: float


# -- live jobs -----------------------------------------------------------------------------
class JobRequest(Msg):
    """One live job (`POST /agents/{id}/jobs`): routed by the alias, sticky by `job_id`."""

    action: Literal["job"] = "job"
    agent_id: AgentId
    job_id: Name
    observation: list[float] | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="the client's own input, where the suite takes one (absent: live data)",
    )


class JobResult(Msg):
    agent_id: str
    job_id: str
    genome_version: int
    outcome: Literal["recorded", "awaiting-label", "failed"] = Field(
        description="recorded: its KPI is known (at once, or since its label arrived)"
    )
    output: float | None = Field(description="the answer served (None: the job failed)")
    score: float | None = Field(description="its KPI score, when known")
    reason: str | None = None
    latency_ms: float
    fuel: int
    experiment_id: str | None = Field(description="the experiment whose alias routed it")
    step: int | None
    at: datetime


class JobLabel(Msg):
    """The true class of a classified live job, joined to its prediction by job id."""

    agent_id: AgentId
    job_id: Name
    label: Literal[0, 1]


class LabelRequest(Msg):
    """KPI records and labels of live jobs, ingested as one batch (records first)."""

    action: Literal["label"] = "label"
    records: list[KpiRecord] = Field(default=[], max_length=1000)
    labels: list[JobLabel] = Field(default=[], max_length=1000)
