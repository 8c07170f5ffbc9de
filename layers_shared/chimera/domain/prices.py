"""Layer 8's price table and placement arithmetic (pure)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Placement(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    usd_per_second: float = Field(ge=0)
    startup_s: float = Field(ge=0)
    speedup: float = Field(gt=0, description="evaluation throughput relative to one Lambda")


# us-east-1 list prices, 2026-11: Lambda arm64 at 1,769 MB; g5.xlarge spot/on-demand;
# SageMaker ml.g5.xlarge managed spot.
PRICE_TABLE: tuple[Placement, ...] = (
    Placement(name="lambda", usd_per_second=0.0000133334 * 1.769, startup_s=0.5, speedup=1.0),
    Placement(name="batch-gpu-spot", usd_per_second=0.45 / 3600, startup_s=240, speedup=25.0),
    Placement(name="batch-gpu-ondemand", usd_per_second=1.006 / 3600, startup_s=180, speedup=25.0),
    Placement(name="sagemaker-spot", usd_per_second=0.55 / 3600, startup_s=300, speedup=25.0),
)


class Estimate(BaseModel):
    model_config = ConfigDict(frozen=True)
    placement: str
    seconds: float
    usd: float
    meets_deadline: bool


def estimate(evaluations: int, seconds_per_evaluation: float, deadline_s: float) -> list[Estimate]:
    """Cost and time of the remaining work on every placement, cheapest first."""
    out = []
    for p in PRICE_TABLE:
        seconds = p.startup_s + evaluations * seconds_per_evaluation / p.speedup
        out.append(
            Estimate(
                placement=p.name,
                seconds=seconds,
                usd=seconds * p.usd_per_second,
                meets_deadline=seconds <= deadline_s,
            )
        )
    return sorted(out, key=lambda e: (not e.meets_deadline, e.usd))
