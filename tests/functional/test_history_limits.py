"""A long evolution run stays inside Step Functions' quotas: 25,000 history events per
execution, 256 KiB per payload.

The deployed files run with cheap in-process stand-ins for the layer handlers (what a
handler computes does not change which events an execution records; the real handlers run
in test_local_cycle and test_asl_differential). The local executor runs 2,000 generations
over 16 shards; moto's interpreter runs a shorter run of the same files (2,000 generations
there take about 14 minutes) and both engines must record the same events, execution by
execution, so the per-generation and per-segment counts measured locally are moto's too.

Events per generation in a segment: Ask 5 + StageShards 5 + FanOut 2 + EvaluateShards
(4 + 7 per shard) + Tell 5 + Adapt 5 + Continue 2 = 28 + 7 x shards (140 with 16 shards,
under the Distributed Map's threshold); a segment adds ExecutionStarted, SegmentDone 2 and
ExecutionSucceeded. Per segment, evolution-run adds FirstSegment/NextSegment 2, layer 8's
Place 5, Route 2, RunSegment 6, layer 8's CommitCost 5, layer 6's Progress 5 and
MoreGenerations 2. See ExecutionHistory for per-state counts.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from chimera.catalog import LAYERS
from moto_sfn import moto_step_functions

from chimera_local.asl import (
    HISTORY_EVENT_LIMIT,
    PAYLOAD_LIMIT_BYTES,
    AslExecutor,
    ExecutionFailedError,
)
from chimera_local.workflows import function_arn, local_executor, state_machine_arn

RUN = state_machine_arn("evolution-run")
DEFAULT_SEGMENT = 50  # the Pass default in evolution-run.asl.json


def per_generation(shards: int) -> int:
    return 28 + 7 * shards


class StandIns:
    """The layers' actions with their real output shapes and no work; one run at a time."""

    def __init__(self, generations: int, shards: int, shard_size: int = 16) -> None:
        self.generations, self.shards, self.shard_size = generations, shards, shard_size
        self.generation = 0
        self.failures: list[dict[str, Any]] = []
        self.bloat: dict[str, int] = {}  # action -> bytes of padding in its result
        self.broken_shard: tuple[int, int] | None = None  # (generation, shard) that raises
        self.canary: list[str] = []  # the canary-rollout's actions

    def dispatch(self, package: str):
        return self.handle

    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        action = event["action"]
        out = self._result(action, event)
        if action in self.bloat:
            out["padding"] = "x" * self.bloat[action]
        return out

    def _result(self, action: str, event: dict[str, Any]) -> dict[str, Any]:
        run_id = event.get("run_id")
        record = {"agent_id": "a", "genome_version": 2, "job_id": "j:holdout:1", "score": 1.0}
        match action:
            case "choose":
                return {
                    "strategy": "cmaes",
                    "population_size": self.shards * self.shard_size,
                    "max_generations": self.generations,
                    "target_fitness": None,
                    "reason": "stand-in",
                }
            case "start":
                run_id = f"{event['execution_id']}.{event['agent_id']}"
                return {"run_id": run_id, "resumed": False, "phase": "evolve", "generation": 0}
            case "place":
                entry = f"{run_id}:{self.generation:06d}:segment"
                return {"placement": "lambda", "detail": "stand-in", "estimated_usd": 0.01} | {
                    "reserved_usd": 0.02,
                    "entry_id": entry,
                }
            case "commit_cost":
                return {"entry_id": event["entry_id"], "placement": "lambda"} | {
                    "estimated_usd": 0.01,
                    "actual_usd": 0.01,
                    "generations": DEFAULT_SEGMENT,
                    "thresholds_fired": [],
                }
            case "ask":
                g, size = self.generation, self.shard_size
                shards = [
                    {"run_id": run_id, "generation": g, "shard": i, "start": i * size}
                    | {"stop": (i + 1) * size}
                    for i in range(self.shards)
                ]
                return {"run_id": run_id, "generation": g, "shards": shards}
            case "stage":  # the inline Map (the Distributed Map: test_distributed_map)
                return {"distributed": False, "shards": len(event["shards"])}
            case "evaluate":
                if (event["generation"], event["shard"]) == self.broken_shard:
                    raise RuntimeError("disk on fire")
                return {"shard": event["shard"], "evaluated": self.shard_size, "failed": None}
            case "tell":
                self.generation += 1
                return {"run_id": run_id, "generation": self.generation - 1, "best_fitness": 1.0}
            case "adapt":
                proceed = self.generation < self.generations
                return {"proceed": proceed, "reason": f"generation {self.generation}"}
            case "propose":
                return {"run_id": run_id, "candidate_version": 2, "incumbent_version": 1}
            case "holdout":
                return {
                    "candidate": record,
                    "incumbent": record,
                    "records": [record],
                    "difference": {"n": 100, "mean": 1.0, "m2": 4.0},
                }
            case "ingest":
                return {"received": 1, "new": 1}
            case "gate":
                return {"approved": True, "reason": "stand-in", "p_value": 0.001}
            case "handoff":
                canary = {"agent_id": "a", "run_id": run_id, "candidate_version": 2}
                canary |= {"incumbent_version": 1, "config": {}}
                return {"experiment_id": "a-v2-0123456789ab", "canary": canary}
            case "canary_started" | "finish":
                return {"run_id": run_id, "status": "succeeded", "decision": action}
            case "start_experiment" | "analyze":  # the canary, started without waiting
                self.canary.append(action)
                step = {"experiment_id": "a-v2-0123456789ab", "step": 0, "bake": 0}
                decision = "bake" if action == "start_experiment" else "promote"
                return step | {"bake_s": 1, "weight": 1.0, "decision": decision, "reason": "-"}
            case "conclude":
                self.canary.append(action)
                return {"experiment_id": "a-v2-0123456789ab", "status": "concluded"} | {
                    "verdict": "promoted",
                    "reason": "stand-in",
                }
            case "fail":
                self.failures.append(event)
                return {"run_id": run_id, "status": "failed", "decision": "failed"}
        raise ValueError(action)


