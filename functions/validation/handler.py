"""Layer 3 — validation and governance."""

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from chimera.runtime import handle
from chimera.services import validation
from chimera.services.contracts import GateRequest, ValidateRequest

logger = Logger(service="chimera-validation")
ROUTES = {
    "validate": (ValidateRequest, validation.validate),
    "gate": (GateRequest, validation.gate),
}


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return handle(event, ROUTES)
