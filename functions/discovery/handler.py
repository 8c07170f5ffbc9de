"""Layer 1 — discovery."""

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from chimera.runtime import handle
from chimera.services import discovery
from chimera.services.contracts import DiscoverRequest

logger = Logger(service="chimera-discovery")
ROUTES = {"discover": (DiscoverRequest, discovery.discover)}


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return handle(event, ROUTES)
