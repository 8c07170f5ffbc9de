"""Every state-machine task is safe to run twice and to die between any two of its writes.

A small CartPole run is driven task by task through the Lambda handlers, with the events the
state machines would send. Before each task the store is snapshotted; then the task is run

- once (the reference state and events),
- twice with the same input (a Step Functions retry after the first attempt's reply was lost),
- and, for each of its writes k, killed just before write k and then retried,

and every variant must end in the reference state with the reference events, once each.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from chimera import runtime
from chimera.runtime import deps

from chimera_local.workflows import handler_for

EXECUTION = "retry-cycle"
AGENT = "cartpole-linear"
VOLATILE = {
    "at",
    "started_at",
    "step_started_at",
    "finished_at",
    "created_at",
    "updated_at",
    "recorded_at",
    "discovered_at",
    "lease_until",
    "validated_at",
    "reserved_at",  # layer 8's ledger
    "expires_at",
    "settled_at",
    "latency_ms",
    "fuel",
}


class Killed(BaseException):
    """The process dies: nothing catches this, no Catch or cleanup runs."""


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _rows(db: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT * FROM items").fetchall()


def _restore(db: str, rows: list[tuple[Any, ...]]) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM items")
        if rows:
            marks = ",".join("?" * len(rows[0]))
            conn.executemany(f"INSERT INTO items VALUES ({marks})", rows)
    # The store is back where a killed process left it, and that process's memory is gone:
    # so is what ingestion remembers of the detectors' watermarks.
    from chimera.services import refinement

    refinement._WATERMARKS.clear()


def _state(db: str) -> Counter[str]:
    """The store's items, minus what differs between equal histories (times, random ids)."""
    out: Counter[str] = Counter()
    with sqlite3.connect(db) as conn:
        for pk, sk, doc, gsi1pk in conn.execute("SELECT pk, sk, doc, gsi1pk FROM items"):
            if pk.startswith("OUTBOX#"):
                pk = "OUTBOX"  # event ids are random; the events are compared on the bus
            if pk.startswith("DEC#") or pk.startswith("KPI#") and sk.startswith("JOB#"):
                sk = sk if sk.startswith("KEY#") or sk.startswith("JOB#") else "<time>"
            try:
                body = _scrub(json.loads(doc)) if doc else doc
            except json.JSONDecodeError:
                body = doc
            if pk.startswith("SHARD#") and isinstance(body, dict):
                body.pop("seconds", None)  # the shard's measured time: each attempt its own
            out[json.dumps([pk, sk, body, gsi1pk], sort_keys=True, default=str)] += 1
    return out


def _events(since: int) -> Counter[str]:
    published = deps().bus.published[since:]  # type: ignore[attr-defined]
    return Counter(
        json.dumps([e.detail_type, _scrub(e.model_dump(mode="json"))], sort_keys=True)
        for e in published
    )


