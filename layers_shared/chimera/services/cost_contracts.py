"""Layer 8's messages: reserve a segment's cost at placement, commit it after the segment; the
same for a predictor-training execution's training job."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from chimera.domain.models import AgentId
from chimera.services.contracts import ExecutionId, Msg, RunRef


class PlaceSegmentRequest(RunRef):
    """evolution-run's Place, before each segment: price it, choose, reserve its cost."""

    action: Literal["place"] = "place"
    last_generation: int | None = Field(
        default=None, ge=0, description="the segment's last generation (absent: the run's last)"
    )


class PlaceSegmentResult(Msg):
    placement: Literal["lambda", "batch", "sagemaker"]  # the routes evolution-run's Route takes
    detail: str
    estimated_usd: float
    reserved_usd: float
    entry_id: str
    degraded: bool = False


class CommitCostRequest(RunRef):
    """evolution-run's CommitCost, after each segment: the actual, the rest released."""

    action: Literal["commit_cost"] = "commit_cost"
    entry_id: str = Field(min_length=1, max_length=200)


class CommitCostResult(Msg):
    entry_id: str
    placement: str
    estimated_usd: float
    actual_usd: float
    generations: int
    thresholds_fired: list[float]


# -- predictor-training (statemachines/predictor-training.asl.json) ----------------------------
class ReserveTrainingRequest(Msg):
    """predictor-training's ReserveTraining, before its Train state: price the training job and
    reserve it against the period's budget (one ledger entry per execution)."""

    action: Literal["reserve_training"] = "reserve_training"
    execution_id: ExecutionId
    agent_id: AgentId
    rows: int = Field(ge=0, le=100_000_000, description="ExportHistory's exported rows")
    hyperparameters: dict[str, str] = Field(
        default={}, max_length=100, description="the job's (epochs is read from them)"
    )
    placement: str = Field(
        default="sagemaker-spot", min_length=1, max_length=64, description="the price table's"
    )
    instance_type: str = Field(
        min_length=1, max_length=64, description="Train's ResourceConfig.InstanceType"
    )
    max_runtime_s: int = Field(
        ge=1, le=28 * 86_400, description="Train's StoppingCondition.MaxRuntimeInSeconds"
    )
    max_wait_s: int = Field(
        ge=1, le=28 * 86_400, description="Train's StoppingCondition.MaxWaitTimeInSeconds"
    )


class ReserveTrainingResult(Msg):
    reserved: bool = Field(description="false: over the budget, no job may start")
    entry_id: str
    run_id: str = Field(description="the ledger's run id of the agent's trainings")
    estimated_usd: float
    reserved_usd: float
    reason: str


class CommitTrainingRequest(Msg):
    """predictor-training's CommitTraining (after Train) or SettleFailedTraining (its Catch):
    the job's measured billable time priced, the rest of the reservation released."""

    action: Literal["commit_training"] = "commit_training"
    execution_id: ExecutionId
    agent_id: AgentId
    entry_id: str = Field(min_length=1, max_length=200)
    job_name: str = Field(default="", max_length=63)
    billable_seconds: float | None = Field(
        default=None, ge=0, le=28 * 86_400, description="DescribeTrainingJob's, on success"
    )
    training_seconds: float | None = Field(default=None, ge=0, le=28 * 86_400)
    error: dict[str, Any] | None = Field(
        default=None,
        max_length=8,
        description="the Catch's error (Error, Cause: DescribeTrainingJob's JSON for a failed "
        "or stopped job)",
    )


class CommitTrainingResult(Msg):
    entry_id: str
    estimated_usd: float
    actual_usd: float
    billable_s: float | None
    measured: str = Field(description="where the actual came from")
    thresholds_fired: list[float]
