"""Layer 8's Lambda price follows the evaluation function's memory and architecture."""

from __future__ import annotations

import pytest
from chimera.domain.errors import ValidationFailedError
from chimera.domain.prices import PRICE_TABLE, estimate, lambda_placement


def _lambda(estimates):
    return next(e for e in estimates if e.placement == "lambda")


def test_list_prices_per_gb_second_and_request():
    # 1,024 MB for 1 s is one GB-second; one evaluation is one request.
    x86 = _lambda(estimate(1, 1.0, 3600, lambda_memory_mb=1024, lambda_architecture="x86_64"))
    arm = _lambda(estimate(1, 1.0, 3600, lambda_memory_mb=1024, lambda_architecture="arm64"))
    startup = 0.5
    request = 0.20 / 1_000_000
    # 1,024 MB is 1024/1769 of a vCPU: the evaluation takes 1769/1024 s.
    seconds = startup + 1769 / 1024
    assert x86.seconds == pytest.approx(seconds)
    assert x86.usd == pytest.approx(seconds * 0.0000166667 + request)
    assert arm.usd == pytest.approx(seconds * 0.0000133334 + request)


def test_memory_scales_the_price_and_full_vcpu_caps_the_speed():
    small = _lambda(estimate(1000, 0.1, 3600, lambda_memory_mb=512))
    full = _lambda(estimate(1000, 0.1, 3600, lambda_memory_mb=1769))
    big = _lambda(estimate(1000, 0.1, 3600, lambda_memory_mb=3538))
    assert full.seconds == pytest.approx(0.5 + 100)
    assert small.seconds == pytest.approx(0.5 + 100 * 1769 / 512)  # a fraction of a vCPU
    assert big.seconds == pytest.approx(full.seconds)  # more memory is not faster
    assert big.usd == pytest.approx(
        (full.usd - 1000 * 0.2e-6) * 2 + 1000 * 0.2e-6
    )  # twice the GB-seconds, the same requests


def test_defaults_are_the_execution_functions_size_and_positional_args_unchanged():
    assert estimate(100, 0.05, 900) == estimate(100, 0.05, 900, 1769, "x86_64")
    assert _lambda(estimate(100, 0.05, 900)).usd == pytest.approx(
        (0.5 + 5.0) * 0.0000166667 * 1769 / 1024 + 100 * 0.2e-6
    )
    assert PRICE_TABLE[0] == lambda_placement(1769, "x86_64")


def test_requests_are_charged_per_invocation():
    one = _lambda(estimate(640, 0.01, 3600))
    shards = _lambda(estimate(640, 0.01, 3600, evaluations_per_request=64))
    assert one.usd - shards.usd == pytest.approx((640 - 10) * 0.2e-6)


def test_sorted_by_deadline_then_cost():
    options = estimate(10_000, 1.0, 600)
    met = [o.meets_deadline for o in options]
    assert met == sorted(met, reverse=True)
    cheapest = [o.usd for o in options if o.meets_deadline]
    assert cheapest == sorted(cheapest)


@pytest.mark.parametrize(
    ("memory", "architecture", "field"),
    [
        (64, "x86_64", "lambda_memory_mb"),
        (20_000, "arm64", "lambda_memory_mb"),
        (1769, "mips", "lambda_architecture"),
    ],
)
def test_rejects_sizes_lambda_does_not_offer(memory, architecture, field):
    with pytest.raises(ValidationFailedError) as err:
        estimate(1, 1.0, 60, lambda_memory_mb=memory, lambda_architecture=architecture)
    assert err.value.field == field
