"""Failure paths, local executor against moto's interpreter: purpose-written machines and
Lambda stand-ins, each run by both engines, with the same result required.

A scenario compares, between the two engines: the execution's status and output (or error
and cause), every call each stand-in received, every retry's wait (moto's retrier sleeps on
a recorder; ours on a simulated clock) and the events each execution recorded. Covered:
Retry with IntervalSeconds / BackoffRate / MaxAttempts / MaxDelaySeconds / FULL jitter,
retriers in order, retries exhausted into a Catch, Catch with and without ResultPath,
States.TaskFailed as a wildcard, ResultSelector, $$.State.RetryCount, a Map over many items
(MaxConcurrency 0 and 4), a Map whose failing item (a failed shard) is retried, caught, or
fails the execution, and a Map retried as a whole.

`test_each_broken_executor_fails_a_differential_check` runs the same checks against five
deliberately broken executors and requires each to fail at least one (a mutation test).
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from moto_sfn import FUNCTION_ARN, MACHINE_ARN, moto_machines

from chimera_local.asl import AslExecutor, ExecutionFailedError

Handler = Callable[[Any], Any]
JITTER_SEED = 11
RACING_FAILURE = 9  # the failing item of the Map whose other items race it


class FlakyError(Exception):
    pass


class BoomError(Exception):
    pass


class Calls:
    """Stand-in Lambdas that record what they were called with (thread-safe)."""

    def __init__(self) -> None:
        self.received: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def record(self, name: str, event: Any) -> int:
        with self._lock:
            calls = self.received.setdefault(name, [])
            calls.append(json.dumps(event, sort_keys=True))
            return len(calls)


@dataclass
class Scenario:
    name: str
    states: dict[str, Any]
    start_at: str
    input: Any
    functions: Callable[[Calls], dict[str, Handler]]
    # False where a failing Map item races the others: how many of them started before it
    # failed (their calls, their events) is up to the threads, in moto and here alike.
    deterministic: bool = True

    def definition(self) -> str:
        return json.dumps({"StartAt": self.start_at, "States": self.states})


@dataclass
class Outcome:
    status: str
    output: Any = None
    error: str | None = None
    cause: Any = None
    calls: dict[str, list[str]] = field(default_factory=dict)
    retry_delays: list[float] = field(default_factory=list)
    events: Counter[str] | None = None


def _cause(text: str | None) -> Any:
    try:
        return json.loads(text or "")
    except json.JSONDecodeError:
        return text


def _calls(calls: Calls) -> dict[str, list[str]]:
    return {name: sorted(received) for name, received in calls.received.items()}


def _failing_call(calls: Calls) -> dict[str, list[str]]:
    """Of a racing Map, the calls that must have happened: the failing item's."""
    return {
        name: sorted(c for c in received if f'"index": {RACING_FAILURE},' in c)
        for name, received in calls.received.items()
    }


def fn(name: str) -> str:
    return FUNCTION_ARN.format(name)


# -- stand-ins ---------------------------------------------------------------------------
def flaky(failures: int, error: type[Exception] = FlakyError) -> Callable[[Calls], dict]:
    """`work` fails its first `failures` calls, then answers."""

    def make(calls: Calls) -> dict[str, Handler]:
        def work(event: Any) -> Any:
            n = calls.record("work", event)
            if n <= failures:
                raise error(f"attempt {n} failed")
            return {"attempt": n, "got": event}

        return {"work": work}

    return make


def items_doubled(fail_index: int | None = None, fail_times: int = 10**9) -> Callable:
    """`double` doubles an item's value; item `fail_index` fails its first `fail_times`."""

    def make(calls: Calls) -> dict[str, Handler]:
        seen: dict[int, int] = {}
        lock = threading.Lock()

        def double(event: Any) -> Any:
            calls.record("double", event)
            with lock:
                seen[event["index"]] = seen.get(event["index"], 0) + 1
                times = seen[event["index"]]
            if event["index"] == fail_index and times <= fail_times:
                raise BoomError(f"shard {fail_index} failed")
            return {"index": event["index"], "doubled": 2 * event["value"]}

        return {"double": double}

    return make


def shaped(calls: Calls) -> dict[str, Handler]:
    def work(event: Any) -> Any:
        calls.record("work", event)
        return {"Payload": {"score": 0.5, "detail": {"kept": [1, 2], "dropped": "x" * 10}}}

    return {"work": work}


