"""Layer 6 — meta-evolution."""

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from chimera.runtime import handle
from chimera.services import meta
from chimera.services.contracts import AdaptRequest, ChooseRequest

logger = Logger(service="chimera-meta_evolution")
ROUTES = {"choose": (ChooseRequest, meta.choose), "adapt": (AdaptRequest, meta.adapt)}


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return handle(event, ROUTES)
