"""One running run per agent, and decisions recorded once per key, on both stores."""

from __future__ import annotations

import threading

import pytest
from chimera.adapters.kv import Put
from chimera.domain.errors import ConflictError
from chimera.domain.models import Decision, RunStatus
from test_store_contract import run


def test_an_agent_has_one_running_run(store):
    store.create_run(run("r1"))
    with pytest.raises(ConflictError, match="agent_id: demo already has the running run r1"):
        store.create_run(run("r2"))
    assert [r.run_id for r in store.list_runs("demo")] == ["r1"]
    with pytest.raises(ConflictError):
        store.create_run(run("r1"))  # the same run twice: refused too
    store.save_run(store.get_run("r1").model_copy(update={"status": RunStatus.SUCCEEDED}))
    store.create_run(run("r2"))  # once it is closed, the next may start
    assert [r.run_id for r in store.list_runs("demo", status=RunStatus.RUNNING)] == ["r2"]


def test_concurrent_creates_make_one_run(store):
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def create(run_id: str) -> None:
        barrier.wait()
        try:
            store.create_run(run(run_id))
            outcomes.append(run_id)
        except ConflictError:
            outcomes.append("refused")

    if type(store).__name__ == "DynamoDbStore":
        # moto's backend is not thread-safe: the same race, one after the other (the stale
        # read is the next test).
        barrier = threading.Barrier(1)
        for i in range(4):
            create(f"r{i}")
    else:
        threads = [threading.Thread(target=create, args=(f"r{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(outcomes).count("refused") == 3
    assert len(store.list_runs("demo", status=RunStatus.RUNNING)) == 1


def test_a_create_that_read_before_another_wrote_is_refused(store):
    """Both read 'no active run'; the conditional ACTIVE write lets only the first through."""
    store.create_run(run("r1"))
    real = store._get
    store._get = lambda pk, sk: None if pk == "ACTIVE#demo" else real(pk, sk)
    with pytest.raises(ConflictError):
        store.create_run(run("r2"))
    store._get = real
    assert [r.run_id for r in store.list_runs("demo")] == ["r1"]


def test_a_keyed_decision_is_recorded_once(store):
    first = Decision(execution_id="e", layer="evolution", summary="started", key="r1:start")
    assert store.add_decision(first) is True
    again = first.model_copy(update={"summary": "started (retry)"})
    assert store.add_decision(again) is False
    store.add_decision(Decision(execution_id="e", layer="evolution", summary="unkeyed"))
    summaries = [d.summary for d in store.list_decisions("e")]
    assert summaries == ["started", "unkeyed"]


def test_an_unreadable_running_run_holds_its_agent_no_longer(store):
    store.create_run(run("r1"))
    store._write([Put("RUN#r1", "RUN", '{"run_id": "r1", "status": "runn')])  # truncated
    store.create_run(run("r2"))  # r1 cannot be read, so nobody can resume it
    assert store.get_run("r2").status == RunStatus.RUNNING
