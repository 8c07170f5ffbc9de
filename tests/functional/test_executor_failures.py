"""What the local executor does that moto's interpreter cannot check: errors AWS documents as
uncatchable, and a Map's real concurrency.

* States.Runtime (a path that selects nothing) and States.DataLimitExceeded (a payload over
  256 KiB) are terminal: `States.ALL` neither retries nor catches them, the execution fails
  (AWS's error-handling guide; moto's interpreter lets States.ALL catch States.Runtime).
* A Map runs up to MaxConcurrency items at once (0: all of them): each stand-in waits at a
  barrier for as many others as the Map should run together, so an executor that runs
  fewer at a time breaks the barrier and fails the test; one that runs more exceeds the
  peak the stand-in records.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from chimera_local.asl import PAYLOAD_LIMIT_BYTES, AslExecutor, ExecutionFailedError

FN = "arn:aws:lambda:local:000000000000:function:work"
ARN = "arn:aws:states:local:000000000000:stateMachine:m"
CATCH_ALL = {
    "Retry": [{"ErrorEquals": ["States.ALL"], "MaxAttempts": 5}],
    "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}],
}


def machine(work: dict[str, Any]) -> str:
    return json.dumps(
        {
            "StartAt": "Work",
            "States": {"Work": {**work, "End": True}, "Caught": {"Type": "Succeed"}},
        }
    )


def run(definition: str, handler, input_: Any) -> tuple[AslExecutor, Any]:
    executor = AslExecutor(functions={FN: handler}, sleep=lambda seconds: None)
    executor.register("m", ARN, definition)
    try:
        return executor, executor.start(ARN, input_, "run")
    except ExecutionFailedError as exc:
        return executor, exc


def test_states_all_does_not_catch_a_runtime_error():
    calls = []
    task = {"Type": "Task", "Resource": FN, "Parameters": {"x.$": "$.missing"}, **CATCH_ALL}
    executor, out = run(machine(task), calls.append, {"present": 1})
    assert isinstance(out, ExecutionFailedError) and out.error == "States.Runtime"
    assert "$.missing" in out.cause and calls == []
    assert executor.history("run").retries == []


def test_states_all_does_not_catch_or_retry_a_result_over_the_payload_quota():
    calls = []

    def bloated(event: Any) -> Any:
        calls.append(event)
        return {"padding": "x" * PAYLOAD_LIMIT_BYTES}

    executor, out = run(machine({"Type": "Task", "Resource": FN, **CATCH_ALL}), bloated, {})
    assert isinstance(out, ExecutionFailedError) and out.error == "States.DataLimitExceeded"
    assert len(calls) == 1 and executor.history("run").retries == []
    assert executor.history("run").events[-1] == "ExecutionFailed"


def test_an_input_over_the_payload_quota_fails_before_the_task_runs():
    calls = []
    task = {"Type": "Task", "Resource": FN, "Parameters": {"big.$": "$.big"}, **CATCH_ALL}
    _, out = run(machine(task), calls.append, {"big": "y" * PAYLOAD_LIMIT_BYTES})
    assert isinstance(out, ExecutionFailedError) and out.error == "States.DataLimitExceeded"
    assert calls == []


@pytest.mark.parametrize(("items", "limit", "together"), [(12, 4, 4), (6, 0, 6), (5, 1, 1)])
def test_a_map_runs_max_concurrency_items_at_once(items, limit, together):
    barrier = threading.Barrier(together, timeout=30)
    lock = threading.Lock()
    running, peak = [0], [0]

    def work(event: Any) -> Any:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            barrier.wait()  # BrokenBarrierError: fewer than `together` ran at once
        finally:
            with lock:
                running[0] -= 1
        return {"twice": 2 * event}

    definition = json.dumps(
        {
            "StartAt": "Each",
            "States": {
                "Each": {
                    "Type": "Map",
                    "ItemsPath": "$.items",
                    "MaxConcurrency": limit,
                    "ItemProcessor": {
                        "StartAt": "Work",
                        "States": {"Work": {"Type": "Task", "Resource": FN, "End": True}},
                    },
                    "End": True,
                }
            },
        }
    )
    _, out = run(definition, work, {"items": list(range(items))})
    assert out == [{"twice": 2 * i} for i in range(items)]  # results in item order
    assert peak[0] == together


def test_a_distributed_map_field_is_refused_not_ignored():
    definition = json.dumps(
        {
            "StartAt": "Each",
            "States": {
                "Each": {
                    "Type": "Map",
                    "ToleratedFailurePercentage": 10,
                    "ItemProcessor": {
                        "StartAt": "Work",
                        "States": {"Work": {"Type": "Task", "Resource": FN, "End": True}},
                    },
                    "End": True,
                }
            },
        }
    )
    _, out = run(definition, lambda e: e, [1, 2])
    assert isinstance(out, ExecutionFailedError) and out.error == "States.Runtime"
    assert "ToleratedFailurePercentage" in out.cause