def local_run(stand_ins: StandIns, **input_: Any) -> tuple[AslExecutor, Any | ExecutionFailedError]:
    executor = local_executor()
    executor.functions = {function_arn(pkg): stand_ins.dispatch(pkg) for _, pkg, _ in LAYERS}
    executor.sleep = lambda seconds: None  # retries wait on a simulated clock
    try:
        out = executor.start(RUN, {"execution_id": "cycle-1", "agent_id": "a", **input_}, "run")
    except ExecutionFailedError as exc:
        return executor, exc
    return executor, out


def segment_index(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


def _by_execution(executor: AslExecutor) -> dict[Any, list[str]]:
    """Each execution's events: evolution-run's, and each segment's by its index (the canary
    the run starts without waiting for is left out: it runs on its own)."""
    return {
        ("run" if h.machine == "evolution-run" else segment_index(h.name)): h.events
        for h in executor.executions.values()
        if h.machine != "canary-rollout"
    }


def test_2000_generations_over_16_shards_stay_inside_every_quota():
    generations, shards = 2000, 16
    executor, out = local_run(StandIns(generations, shards))
    assert out["outcome"]["decision"] == "canary_started"
    outer = executor.history("run")
    segments = [h for h in executor.executions.values() if h.machine == "evolution-segment"]
    assert len(segments) == generations // DEFAULT_SEGMENT == 40
    assert sorted(segment_index(s.name) for s in segments) == list(range(40))
    assert all(len(s.name) <= 80 for s in segments)
    per_segment = DEFAULT_SEGMENT * per_generation(shards) + 4
    assert [len(s.events) for s in segments] == [per_segment] * 40 == [7004] * 40
    # outer: 21 to the first segment (with the default gate and segment size Passes) + 27 per
    # segment (FirstSegment/NextSegment 2, Place 5, Route 2, RunSegment 6, CommitCost 5,
    # Progress 5, MoreGenerations 2), 2 less for the last (no NextSegment) + 42 to finish
    # (propose, hold-out, ingest, gate 5 each, Approved 2, hand-off, start the canary, close
    # the run 5 each, Done 2 and ExecutionSucceeded)
    assert len(outer.events) == 21 + 27 * 40 - 2 + 42 == 1141
    histories = list(executor.executions.values())
    assert all(h.status == "SUCCEEDED" for h in histories)
    assert [h.machine for h in histories].count("canary-rollout") == 1  # started, not waited for
    most = max(len(h.events) for h in histories)
    largest = max(h.largest_payload for h in histories)
    assert most < HISTORY_EVENT_LIMIT and largest < PAYLOAD_LIMIT_BYTES
    print(
        f"\n{generations} generations x {shards} shards: {len(histories)} executions, "
        f"{per_generation(shards)} events per generation, {per_segment} per segment, "
        f"{len(outer.events)} in evolution-run; max {most} events per execution; "
        f"largest payload {largest} bytes"
    )


def test_moto_records_the_same_events_as_the_local_executor():
    generations, shards, size = 7, 16, 3  # segments of 3, 3 and 1 generations
    executor, ours = local_run(StandIns(generations, shards), segment_generations=size)
    local = _by_execution(executor)

    stand_ins = StandIns(generations, shards)
    with moto_step_functions(stand_ins.dispatch) as moto:
        described = moto.run(
            "evolution-run",
            "run",
            {"execution_id": "cycle-1", "agent_id": "a", "segment_generations": size},
        )
        assert described["status"] == "SUCCEEDED", described
        theirs = json.loads(described["output"])
        recorded = {"run": moto.history(described["executionArn"])}
        for execution in moto.executions("evolution-segment"):
            recorded[segment_index(execution["name"])] = moto.history(execution["executionArn"])
        canaries = moto.stop("canary-rollout")
    moto_events = {key: [e["type"] for e in events] for key, events in recorded.items()}

    assert theirs == ours
    assert canaries == ["a-v2-0123456789ab"]  # both engines started the champion's canary
    assert sorted(moto_events, key=str) == sorted(local, key=str) == [0, 1, 2, "run"]
    assert moto_events["run"] == local["run"]  # no Map in the outer machine: same order
    for key in (0, 1, 2):  # Map iterations interleave in moto's threads: same events
        assert Counter(moto_events[key]) == Counter(local[key]), key
    for events in (local, moto_events):
        assert [len(events[k]) for k in (0, 1, 2)] == [
            n * per_generation(shards) + 4 for n in (3, 3, 1)
        ]


def test_moto_records_the_same_events_when_a_segment_fails():
    # One shard: moto runs a Map's iterations concurrently and, when one fails, records what
    # the others did before they were aborted; the local executor runs them in order and
    # stops at the failure. Successful generations record the same events either way.
    def broken() -> StandIns:
        stand_ins = StandIns(12, 1)
        stand_ins.broken_shard = (7, 0)  # in the second segment
        return stand_ins

    local_stand_ins = broken()
    executor, failed = local_run(local_stand_ins, segment_generations=5)
    assert isinstance(failed, ExecutionFailedError) and failed.error == "EvolutionRunFailed"
    local = _by_execution(executor)
    moto_stand_ins = broken()
    with moto_step_functions(moto_stand_ins.dispatch) as moto:
        input_ = {"execution_id": "cycle-1", "agent_id": "a", "segment_generations": 5}
        described = moto.run("evolution-run", "run", input_)
        assert (described["status"], described["error"]) == ("FAILED", "EvolutionRunFailed")
        recorded = {"run": moto.history(described["executionArn"])}
        for execution in moto.executions("evolution-segment"):
            recorded[segment_index(execution["name"])] = moto.history(execution["executionArn"])
    moto_events = {key: [e["type"] for e in events] for key, events in recorded.items()}

    assert sorted(moto_events, key=str) == sorted(local, key=str) == [0, 1, "run"]
    assert moto_events["run"] == local["run"]
    for key in (0, 1):
        assert Counter(moto_events[key]) == Counter(local[key]), key
    assert local[1][-3:] == ["TaskStateExited", "FailStateEntered", "ExecutionFailed"]
    # The segment records the error itself; evolution-run records the child's failure.
    for stand_ins in (local_stand_ins, moto_stand_ins):
        first, second = stand_ins.failures
        assert "disk on fire" in first["error"]["Cause"]
        assert second["error"]["Error"] == "States.TaskFailed"


def test_a_segment_past_the_history_quota_fails_and_the_run_is_recorded_failed():
    # The largest segment evolution-run accepts, 150 generations, over 24 shards: 150 x 191
    # events would be 28,650 in one segment execution.
    stand_ins = StandIns(300, 24)
    executor, failed = local_run(stand_ins, segment_generations=150)
    assert isinstance(failed, ExecutionFailedError) and failed.error == "EvolutionRunFailed"
    (segment,) = (h for h in executor.executions.values() if h.machine == "evolution-segment")
    assert segment.status == "FAILED"
    assert len(segment.events) == HISTORY_EVENT_LIMIT and segment.events[-1] == "ExecutionFailed"
    # The segment's own Catch cannot handle it; evolution-run's RunSegment Catch does.
    (fail,) = stand_ins.failures
    assert fail["error"]["Error"] == "States.TaskFailed"
    assert "maximum number of history events" in fail["error"]["Cause"]


def test_a_payload_over_256_kib_fails_its_execution_and_no_catch_hides_it():
    stand_ins = StandIns(3, 2)
    stand_ins.bloat["tell"] = PAYLOAD_LIMIT_BYTES
    executor, failed = local_run(stand_ins)
    assert isinstance(failed, ExecutionFailedError)
    (segment,) = (h for h in executor.executions.values() if h.machine == "evolution-segment")
    assert segment.status == "FAILED" and "RecordFailureStateEntered" not in segment.events
    assert segment.events[-2:] == ["LambdaFunctionFailed", "ExecutionFailed"]
    (fail,) = stand_ins.failures  # recorded once, by evolution-run
    assert "States.DataLimitExceeded" in fail["error"]["Cause"]


def _counting_machine() -> str:
    return json.dumps(
        {
            "StartAt": "Init",
            "States": {
                "Init": {
                    "Type": "Pass",
                    "Parameters": {"n": 0, "limit.$": "$.limit"},
                    "Next": "Loop",
                },
                "Loop": {
                    "Type": "Choice",
                    "Choices": [
                        {"Variable": "$.n", "NumericLessThanPath": "$.limit", "Next": "Inc"}
                    ],
                    "Default": "Done",
                },
                "Inc": {
                    "Type": "Pass",
                    "Parameters": {"n.$": "States.MathAdd($.n, 1)", "limit.$": "$.limit"},
                    "Next": "Loop",
                },
                "Done": {"Type": "Succeed"},
            },
        }
    )


@pytest.mark.parametrize(("iterations", "succeeds"), [(6248, True), (6249, False)])
def test_the_25000th_event_must_be_execution_succeeded(iterations, succeeds):
    # ExecutionStarted, Init 2, per iteration Loop 2 + Inc 2, Loop 2, Done 2,
    # ExecutionSucceeded: 8 + 4 x iterations, so 6,248 iterations make exactly 25,000.
    executor = AslExecutor(functions={})
    arn = "arn:aws:states:local:000000000000:stateMachine:count"
    executor.register("count", arn, _counting_machine())
    if succeeds:
        out = executor.start(arn, {"limit": iterations}, "count")
        assert out == {"n": iterations, "limit": iterations}
    else:
        with pytest.raises(ExecutionFailedError, match="maximum number of history events"):
            executor.start(arn, {"limit": iterations}, "count")
    history = executor.history("count")
    assert len(history.events) == HISTORY_EVENT_LIMIT
    assert history.events[-1] == ("ExecutionSucceeded" if succeeds else "ExecutionFailed")


@pytest.mark.parametrize("bad", [0, -3, 151, "50", None])
def test_a_bad_segment_size_fails_before_any_run_and_names_the_field(bad):
    stand_ins = StandIns(3, 2)
    executor, failed = local_run(stand_ins, segment_generations=bad)
    assert isinstance(failed, ExecutionFailedError) and failed.error == "EvolutionRunFailed"
    (fail,) = stand_ins.failures
    assert fail["error"]["Error"] == "ValidationFailedError"
    assert fail["error"]["Cause"].startswith("segment_generations:")
    assert stand_ins.generation == 0 and len(executor.executions) == 1


def test_a_canary_already_started_counts_as_started():
    """StartCanary retried after its answer was lost: Step Functions says the execution
    already exists, which the state catches as success, and the run closes once."""
    stand_ins = StandIns(2, 1)
    executor = local_executor()
    executor.functions = {function_arn(pkg): stand_ins.dispatch(pkg) for _, pkg, _ in LAYERS}
    executor.sleep = lambda seconds: None
    canary = state_machine_arn("canary-rollout")
    with pytest.raises(ExecutionFailedError):  # the first attempt's canary: its name is taken
        executor.start(canary, {}, "a-v2-0123456789ab")
    out = executor.start(RUN, {"execution_id": "cycle-1", "agent_id": "a"}, "run")
    assert out["outcome"]["decision"] == "canary_started"
    events = executor.history("run").events
    failed = events.index("TaskFailed")
    assert events[failed - 3 : failed + 3] == [
        "TaskStateEntered",
        "TaskScheduled",
        "TaskStarted",
        "TaskFailed",
        "TaskStateExited",
        "TaskStateEntered",
    ]
    assert [h.machine for h in executor.executions.values()].count("canary-rollout") == 1
