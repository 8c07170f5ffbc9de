"""Layer 8's messages: reserve a segment's cost at placement, commit it after the segment."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from chimera.services.contracts import Msg, RunRef


class PlaceSegmentRequest(RunRef):
    """evolution-run's Place, before each segment: price it, choose, reserve its cost."""

    action: Literal["place"] = "place"
    last_generation: int | None = Field(
        default=None, ge=0, description="the segment's last generation (absent: the run's last)"
    )


class PlaceSegmentResult(Msg):
    placement: Literal["lambda", "batch", "sagemaker"]  # the routes evolution-run's Route takes
    detail: str
    estimated_usd: float
    reserved_usd: float
    entry_id: str
    degraded: bool = False


class CommitCostRequest(RunRef):
    """evolution-run's CommitCost, after each segment: the actual, the rest released."""

    action: Literal["commit_cost"] = "commit_cost"
    entry_id: str = Field(min_length=1, max_length=200)


class CommitCostResult(Msg):
    entry_id: str
    placement: str
    estimated_usd: float
    actual_usd: float
    generations: int
    thresholds_fired: list[float]
