"""Layer 8 — resources and cost."""

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from chimera.runtime import Route, handle
from chimera.services import resources
from chimera.services.cost_contracts import (
    CommitCostRequest,
    CommitTrainingRequest,
    PlaceSegmentRequest,
    ReserveTrainingRequest,
)

logger = Logger(service="chimera-resources")
ROUTES: dict[str, Route] = {
    "place": (PlaceSegmentRequest, resources.place),
    "commit_cost": (CommitCostRequest, resources.commit_cost),
    "reserve_training": (ReserveTrainingRequest, resources.reserve_training),
    "commit_training": (CommitTrainingRequest, resources.commit_training),
}


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return handle(event, ROUTES)
