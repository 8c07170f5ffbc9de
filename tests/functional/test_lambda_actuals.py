"""Layer 8's actual cost of a Lambda segment is measured, not counted: each shard's
evaluation is timed where it runs (evaluate_shard, on a monotonic clock, rounded up to the
millisecond as Lambda bills an invoke) and stored with the shard's fitness; tell sums the
generation's shards into its fitness point; CommitCost prices the evaluator's GB-seconds from
those seconds, plus the counted requests, transitions, DynamoDB and S3 requests.

* A real evolution-run on the Lambda placement (the deployed ASL in the local executor, the
  real handlers): every committed entry's actual is the price table applied to the stored
  shard seconds and the counts, computed here from the table itself.
* An evaluate-shard task run twice (a retry after a lost answer) leaves one record: its
  seconds count once.
* Generations told from records of the first layout (no seconds) fall back to the suite's
  figure, and the entry says so ("partial", "none"); with nothing measured the actual is the
  estimate's count.
* On the Distributed Map the child executions store their shards' seconds too; a shard
  recorded as failed past its retries has none, and its evaluations are counted.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from chimera import runtime
from chimera.adapters.kv import Put
from chimera.domain.budget import LedgerEntry
from chimera.domain.errors import UnavailableError
from chimera.domain.prices import (
    OUTER_PER_SEGMENT,
    RRU_PER_GENERATION,
    RRU_PER_SHARD,
    WRU_PER_GENERATION,
    WRU_PER_SHARD,
    load_prices,
    micro_usd,
)
from chimera.domain.suites import get_suite
from chimera.services.resources import SEGMENT_SHAPES
from live_agents import start_live_cartpole

from chimera_local.asl import ExecutionFailedError
from chimera_local.workflows import function_arn, handler_for, local_executor, state_machine_arn

AGENT = "cartpole-linear"  # population 24
RUN = "cycle-1.cartpole-linear"
EX = {"execution_id": "cycle-1", "run_id": RUN}


@pytest.fixture
def lambda_only(home: Path, only_cartpole: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The Lambda placement, 8 candidates a shard (3 shards a generation, inline), and an
    evaluator of 1,024 MB on arm64 (priced below a full vCPU)."""
    monkeypatch.setenv("CHIMERA_PLACEMENT", "lambda")
    monkeypatch.setenv("CHIMERA_SHARD_SIZE", "8")
    monkeypatch.setenv("CHIMERA_EVALUATOR_MEMORY_MB", "1024")
    monkeypatch.setenv("CHIMERA_EVALUATOR_ARCHITECTURE", "arm64")
    runtime.deps.cache_clear()
    return home


def evolve(execution_id: str, max_generations: int, wrap: Any = None) -> Any:
    """evolution-run with the real handlers, the run capped at `max_generations` (layer 6's
    choice changed), two generations a segment; the execution function wrapped by `wrap`."""
    handler_for("discovery")({"action": "discover", "execution_id": execution_id})
    validated = handler_for("validation")(
        {"action": "validate", "execution_id": execution_id, "agent_id": AGENT}
    )
    assert validated["ok"], validated
    executor = local_executor()
    meta = function_arn("meta_evolution")
    choose = executor.functions[meta]

    def fewer(event: dict[str, Any]) -> Any:
        out = choose(event)
        if event["action"] == "choose":
            out["max_generations"] = max_generations
        return out

    executor.functions[meta] = fewer
    if wrap is not None:
        execution = function_arn("execution")
        executor.functions[execution] = wrap(executor.functions[execution])
    event = {"execution_id": execution_id, "agent_id": AGENT, "segment_generations": 2}
    try:
        return executor.start(state_machine_arn("evolution-run"), event, f"{execution_id}-run")
    except ExecutionFailedError as exc:
        return exc


