"""Layer 5 — refinement: state-machine actions (reports, the canary's experiment steps), KPI
events from SQS (partial batches), and CloudWatch guardrail alarms (the rollback path).

An SQS batch is parsed message by message (KpiMessage: the EventBridge envelope of a
KpiRecorded event), then stored together (`refinement.ingest_messages`); a message that does
not parse or is refused fails alone, in `batchItemFailures`. Then the guardrails of every
running experiment the stored records belong to are read from its arm rollups and published
as CloudWatch metrics (EMF lines on stdout, `chimera.domain.guardrails`). Local mode ingests
KPIs through its bus, not this path, so `chimera run` prints none.

A "CloudWatch Alarm State Change" of a guardrail alarm (EventBridge, source aws.cloudwatch)
re-checks every running experiment and rolls back those that breach
(`experiments.stop_for_alarm`).

The predictor-training state machine's Lambda steps (`chimera.services.predictors`): export an
agent's history for the SageMaker training job, install the model it trained, record a failure.
"""

from collections.abc import Sequence

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.typing import LambdaContext
from chimera.batch import CollectingBatchProcessor
from chimera.domain.guardrails import NAMESPACE, SERVICE, GuardrailReading
from chimera.runtime import deps, handle, parse
from chimera.services import experiments, predictors, refinement
from chimera.services.alarm_contracts import ALARM_SOURCE, AlarmStateChange
from chimera.services.contracts import (
    AbortRequest,
    AnalyzeRequest,
    ConcludeRequest,
    IngestRequest,
    KpiMessage,
    ReportRequest,
    ShiftRequest,
    StartExperimentRequest,
)
from chimera.services.predictor_contracts import (
    ExportHistoryRequest,
    InstallPredictorRequest,
    RecordTrainingFailureRequest,
)

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
ROUTES = {
    "ingest": (IngestRequest, refinement.ingest),
    "report": (ReportRequest, refinement.report),
    # the canary-rollout state machine
    "start_experiment": (StartExperimentRequest, experiments.start_experiment),
    "analyze": (AnalyzeRequest, experiments.analyze),
    "shift": (ShiftRequest, experiments.shift),
    "conclude": (ConcludeRequest, experiments.conclude),
    "abort": (AbortRequest, experiments.abort),
    # the predictor-training state machine
    "export_history": (ExportHistoryRequest, predictors.export_history),
    "install_predictor": (InstallPredictorRequest, predictors.install_predictor),
    "record_training_failure": (RecordTrainingFailureRequest, predictors.record_training_failure),
}


def _ingest(messages: Sequence[KpiMessage]) -> list[Exception | None]:
    """Store the batch, then publish the guardrails of the experiments its records are in."""
    ports = deps()
    outcomes = refinement.ingest_messages(messages, ports)
    touched = {
        m.body.detail.record.experiment_id
        for m, error in zip(messages, outcomes, strict=True)
        if error is None and m.body.detail.record.experiment_id is not None
    }
    if touched:
        try:
            _publish(experiments.guardrail_readings(ports, touched))
        except Exception:  # noqa: BLE001 - the batch is stored; the canary's Analyze still judges
            logger.exception(
                "guardrail metrics not published", extra={"experiments": sorted(touched)}
            )
    return outcomes


def _publish(readings: list[GuardrailReading]) -> None:
    """One EMF line per experiment: its guardrail values, with its ids as metadata."""
    for reading in readings:
        values = reading.metrics()
        if not values:
            continue
        for name, value in values.items():
            metrics.add_metric(name=name, unit=MetricUnit.NoUnit, value=value)
        metrics.add_metadata(key="experiment_id", value=reading.experiment_id)
        metrics.add_metadata(key="agent_id", value=reading.agent_id)
        metrics.flush_metrics()
        metrics.clear_metrics()


processor = CollectingBatchProcessor(model=KpiMessage, flush=_ingest)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    if "Records" in event:
        return process_partial_response(event, processor.collect, processor, context)
    if event.get("source") == ALARM_SOURCE:
        return experiments.on_alarm(parse(AlarmStateChange, event), deps()).model_dump()
    return handle(event, ROUTES)
