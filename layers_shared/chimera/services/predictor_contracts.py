"""Layer 5's messages for the predictor-training state machine (statemachines/
predictor-training.asl.json): ExportHistory → Train (a SageMaker training job) →
InstallPredictor, and RecordFailure on the way to the machine's Fail state.

Payloads carry ids, S3 URIs and small settings only; the history and the model travel through
the artifact bucket.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from chimera.domain.models import AgentId
from chimera.services.contracts import ExecutionId, Msg

MIN_TRAINING_ROWS = 10  # what the trainer needs to train and hold some rows out
DEFAULT_MIN_ROWS = 50
DEFAULT_MIN_R2 = 0.3
# SageMaker's HyperParameters: string to string, at most 100 (one is `job`).
HyperName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
HyperValue = Annotated[str, Field(max_length=2500)]


class PredictorTrainingInput(Msg):
    """What an execution of predictor-training starts with (the CLI, or the EventBridge rule on
    EvolutionRunCompleted, which gives the agent only)."""

    agent_id: AgentId
    hyperparameters: dict[HyperName, HyperValue] = Field(
        default={},
        max_length=99,
        description="the trainer's (gpu_jobs/predictor/train.py), as strings; `job` is set",
    )
    min_rows: int = Field(
        default=DEFAULT_MIN_ROWS,
        ge=MIN_TRAINING_ROWS,
        le=100_000_000,
        description="evaluated candidates the history must hold, else training is refused",
    )
    min_r2: float = Field(
        default=DEFAULT_MIN_R2,
        ge=-1.0,
        le=1.0,
        description="held-out R² of fitness below which a trained model is not installed",
    )


class ExportHistoryRequest(Msg):
    action: Literal["export_history"] = "export_history"
    execution_id: ExecutionId
    input: PredictorTrainingInput


class ExportHistoryResult(Msg):
    """Where the Train state finds its data and puts its output; or why there is nothing to
    train (`exported` false: the machine ends in NotEnoughHistory)."""

    agent_id: str
    exported: bool
    rows: int
    runs: int
    reason: str
    min_r2: float
    training_data: str | None = Field(default=None, description="the channel's S3 prefix")
    output_path: str | None = Field(default=None, description="OutputDataConfig.S3OutputPath")
    checkpoint_uri: str | None = Field(default=None, description="CheckpointConfig.S3Uri")
    hyperparameters: dict[str, str] = {}


class InstallPredictorRequest(Msg):
    action: Literal["install_predictor"] = "install_predictor"
    execution_id: ExecutionId
    agent_id: AgentId
    model_artifacts: str = Field(
        min_length=6, max_length=1024, description="DescribeTrainingJob's S3ModelArtifacts"
    )
    training_job: str = Field(default="", max_length=63)
    min_r2: float = Field(default=DEFAULT_MIN_R2, ge=-1.0, le=1.0)


class InstallPredictorResult(Msg):
    agent_id: str
    installed: bool
    reason: str
    key: str
    r2: float
    within_10pct: float
    n_train: int
    n_test: int
    split: str
    replayed: bool = Field(
        default=False, description="this execution's install was decided before (a retry)"
    )


class RecordTrainingFailureRequest(Msg):
    """The Catch's state as it stands (`state.$: $`): the execution's input with `error`
    (Error and Cause) added, whatever else the failed step left there."""

    action: Literal["record_training_failure"] = "record_training_failure"
    execution_id: ExecutionId
    state: dict[str, Any] = Field(max_length=32)


class RecordTrainingFailureResult(Msg):
    agent_id: str
    error: str
    reason: str
