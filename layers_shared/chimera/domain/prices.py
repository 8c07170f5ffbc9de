"""Layer 8's price table and placement arithmetic (pure).

The Lambda placement is priced from the evaluation function's real memory and architecture
(CHIMERA_EVALUATOR_MEMORY_MB / CHIMERA_EVALUATOR_ARCHITECTURE, set by the CDK app from the
same constants that size the Execution function): duration at the architecture's GB-second
price plus the per-request charge. Lambda gives a function CPU in proportion to its memory,
one full vCPU at 1,769 MB; an evaluation is single-threaded, so below that size it runs
slower by the ratio (and above it, no faster).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from chimera.domain.errors import ValidationFailedError

Architecture = Literal["x86_64", "arm64"]

# us-east-1 list prices, 2026-11 (first pricing tier).
LAMBDA_USD_PER_GB_SECOND: dict[str, float] = {"x86_64": 0.0000166667, "arm64": 0.0000133334}
LAMBDA_USD_PER_REQUEST = 0.20 / 1_000_000
LAMBDA_FULL_VCPU_MB = 1769
LAMBDA_MEMORY_MB = (128, 10_240)  # the sizes Lambda accepts
LAMBDA_STARTUP_S = 0.5


class Placement(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    usd_per_second: float = Field(ge=0)
    startup_s: float = Field(ge=0)
    speedup: float = Field(gt=0, description="evaluation throughput relative to one Lambda")
    usd_per_request: float = Field(default=0.0, ge=0)


# The placements whose price does not depend on our configuration: g5.xlarge spot and
# on-demand on Batch; SageMaker ml.g5.xlarge managed spot. Speedups are against one Lambda
# with a full vCPU.
FIXED_PLACEMENTS: tuple[Placement, ...] = (
    Placement(name="batch-gpu-spot", usd_per_second=0.45 / 3600, startup_s=240, speedup=25.0),
    Placement(name="batch-gpu-ondemand", usd_per_second=1.006 / 3600, startup_s=180, speedup=25.0),
    Placement(name="sagemaker-spot", usd_per_second=0.55 / 3600, startup_s=300, speedup=25.0),
)


def lambda_placement(
    memory_mb: int = LAMBDA_FULL_VCPU_MB, architecture: str = "x86_64"
) -> Placement:
    """The Lambda placement for a function of `memory_mb` on `architecture`."""
    low, high = LAMBDA_MEMORY_MB
    if not low <= memory_mb <= high:
        raise ValidationFailedError("lambda_memory_mb", f"{memory_mb} is not in [{low}, {high}]")
    if architecture not in LAMBDA_USD_PER_GB_SECOND:
        raise ValidationFailedError(
            "lambda_architecture",
            f"{architecture!r} is not one of {sorted(LAMBDA_USD_PER_GB_SECOND)}",
        )
    return Placement(
        name="lambda",
        usd_per_second=LAMBDA_USD_PER_GB_SECOND[architecture] * memory_mb / 1024,
        startup_s=LAMBDA_STARTUP_S,
        speedup=min(1.0, memory_mb / LAMBDA_FULL_VCPU_MB),
        usd_per_request=LAMBDA_USD_PER_REQUEST,
    )


def price_table(
    lambda_memory_mb: int = LAMBDA_FULL_VCPU_MB, lambda_architecture: str = "x86_64"
) -> tuple[Placement, ...]:
    return (lambda_placement(lambda_memory_mb, lambda_architecture), *FIXED_PLACEMENTS)


# The default configuration's table (1,769 MB on x86_64, the Execution function's size).
PRICE_TABLE: tuple[Placement, ...] = price_table()


class Estimate(BaseModel):
    model_config = ConfigDict(frozen=True)
    placement: str
    seconds: float
    usd: float
    meets_deadline: bool


def estimate(
    evaluations: int,
    seconds_per_evaluation: float,
    deadline_s: float,
    lambda_memory_mb: int = LAMBDA_FULL_VCPU_MB,
    lambda_architecture: str = "x86_64",
    evaluations_per_request: int = 1,
) -> list[Estimate]:
    """Cost and time of the remaining work on every placement, cheapest first.

    `evaluations_per_request` is how many evaluations one Lambda invocation runs (a shard);
    the default, one, is the upper bound of the request charge.
    """
    if evaluations_per_request < 1:
        raise ValidationFailedError("evaluations_per_request", "must be at least 1")
    out = []
    for p in price_table(lambda_memory_mb, lambda_architecture):
        seconds = p.startup_s + evaluations * seconds_per_evaluation / p.speedup
        requests = -(-evaluations // evaluations_per_request)  # ceiling
        out.append(
            Estimate(
                placement=p.name,
                seconds=seconds,
                usd=seconds * p.usd_per_second + requests * p.usd_per_request,
                meets_deadline=seconds <= deadline_s,
            )
        )
    return sorted(out, key=lambda e: (not e.meets_deadline, e.usd))