def expected_usd(entry: LedgerEntry) -> tuple[float, float, int]:
    """The entry's actual from the dated price table, what the store holds and the segment
    machine's shape: (usd, measured evaluator seconds, evaluations measured). Each shard is
    one evaluator invoke: billed its stored seconds where it has them, else the suite's
    figure at this Lambda's speed plus the table's per-invoke overhead."""
    deps = runtime.deps()
    store, settings = deps.store, deps.settings
    table = load_prices()
    lam, sfn = table.lambda_, table.step_functions
    run = store.get_run(entry.run_id)
    spe = get_suite(run.suite).seconds_per_evaluation
    first, last = entry.detail["first_generation"], entry.detail["last_generation"]
    told = [
        p.generation for p in store.fitness_history(run.run_id) if first <= p.generation <= last
    ]
    shards = [s for g in told for s in store.get_shards(run.run_id, g)]
    g, items = len(told), len(shards)
    measured = [s for s in shards if s.seconds is not None]
    seconds = math.fsum(s.seconds or 0.0 for s in measured)
    counted = [s for s in shards if s.seconds is None]
    speed = min(1.0, settings.evaluator_memory_mb / lam.full_vcpu_mb)
    evaluator_s = seconds + sum(
        len(s.fitness) * spe / speed + lam.invocation_overhead_s for s in counted
    )
    distributed = items // max(1, g) > settings.distributed_map_threshold
    shape = SEGMENT_SHAPES[("lambda", distributed)].plus(OUTER_PER_SEGMENT)
    orchestration = shape.generation_lambdas * g + shape.segment_lambdas
    gb_s = (evaluator_s + orchestration * lam.orchestration_task_s) * (
        settings.evaluator_memory_mb / 1024
    )
    transitions = shape.per_generation * g + shape.per_segment + shape.per_item * items
    usd = (
        gb_s * lam.usd_per_gb_second[settings.evaluator_architecture]
        + (orchestration + items) * lam.usd_per_request
        + transitions * sfn.usd_per_standard_transition
        + (g * WRU_PER_GENERATION + items * WRU_PER_SHARD)
        * table.dynamodb.usd_per_write_request_unit
        + (g * RRU_PER_GENERATION + items * RRU_PER_SHARD)
        * table.dynamodb.usd_per_read_request_unit
        + items * table.s3.usd_per_get
    )
    return usd, seconds, sum(len(s.fitness) for s in measured)


def micro(usd: float) -> float:
    """An amount as the ledger commits it: whole micro-dollars, rounded up."""
    return micro_usd(usd) / 1_000_000


def test_a_lambda_run_is_charged_the_seconds_its_shards_measured(lambda_only):
    out = evolve("measured", max_generations=4)
    assert not isinstance(out, ExecutionFailedError), out
    store = runtime.deps().store
    (run,) = store.list_runs(AGENT)
    assert run.generation == 4
    for point in store.fitness_history(run.run_id):
        shards = store.get_shards(run.run_id, point.generation)
        assert len(shards) == 3 and all(s.seconds is not None and s.seconds > 0 for s in shards)
        assert all(s.seconds == math.ceil(s.seconds * 1000) / 1000 for s in shards)  # whole ms
        assert point.evaluation_seconds == pytest.approx(sum(s.seconds or 0 for s in shards))
        assert point.measured_evaluations == point.evaluations == 24
    entries = store.list_ledger(run_id=run.run_id)
    assert [e.detail["first_generation"] for e in entries] == [0, 2]
    for entry in entries:
        usd, seconds, evaluations = expected_usd(entry)
        assert entry.status == "committed" and entry.placement == "lambda"
        assert entry.detail["measured"] == "all"
        assert entry.detail["evaluator_s"] == pytest.approx(seconds)
        assert entry.detail["measured_evaluations"] == evaluations == 48
        assert entry.actual_usd == micro(usd)


def segment(last_generation: int, between: Any = None) -> dict[str, Any]:
    """One segment as evolution-run drives it, through the handlers: Place, each generation's
    ask, evaluate (then `between(generation, shards)`), tell; then CommitCost."""
    placed = handler_for("resources")({"action": "place", **EX, "last_generation": last_generation})
    while True:
        asked = handler_for("evolution")({"action": "ask", **EX})
        for shard in asked["shards"]:
            handler_for("execution")({"action": "evaluate", **shard})
        if between is not None:
            between(asked["generation"], asked["shards"])
        handler_for("evolution")({"action": "tell", **EX, "generation": asked["generation"]})
        if asked["generation"] >= last_generation:
            break
    return handler_for("resources")({"action": "commit_cost", **EX, "entry_id": placed["entry_id"]})


