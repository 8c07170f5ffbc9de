"""Layer 5 — refinement: state-machine actions (reports, the canary's experiment steps), and
KPI events from SQS (partial batches).

An SQS batch is parsed message by message (KpiMessage: the EventBridge envelope of a
KpiRecorded event), then stored together (`refinement.ingest_messages`); a message that does
not parse or is refused fails alone, in `batchItemFailures`.
"""

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.typing import LambdaContext
from chimera.batch import CollectingBatchProcessor
from chimera.runtime import deps, handle
from chimera.services import experiments, refinement
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

logger = Logger(service="chimera-refinement")
ROUTES = {
    "ingest": (IngestRequest, refinement.ingest),
    "report": (ReportRequest, refinement.report),
    # the canary-rollout state machine
    "start_experiment": (StartExperimentRequest, experiments.start_experiment),
    "analyze": (AnalyzeRequest, experiments.analyze),
    "shift": (ShiftRequest, experiments.shift),
    "conclude": (ConcludeRequest, experiments.conclude),
    "abort": (AbortRequest, experiments.abort),
}
processor = CollectingBatchProcessor(
    model=KpiMessage, flush=lambda messages: refinement.ingest_messages(messages, deps())
)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    if "Records" in event:
        return process_partial_response(event, processor.collect, processor, context)
    return handle(event, ROUTES)
