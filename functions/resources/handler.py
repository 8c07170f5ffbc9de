"""Layer 8 — resources and cost."""

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from chimera.runtime import handle
from chimera.services import resources
from chimera.services.contracts import PlaceRequest

logger = Logger(service="chimera-resources")
ROUTES = {"place": (PlaceRequest, resources.place)}


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return handle(event, ROUTES)