def _task(resource: str, **extra: Any) -> dict[str, Any]:
    return {"Type": "Task", "Resource": fn(resource), **extra}


def _map(concurrency: int, task: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "Type": "Map",
        "ItemsPath": "$.items",
        "MaxConcurrency": concurrency,
        "ItemSelector": {
            "index.$": "$$.Map.Item.Index",
            "value.$": "$$.Map.Item.Value",
            "run.$": "$.run",
        },
        "ItemProcessor": {"StartAt": "Double", "States": {"Double": {**task, "End": True}}},
        **extra,
    }


DONE = {"Type": "Succeed"}
MANY = {"run": "r-1", "items": list(range(40))}

SCENARIOS = [
    Scenario(
        "retry_with_backoff_and_cap",
        {
            "Work": _task(
                "work",
                Parameters={"x.$": "$.x", "retry.$": "$$.State.RetryCount"},
                Retry=[
                    {
                        "ErrorEquals": ["FlakyError"],
                        "IntervalSeconds": 2,
                        "BackoffRate": 3.0,
                        "MaxAttempts": 4,
                        "MaxDelaySeconds": 10,
                    }
                ],
                Next="Done",
            ),
            "Done": DONE,
        },
        "Work",
        {"x": 1},
        flaky(3),
    ),
    Scenario(
        "retry_with_full_jitter",
        {
            "Work": _task(
                "work",
                Retry=[
                    {
                        "ErrorEquals": ["States.ALL"],
                        "IntervalSeconds": 3,
                        "BackoffRate": 2.0,
                        "MaxAttempts": 5,
                        "JitterStrategy": "FULL",
                    }
                ],
                End=True,
            )
        },
        "Work",
        {"x": 2},
        flaky(4),
    ),
    Scenario(
        "retry_defaults_exhausted_then_caught_with_result_path",
        {
            "Work": _task(
                "work",
                Retry=[{"ErrorEquals": ["FlakyError"]}],
                Catch=[{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Done"}],
                Next="Done",
            ),
            "Done": DONE,
        },
        "Work",
        {"x": 3, "keep": {"me": True}},
        flaky(99),
    ),
    Scenario(
        "first_matching_retrier_decides_even_when_exhausted",
        {
            "Work": _task(
                "work",
                Retry=[
                    {"ErrorEquals": ["BoomError"], "MaxAttempts": 1, "IntervalSeconds": 1},
                    {"ErrorEquals": ["States.ALL"], "MaxAttempts": 5, "IntervalSeconds": 7},
                ],
                Catch=[{"ErrorEquals": ["BoomError"], "ResultPath": "$.boom", "Next": "Done"}],
                Next="Done",
            ),
            "Done": DONE,
        },
        "Work",
        {"x": 4},
        flaky(99, BoomError),
    ),
    Scenario(
        "max_attempts_zero_never_retries",
        {
            "Work": _task(
                "work",
                Retry=[{"ErrorEquals": ["FlakyError"], "MaxAttempts": 0}],
                Next="Done",
            ),
            "Done": DONE,
        },
        "Work",
        {"x": 5},
        flaky(1),
    ),
    Scenario(
        "catch_order_and_task_failed_wildcard",
        {
            "Work": _task(
                "work",
                Catch=[
                    {"ErrorEquals": ["FlakyError"], "ResultPath": "$.flaky", "Next": "Done"},
                    {"ErrorEquals": ["States.TaskFailed"], "ResultPath": "$.any", "Next": "Done"},
                ],
                Next="Done",
            ),
            "Done": DONE,
        },
        "Work",
        {"x": 6},
        flaky(1, BoomError),
    ),
    Scenario(
        "catch_without_result_path_replaces_the_input",
        {
            "Work": _task(
                "work", Catch=[{"ErrorEquals": ["BoomError"], "Next": "Done"}], Next="Done"
            ),
            "Done": DONE,
        },
        "Work",
        {"x": 7},
        flaky(1, BoomError),
    ),
    Scenario(
        "uncaught_error_fails_the_execution",
        {
            "Work": _task(
                "work",
                Catch=[{"ErrorEquals": ["FlakyError"], "ResultPath": "$.e", "Next": "Done"}],
                Next="Done",
            ),
            "Done": DONE,
        },
        "Work",
        {"x": 8},
        flaky(1, BoomError),
    ),
    Scenario(
        "result_selector_then_result_path",
        {
            "Work": _task(
                "work",
                ResultSelector={"score.$": "$.Payload.score", "kept.$": "$.Payload.detail.kept"},
                ResultPath="$.result",
                Next="Done",
            ),
            "Done": DONE,
        },
        "Work",
        {"x": 9},
        shaped,
    ),
    Scenario(
        "map_over_many_items_unbounded",
        {
            "Each": _map(0, _task("double"), ResultPath="$.doubled", Next="Done"),
            "Done": DONE,
        },
        "Each",
        MANY,
        items_doubled(),
    ),
    Scenario(
        "map_over_many_items_four_at_a_time_with_result_selector",
        {
            "Each": _map(
                4,
                _task("double", ResultSelector={"d.$": "$.doubled"}),
                ResultPath="$.doubled",
                Next="Done",
            ),
            "Done": DONE,
        },
        "Each",
        MANY,
        items_doubled(),
    ),
    Scenario(
        "failed_shard_retried_inside_the_map",
        {
            "Each": _map(
                4,
                _task(
                    "double",
                    Retry=[{"ErrorEquals": ["BoomError"], "IntervalSeconds": 1, "MaxAttempts": 2}],
                ),
                ResultPath="$.doubled",
                Next="Done",
            ),
            "Done": DONE,
        },
        "Each",
        {"run": "r-2", "items": list(range(12))},
        items_doubled(fail_index=5, fail_times=2),
    ),
    Scenario(
        "failed_shard_fails_the_map_and_is_caught",
        {
            "Each": _map(
                1,
                _task("double"),
                ResultPath="$.doubled",
                Catch=[{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Done"}],
                Next="Done",
            ),
            "Done": DONE,
        },
        "Each",
        {"run": "r-3", "items": list(range(8))},
        items_doubled(fail_index=3),
    ),
    Scenario(
        "failed_shard_among_concurrent_ones_fails_the_execution",
        {"Each": _map(0, _task("double"), End=True)},
        "Each",
        {"run": "r-4", "items": list(range(16))},
        items_doubled(fail_index=RACING_FAILURE),
        deterministic=False,
    ),
    Scenario(
        "map_retried_as_a_whole",
        {
            "Each": _map(
                2,
                _task("double"),
                ResultPath="$.doubled",
                Retry=[{"ErrorEquals": ["BoomError"], "IntervalSeconds": 4, "MaxAttempts": 1}],
                Next="Done",
            ),
            "Done": DONE,
        },
        "Each",
        {"run": "r-5", "items": [0]},
        items_doubled(fail_index=0, fail_times=1),
    ),
]


# -- the two engines ---------------------------------------------------------------------
def run_local(scenario: Scenario, executor_class: type[AslExecutor] = AslExecutor) -> Outcome:
    calls = Calls()
    functions = {fn(name): h for name, h in scenario.functions(calls).items()}
    clock: list[float] = []
    executor = executor_class(
        functions=functions, sleep=clock.append, rng=random.Random(JITTER_SEED)
    )
    executor.register(scenario.name, MACHINE_ARN.format(scenario.name), scenario.definition())
    try:
        output = executor.start(MACHINE_ARN.format(scenario.name), scenario.input, "run")
        outcome = Outcome("SUCCEEDED", output=output)
    except ExecutionFailedError as exc:
        outcome = Outcome("FAILED", error=exc.error, cause=_cause(exc.cause))
    history = executor.history("run")
    outcome.calls = _calls(calls) if scenario.deterministic else _failing_call(calls)
    outcome.retry_delays = sorted(delay for _, delay in history.retries)
    assert outcome.retry_delays == sorted(clock)  # every computed wait went to the clock
    outcome.events = Counter(history.events) if scenario.deterministic else None
    return outcome


_MOTO: dict[str, Outcome] = {}


def run_moto(scenario: Scenario) -> Outcome:
    """Moto's outcome, once per scenario (the mutation test compares against it again)."""
    if scenario.name not in _MOTO:
        calls = Calls()
        definitions = {scenario.name: scenario.definition()}
        with moto_machines(definitions, scenario.functions(calls), JITTER_SEED) as moto:
            described = moto.run(scenario.name, "run", scenario.input)
            delays = sorted(moto.retry_delays)
        if described["status"] == "SUCCEEDED":
            outcome = Outcome("SUCCEEDED", output=json.loads(described["output"]))
        else:
            outcome = Outcome(
                described["status"],
                error=described.get("error"),
                cause=_cause(described.get("cause")),
            )
        outcome.calls = _calls(calls) if scenario.deterministic else _failing_call(calls)
        outcome.retry_delays = delays
        outcome.events = Counter(described["events"]) if scenario.deterministic else None
        _MOTO[scenario.name] = outcome
    return _MOTO[scenario.name]


def check(scenario: Scenario, executor_class: type[AslExecutor] = AslExecutor) -> None:
    ours, theirs = run_local(scenario, executor_class), run_moto(scenario)
    assert (ours.status, ours.error) == (theirs.status, theirs.error)
    assert ours.output == theirs.output
    assert ours.cause == theirs.cause
    assert ours.calls == theirs.calls
    assert ours.retry_delays == pytest.approx(theirs.retry_delays)
    assert ours.events == theirs.events


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_local_executor_agrees_with_moto(scenario):
    check(scenario)


def test_the_scenarios_exercise_what_they_claim():
    # Guards against a scenario that would pass vacuously (no retry, no failure, no items).
    by_name = {s.name: run_local(s) for s in SCENARIOS}
    assert by_name["retry_with_backoff_and_cap"].retry_delays == [2, 6, 10]
    assert by_name["retry_with_backoff_and_cap"].output["attempt"] == 4
    jittered = by_name["retry_with_full_jitter"].retry_delays
    assert len(jittered) == 4 and all(0 <= d <= 3 * 2**i for i, d in enumerate(sorted(jittered)))
    caught = by_name["retry_defaults_exhausted_then_caught_with_result_path"]
    assert caught.retry_delays == [1, 2, 4] and caught.output["keep"] == {"me": True}
    assert caught.output["error"]["Error"] == "FlakyError"
    assert by_name["first_matching_retrier_decides_even_when_exhausted"].retry_delays == [1]
    assert by_name["max_attempts_zero_never_retries"].status == "FAILED"
    assert set(by_name["catch_order_and_task_failed_wildcard"].output) == {"x", "any"}
    assert set(by_name["catch_without_result_path_replaces_the_input"].output) == {
        "Error",
        "Cause",
    }
    assert by_name["result_selector_then_result_path"].output["result"] == {
        "score": 0.5,
        "kept": [1, 2],
    }
    unbounded = by_name["map_over_many_items_unbounded"].output["doubled"]
    assert [d["doubled"] for d in unbounded] == [2 * i for i in range(40)]
    assert len(by_name["failed_shard_retried_inside_the_map"].calls["double"]) == 14
    assert by_name["failed_shard_fails_the_map_and_is_caught"].output["error"]["Error"] == (
        "BoomError"
    )
    failed = by_name["failed_shard_among_concurrent_ones_fails_the_execution"]
    assert (failed.status, failed.error) == ("FAILED", "BoomError")
    assert by_name["map_retried_as_a_whole"].retry_delays == [4]


# -- five broken executors ---------------------------------------------------------------
class IgnoresCatchResultPath(AslExecutor):
    def _caught(self, handler, data, err):
        return {"Error": err.error, "Cause": err.cause}


class NeverRetries(AslExecutor):
    def _with_retry(self, state, ctx, history, call):
        return call({**ctx, "State": {**ctx["State"], "RetryCount": 0}})


class RunsOnlyTheFirstMapItem(AslExecutor):
    def _map_items(self, items):
        return items[:1]


class IgnoresResultSelector(AslExecutor):
    def _selected(self, state, result, ctx):
        return result


class NeverCatches(AslExecutor):
    def _catcher(self, state, err):
        return None


BROKEN = [
    IgnoresCatchResultPath,
    NeverRetries,
    RunsOnlyTheFirstMapItem,
    IgnoresResultSelector,
    NeverCatches,
]


@pytest.mark.parametrize("broken", BROKEN, ids=[b.__name__ for b in BROKEN])
def test_each_broken_executor_fails_a_differential_check(broken):
    failed = []
    for scenario in SCENARIOS:
        try:
            check(scenario, broken)
        except AssertionError:
            failed.append(scenario.name)
    assert failed, f"{broken.__name__} passes every differential check"
    print(f"\n{broken.__name__} fails {len(failed)} of {len(SCENARIOS)}: {', '.join(failed)}")
