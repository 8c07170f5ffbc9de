"""Layer 4 — execution."""

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from chimera.runtime import handle
from chimera.services import execution
from chimera.services.contracts import EvaluateShardRequest, HoldoutRequest, PredictRequest

logger = Logger(service="chimera-execution")
ROUTES = {
    "evaluate": (EvaluateShardRequest, execution.evaluate_shard),
    "holdout": (HoldoutRequest, execution.holdout),
    "predict": (PredictRequest, execution.predict),
}


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return handle(event, ROUTES)
