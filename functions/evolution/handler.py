"""Layer 7 — evolution."""

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from chimera.runtime import handle
from chimera.services import evolution
from chimera.services.contracts import (
    AskRequest,
    CanaryStartedRequest,
    FailRequest,
    FinishRequest,
    HandoffRequest,
    ProposeRequest,
    StartRequest,
    TellRequest,
)

logger = Logger(service="chimera-evolution")
ROUTES = {
    "start": (StartRequest, evolution.start),
    "ask": (AskRequest, evolution.ask),
    "tell": (TellRequest, evolution.tell),
    "propose": (ProposeRequest, evolution.propose),
    "handoff": (HandoffRequest, evolution.handoff),
    "canary_started": (CanaryStartedRequest, evolution.canary_started),
    "finish": (FinishRequest, evolution.finish),
    "fail": (FailRequest, evolution.fail),
}


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return handle(event, ROUTES)
