"""Layer 5 — refinement."""

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from chimera.runtime import handle
from chimera.services import refinement
from chimera.services.contracts import IngestRequest, ReportRequest

logger = Logger(service="chimera-refinement")
ROUTES = {
    "ingest": (IngestRequest, refinement.ingest),
    "report": (ReportRequest, refinement.report),
}


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return handle(event, ROUTES)
