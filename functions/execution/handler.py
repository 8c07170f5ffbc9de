"""Layer 4 — execution."""

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from chimera.runtime import Route, handle
from chimera.services import execution
from chimera.services.contracts import (
    CollectShardsRequest,
    EvaluateShardRequest,
    HoldoutRequest,
    PredictRequest,
    StageShardsRequest,
)

logger = Logger(service="chimera-execution")
ROUTES: dict[str, Route] = {
    "evaluate": (EvaluateShardRequest, execution.evaluate_shard),
    "holdout": (HoldoutRequest, execution.holdout),
    "predict": (PredictRequest, execution.predict),
    "stage": (StageShardsRequest, execution.stage_shards),
    "collect": (CollectShardsRequest, execution.collect_shards),
}


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return handle(event, ROUTES)