def test_an_evaluate_shard_task_run_twice_counts_its_seconds_once(lambda_only):
    start_live_cartpole("cycle-1")
    store = runtime.deps().store
    first_attempts: list[float] = []

    def retried(generation: int, shards: list[dict[str, Any]]) -> None:
        # The Map's task for shard 1 runs again (its answer was lost): one record remains.
        first_attempts.append(store.get_shards(RUN, generation)[1].seconds or 0.0)
        handler_for("execution")({"action": "evaluate", **shards[1]})

    committed = segment(1, between=retried)
    (entry,) = store.list_ledger(run_id=RUN)
    usd, seconds, evaluations = expected_usd(entry)
    for generation in (0, 1):
        shards = store.get_shards(RUN, generation)
        assert [s.shard for s in shards] == [0, 1, 2]  # one record per shard
        point = store.fitness_history(RUN)[generation]
        assert point.evaluation_seconds == pytest.approx(sum(s.seconds or 0 for s in shards))
    assert entry.detail["measured"] == "all" and evaluations == 48
    assert entry.detail["evaluator_s"] == pytest.approx(seconds)
    # Counting every attempt would have added the first ones (each 1 ms at least).
    assert min(first_attempts) >= 0.001
    assert committed["actual_usd"] == micro(usd)


def to_first_layout(generation: int, shards: list[dict[str, Any]]) -> None:
    """Rewrite the generation's shard records as the store kept them before shards were
    timed: the fitness object alone."""
    store = runtime.deps().store
    for shard in store.get_shards(RUN, generation):
        doc = json.dumps({str(k): v for k, v in shard.fitness.items()})
        store._write([Put(f"SHARD#{RUN}#{generation:06d}", f"{shard.shard:06d}", doc)])


def test_generations_told_from_old_records_fall_back_to_the_count_and_say_so(lambda_only):
    start_live_cartpole("cycle-1")
    store = runtime.deps().store
    # Segment 1: generation 0 measured, generation 1 from records of the first layout.
    segment(1, between=lambda g, shards: to_first_layout(g, shards) if g == 1 else None)
    history = store.fitness_history(RUN)
    assert history[0].evaluation_seconds is not None and history[0].measured_evaluations == 24
    assert history[1].evaluation_seconds is None and history[1].measured_evaluations is None
    (partial,) = store.list_ledger(run_id=RUN)
    usd, seconds, evaluations = expected_usd(partial)
    assert partial.detail["measured"] == "partial"
    assert partial.detail["measured_evaluations"] == evaluations == 24
    assert partial.detail["evaluations"] == 48
    assert partial.detail["evaluator_s"] == pytest.approx(seconds)
    assert partial.actual_usd == micro(usd)
    assert any("measured: partial" in d.summary for d in store.list_decisions("cycle-1"))

    # Segment 2: nothing measured. The actual is the count, the estimate's own arithmetic.
    segment(3, between=to_first_layout)
    none = store.list_ledger(run_id=RUN)[1]
    assert none.detail["measured"] == "none" and none.detail["evaluator_s"] is None
    assert none.actual_usd == micro(expected_usd(none)[0])
    assert none.actual_usd == micro(none.estimated_usd)


def test_the_distributed_maps_children_store_their_shards_seconds(home, only_cartpole, monkeypatch):
    monkeypatch.setenv("CHIMERA_PLACEMENT", "lambda")
    monkeypatch.setenv("CHIMERA_SHARD_SIZE", "2")  # 12 shards a generation
    monkeypatch.setenv("CHIMERA_DISTRIBUTED_MAP_THRESHOLD", "4")
    runtime.deps.cache_clear()

    def breaking(handler: Any) -> Any:
        def execution(event: dict[str, Any]) -> Any:  # shard 5 of generation 0 never succeeds
            if event["action"] == "evaluate" and (event["generation"], event["shard"]) == (0, 5):
                raise UnavailableError("shard (0, 5) cannot reach its sandbox host")
            return handler(event)

        return execution

    out = evolve("scale", max_generations=2, wrap=breaking)
    assert not isinstance(out, ExecutionFailedError), out
    store = runtime.deps().store
    (run,) = store.list_runs(AGENT)
    timed = {g: [s.shard for s in store.get_shards(run.run_id, g) if s.seconds] for g in (0, 1)}
    assert timed == {0: [s for s in range(12) if s != 5], 1: list(range(12))}
    history = store.fitness_history(run.run_id)
    assert [p.measured_evaluations for p in history] == [22, 24]
    (entry,) = store.list_ledger(run_id=run.run_id)
    usd, seconds, evaluations = expected_usd(entry)
    assert entry.detail["measured"] == "partial" and evaluations == 46
    assert entry.detail["evaluator_s"] == pytest.approx(seconds)
    assert entry.actual_usd == micro(usd)
