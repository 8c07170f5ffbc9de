"""Layer 8's dated price table, cost model and choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chimera.domain.errors import ValidationFailedError
from chimera.domain.prices import (
    OUTER_PER_SEGMENT,
    PRICES_FILE,
    FlowShape,
    Work,
    choose,
    flow_shape,
    load_prices,
    micro_usd,
    parse_prices,
    segment_cost,
)
from chimera.services.resources import SEGMENT_SHAPES

ROOT = Path(__file__).resolve().parents[2]
SEGMENT = json.loads((ROOT / "statemachines" / "evolution-segment.asl.json").read_text())
RUN = json.loads((ROOT / "statemachines" / "evolution-run.asl.json").read_text())
TABLE = load_prices()


def test_the_shapes_layer_8_prices_are_the_deployed_segment_machines():
    # Counted from the files: if evolution-segment changes, SEGMENT_SHAPES must follow.
    for (route, distributed), shape in SEGMENT_SHAPES.items():
        if route == "lambda":
            assert flow_shape(SEGMENT, route, distributed) == shape, (route, distributed)
        else:  # one job for the whole segment, routed to by evolution-run
            assert shape == FlowShape(segment_jobs=1)
    states = RUN["States"]
    routes = {c["StringEquals"]: c["Next"] for c in states["Route"]["Choices"]}
    assert states[states["Route"]["Default"]]["Resource"].startswith(
        "arn:aws:states:::states:startExecution.sync"
    )
    assert states[routes["batch"]]["Resource"] == "arn:aws:states:::batch:submitJob.sync"
    assert (
        states[routes["sagemaker"]]["Resource"]
        == "arn:aws:states:::sagemaker:createTrainingJob.sync"
    )
    assert set(routes) | {"lambda"} == {route for route, _ in SEGMENT_SHAPES}


def test_evolution_runs_loop_per_segment_is_the_outer_shape():
    # Walk evolution-run's segment loop on the Lambda route: NextSegment back to itself.
    states, name, walked = RUN["States"], "NextSegment", []
    while name not in walked:
        walked.append(name)
        state = states[name]
        if state["Type"] == "Choice":
            loop = [c["Next"] for c in state["Choices"] if c["Next"] == "NextSegment"]
            name = loop[0] if loop else state["Default"]
        else:
            name = state["Next"]
    lambdas = [n for n in walked if states[n].get("Resource", "").endswith("FunctionArn}")]
    assert FlowShape(per_segment=len(walked), segment_lambdas=len(lambdas)) == OUTER_PER_SEGMENT
    assert lambdas == ["Place", "CommitCost", "Progress"]


def test_inline_map_transitions_are_a_constant_plus_one_per_shard():
    shape = SEGMENT_SHAPES[("lambda", False)]
    one = segment_cost(
        TABLE,
        "lambda",
        Work(generations=1, population=64, seconds_per_evaluation=0.01, shard_size=64),
        shape,
    )
    many = segment_cost(
        TABLE,
        "lambda",
        Work(generations=1, population=64 * 16, seconds_per_evaluation=0.01, shard_size=64),
        shape,
    )
    assert many.transitions - one.transitions == 15 * shape.per_item
    # 200 generations of 16 shards: thousands of transitions, dollars of orchestration.
    run = segment_cost(
        TABLE,
        "lambda",
        Work(generations=200, population=1024, seconds_per_evaluation=0.002, shard_size=64),
        shape,
    )
    assert run.transitions == 200 * (7 + 16) + 1 + 7
    assert run.transitions_usd == pytest.approx(run.transitions * 0.000025)
    assert run.transitions_usd > run.compute_usd  # what the old layer 8 left out dominates


def test_lambda_compute_is_gb_seconds_at_the_architecture_plus_requests():
    shape = SEGMENT_SHAPES[("lambda", False)]
    work = Work(generations=1, population=100, seconds_per_evaluation=1.0, shard_size=100)
    x86 = segment_cost(TABLE, "lambda", work, shape, memory_mb=1024, architecture="x86_64")
    arm = segment_cost(TABLE, "lambda", work, shape, memory_mb=1024, architecture="arm64")
    lam = TABLE.lambda_
    # 1,024 MB is 1024/1769 of a vCPU: 100 one-second evaluations take 100 x 1769/1024 s.
    seconds = 100 * 1769 / 1024 + lam.invocation_overhead_s + 7 * lam.orchestration_task_s
    assert x86.compute_usd == pytest.approx(seconds * 0.0000166667)
    assert arm.compute_usd == pytest.approx(seconds * 0.0000133334)
    assert x86.requests_usd == pytest.approx((4 + 1 + 3) * 0.2e-6)


def test_instances_pay_start_up_per_job_and_expected_spot_rework():
    per_segment = SEGMENT_SHAPES[("batch", False)]
    batch = FlowShape(generation_jobs=1)  # what the old one-job-per-generation path cost
    work = Work(generations=50, population=1000, seconds_per_evaluation=0.01, shard_size=64)
    each = segment_cost(TABLE, "batch-gpu-spot", work, batch)
    once = segment_cost(TABLE, "batch-gpu-spot", work, per_segment)
    assert (each.jobs, once.jobs) == (50, 1)
    spot = TABLE.instance("batch-gpu-spot")
    assert each.compute_usd - once.compute_usd == pytest.approx(
        49 * spot.startup_s * 0.45 / 3600, rel=1e-3
    )
    assert once.rework_usd > 0
    assert segment_cost(TABLE, "batch-gpu-ondemand", work, per_segment).rework_usd == 0
    # The GPU speed-up is the table's parameter (1.0 until measured), not an invented 25x.
    assert TABLE.gpu_speedup.value == 1.0 and once.speedup == 1.0
    faster = segment_cost(TABLE, "batch-gpu-spot", work, per_segment, gpu_speedup=10)
    assert faster.compute_usd < once.compute_usd


def test_the_choice_is_the_cheapest_that_keeps_the_deadline():
    shape = SEGMENT_SHAPES[("lambda", False)]
    work = Work(generations=50, population=1000, seconds_per_evaluation=0.01, shard_size=64)
    options = [
        segment_cost(TABLE, p, work, shape if p == "lambda" else SEGMENT_SHAPES[("batch", False)])
        for p in ("lambda", "batch-gpu-spot")
    ]
    cheap = min(options, key=lambda o: o.usd)
    assert choose(options, 1e9).chosen.placement == cheap.placement
    fast = min(options, key=lambda o: o.seconds)
    tight = choose(options, fast.seconds + 1)
    assert tight.chosen.placement == fast.placement and tight.chosen.meets_deadline
    late = choose(options, 1.0)
    assert late.chosen.placement == fast.placement and not late.chosen.meets_deadline
    assert "none meets" in late.reason


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("lambda", "usd_per_request"), -1, "prices.lambda.usd_per_request"),
        (
            ("step_functions", "usd_per_standard_transition"),
            "cheap",
            "prices.step_functions.usd_per_standard_transition",
        ),
        (("dated",), "November", "prices.dated"),
        (("gpu_speedup", "value"), 0, "prices.gpu_speedup.value"),
        (("instances", 0, "startup_s"), -5, "prices.instances.0.startup_s"),
    ],
)
def test_a_bad_table_is_refused_naming_the_field(path, value, field):
    data = json.loads(PRICES_FILE.read_text())
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ValidationFailedError) as err:
        parse_prices(data)
    assert err.value.field == field


@pytest.mark.parametrize(
    ("memory", "architecture", "field"),
    [(64, "x86_64", "lambda_memory_mb"), (1769, "mips", "lambda_architecture")],
)
def test_rejects_sizes_lambda_does_not_offer(memory, architecture, field):
    work = Work(generations=1, population=2, seconds_per_evaluation=1.0, shard_size=1)
    with pytest.raises(ValidationFailedError) as err:
        segment_cost(
            TABLE,
            "lambda",
            work,
            SEGMENT_SHAPES[("lambda", False)],
            memory_mb=memory,
            architecture=architecture,
        )
    assert err.value.field == field


def test_micro_dollars_round_up_and_refuse_nonsense():
    assert micro_usd(0.0000011) == 2 and micro_usd(1.0) == 1_000_000 and micro_usd(0) == 0
    with pytest.raises(ValidationFailedError):
        micro_usd(float("nan"))
