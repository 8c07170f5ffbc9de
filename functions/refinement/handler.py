"""Layer 5 — refinement: state-machine actions, and KPI events from SQS (partial batches)."""

from functools import partial

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from chimera.runtime import deps, handle
from chimera.services import refinement
from chimera.services.contracts import IngestRequest, KpiMessage, ReportRequest

logger = Logger(service="chimera-refinement")
ROUTES = {
    "ingest": (IngestRequest, refinement.ingest),
    "report": (ReportRequest, refinement.report),
}
# Each SQS message body is the EventBridge envelope of a KpiRecorded event; the model parses it.
processor = BatchProcessor(event_type=EventType.SQS, model=KpiMessage)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    if "Records" in event:
        ingest = partial(refinement.ingest_message, deps=deps())
        return process_partial_response(event, ingest, processor, context)
    return handle(event, ROUTES)
