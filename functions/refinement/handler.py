"""Layer 5 — refinement: state-machine actions, and KPI events from SQS (partial batches)."""

import json

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from chimera.domain.events import KpiRecorded
from chimera.runtime import deps, handle, parse
from chimera.services import refinement
from chimera.services.contracts import IngestRequest, ReportRequest

logger = Logger(service="chimera-refinement")
ROUTES = {
    "ingest": (IngestRequest, refinement.ingest),
    "report": (ReportRequest, refinement.report),
}
processor = BatchProcessor(event_type=EventType.SQS)


def ingest_record(record: SQSRecord) -> None:
    """One SQS message: an EventBridge envelope around a KpiRecorded event."""
    event = parse(KpiRecorded, json.loads(record.body)["detail"])
    refinement.ingest(IngestRequest(records=[event.record]), deps())


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    if "Records" in event:
        return process_partial_response(event, ingest_record, processor, context)
    return handle(event, ROUTES)
