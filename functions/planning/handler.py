"""Layer 2 — planning."""

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from chimera.runtime import handle
from chimera.services import planning
from chimera.services.contracts import PlanRequest

logger = Logger(service="chimera-planning")
ROUTES = {"plan": (PlanRequest, planning.plan)}


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return handle(event, ROUTES)