class Faults:
    """Kill the task just before its k-th write to the store (1-based; 0: never)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.kill_at = 0
        self.writes = 0
        self._commit, self._insert = store._commit, store._insert
        store._commit = self._wrap(self._commit)
        store._insert = self._wrap(self._insert)

    def _wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def write(*args: Any) -> Any:
            self.writes += 1
            if self.writes == self.kill_at:
                raise Killed(f"killed before write {self.writes}")
            return real(*args)

        return write

    def arm(self, kill_at: int) -> None:
        self.kill_at, self.writes = kill_at, 0


@pytest.fixture
def local(home, only_cartpole):
    runtime.deps.cache_clear()
    ports = deps()
    db = ports.store.path  # type: ignore[attr-defined]
    return ports, db, Faults(ports.store)


def _call(package: str, event: dict[str, Any]) -> dict[str, Any]:
    return handler_for(package)(json.loads(json.dumps(event)))


def check_task(
    local: Any, package: str, event: dict[str, Any], same_output: bool = True
) -> tuple[dict[str, Any], int]:
    """Run one task in every variant; return the reference output and its number of writes.

    A retry answers what the first attempt answered (except where the answer counts what this
    attempt changed, as ingest's `new`: `same_output=False`).
    """
    ports, db, faults = local
    before = _rows(db)
    mark = len(ports.bus.published)

    faults.arm(0)
    reference = _call(package, event)
    writes = faults.writes
    want_state, want_events = _state(db), _events(mark)

    _restore(db, before)
    del ports.bus.published[mark:]
    for _ in range(2):
        again = _call(package, event)
        assert not same_output or _scrub(again) == _scrub(reference), event["action"]
    assert _state(db) == want_state, f"{event['action']} twice"
    assert _events(mark) == want_events, f"{event['action']} twice: events"

    for k in range(1, writes + 1):
        _restore(db, before)
        del ports.bus.published[mark:]
        faults.arm(k)
        with pytest.raises(Killed):
            _call(package, event)
        faults.arm(0)
        again = _call(package, event)
        assert not same_output or _scrub(again) == _scrub(reference), f"killed at write {k}"
        assert _state(db) == want_state, f"{event['action']} killed at write {k}: state"
        assert _events(mark) == want_events, f"{event['action']} killed at write {k}: events"
    return reference, writes


def test_every_task_is_safe_to_retry_and_to_die_between_writes(local):
    """One small run, task by task, the way the state machines call them."""
    writes: dict[str, int] = {}

    def task(package: str, event: dict[str, Any], same_output: bool = True) -> dict[str, Any]:
        out, n = check_task(local, package, event, same_output)
        writes[event["action"]] = writes.get(event["action"], 0) + n
        return out

    ex = {"execution_id": EXECUTION}
    found = task("discovery", {"action": "discover", **ex})
    assert found["agents"] == [AGENT]
    task("planning", {"action": "plan", **ex, "agents": [AGENT], "objective": "retries"})
    assert task("validation", {"action": "validate", **ex, "agent_id": AGENT})["ok"]
    choice = task("meta_evolution", {"action": "choose", **ex, "agent_id": AGENT})
    choice |= {"population_size": 6, "max_generations": 2}
    run = task("evolution", {"action": "start", **ex, "agent_id": AGENT, "choice": choice})
    run_id = run["run_id"]
    task("resources", {"action": "place", **ex, "run_id": run_id})
    proceed = True
    while proceed:
        asked = task("evolution", {"action": "ask", **ex, "run_id": run_id})
        for shard in asked["shards"]:
            task("execution", {"action": "evaluate", **shard})
        gen = asked["generation"]
        task("evolution", {"action": "tell", **ex, "run_id": run_id, "generation": gen})
        proceed = task("meta_evolution", {"action": "adapt", **ex, "run_id": run_id})["proceed"]
    task("evolution", {"action": "propose", **ex, "run_id": run_id})
    holdout = task("execution", {"action": "holdout", **ex, "run_id": run_id})
    task("refinement", {"action": "ingest", "records": holdout["records"]}, same_output=False)
    gate = task(
        "validation",
        {
            "action": "gate",
            **ex,
            "run_id": run_id,
            "candidate": holdout["candidate"],
            "incumbent": holdout["incumbent"],
            "difference": holdout["difference"],
        },
    )
    if gate["approved"]:  # the champion goes to a canary, whose first task runs twice too
        handoff = task("evolution", {"action": "handoff", **ex, "run_id": run_id})
        canary = {"execution_id": handoff["experiment_id"], **handoff["canary"]}
        task("refinement", {"action": "start_experiment", **canary})
        extra = {"experiment_id": handoff["experiment_id"]}
        outcome = task("evolution", {"action": "canary_started", **ex, "run_id": run_id, **extra})
    else:
        extra = {"reason": gate["reason"]}
        outcome = task("evolution", {"action": "finish", **ex, "run_id": run_id, **extra})
    assert outcome["status"] == "succeeded"
    task("refinement", {"action": "report", **ex})
    # The run's failure path: a caught error lands on a finished run without changing it.
    error = {"Error": "States.TaskFailed", "Cause": "late"}
    task("evolution", {"action": "fail", **ex, "run_id": run_id, "error": error})
    # Every write of the run's tasks was a kill point that the retry completed.
    print(f"{len(writes)} tasks, {sum(writes.values())} kill points survived: {writes}")
    closed = "canary_started" if gate["approved"] else "finish"
    assert writes["tell"] >= 2 and writes[closed] >= 2
