"""The store past one item, on both stores: revisions, indexes, counters, outbox, size."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from chimera.adapters.kv import MAX_ITEM_BYTES
from chimera.domain.budget import LedgerEntry
from chimera.domain.errors import BudgetExceededError, ConflictError, ValidationFailedError
from chimera.domain.events import GenomePromoted
from chimera.domain.models import (
    Alias,
    Decision,
    Genome,
    KpiRecord,
    RunStatus,
)
from test_store_contract import agent, run

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def kpi(job: str, version: int, at: datetime) -> KpiRecord:
    return KpiRecord(
        agent_id="demo",
        genome_version=version,
        job_id=job,
        suite="s",
        success=True,
        score=float(version),
        latency_ms=1.0,
        fuel=1,
        recorded_at=at,
    )


def test_run_writes_are_conditional_on_the_revision_read(store):
    store.create_run(run("r1"))
    a = store.get_run("r1")
    b = store.get_run("r1")
    saved = store.save_run(a.model_copy(update={"decision": "first"}))
    assert saved.revision == a.revision + 1
    with pytest.raises(ConflictError):  # b read the old revision: its write is refused
        store.save_run(b.model_copy(update={"decision": "second"}))
    assert store.get_run("r1").decision == "first"


def test_runs_by_agent_and_status(store):
    store.put_agent(agent())
    for i, status in enumerate((RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.RUNNING)):
        r = run(f"r{i}").model_copy(update={"started_at": T0 + timedelta(hours=i)})
        store.create_run(r)
        store.save_run(store.get_run(r.run_id).model_copy(update={"status": status}))
    running = store.list_runs("demo", status=RunStatus.RUNNING)
    assert [r.run_id for r in running] == ["r2"]
    assert [r.run_id for r in store.list_runs("demo")] == ["r0", "r1", "r2"]
    assert store.list_runs("other", status=RunStatus.RUNNING) == []


def test_kpis_by_agent_version_and_time(store):
    records = [kpi(f"j{i}", 1 + i % 2, T0 + timedelta(minutes=i)) for i in range(10)]
    assert store.put_kpis(records) == 10
    v2 = store.list_kpis("demo", genome_version=2)
    assert [r.job_id for r in v2] == ["j1", "j3", "j5", "j7", "j9"]
    window = store.list_kpis(
        "demo", genome_version=1, since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=7)
    )
    assert [r.job_id for r in window] == ["j2", "j4", "j6"]
    assert [r.job_id for r in store.list_kpis("demo", genome_version=1, limit=2)] == ["j6", "j8"]
    assert store.get_kpi("demo", "j3").genome_version == 2


def test_ledger_by_run_and_period_and_each_periods_budget(store):
    def entry(i: int, at: datetime, usd: float = 1.0) -> LedgerEntry:
        return LedgerEntry(
            entry_id=f"e{i}",
            run_id=f"r{i % 2}",
            execution_id="ex",
            period=f"{at:%Y-%m}",
            placement="lambda",
            estimated_usd=usd / 2,
            reserved_usd=usd,
            reserved_at=at,
            expires_at=at + timedelta(hours=1),
        )

    assert store.reserve(entry(0, T0), 2.5)[1]
    assert not store.reserve(entry(0, T0), 2.5)[1]  # a retry: held once
    assert store.reserve(entry(1, T0 + timedelta(days=1)), 2.5)[1]
    with pytest.raises(BudgetExceededError, match="budget_usd"):
        store.reserve(entry(2, T0 + timedelta(days=2)), 2.5)
    assert store.budget_state("2026-11", 2.5).held_usd == 2.0
    assert store.reserve(entry(3, T0 + timedelta(days=31)), 2.5)[1]  # December: its own budget
    assert store.budget_state("2026-12", 2.5).held_usd == 1.0
    assert [e.entry_id for e in store.list_ledger(period="2026-11")] == ["e0", "e1"]
    assert [e.entry_id for e in store.list_ledger(period="2026-12")] == ["e3"]
    assert [e.entry_id for e in store.list_ledger(run_id="r1")] == ["e1", "e3"]
    with pytest.raises(ValidationFailedError, match="run_id"):
        store.list_ledger()


def test_conditional_counter(store):
    assert store.add_to_counter("jobs", 3) == 3
    assert store.add_to_counter("jobs", 4, ceiling=10) == 7
    with pytest.raises(ConflictError):
        store.add_to_counter("jobs", 4, ceiling=10)
    with pytest.raises(ConflictError):
        store.add_to_counter("fresh", 11, ceiling=10)
    assert store.counter("jobs") == 7 and store.counter("fresh") == 0


def test_events_are_written_with_the_state_change_or_not_at_all(store):
    g1 = Genome(agent_id="demo", version=1, genes=(0.1, 0.2))
    promoted = GenomePromoted(agent_id="demo", version=1, previous_version=None)
    store.promote(g1, Alias(agent_id="demo", weights={1: 1.0}, revision=1), None, events=[promoted])
    ((key, event),) = store.pending_events()
    assert event == promoted
    # A promotion that loses its condition writes neither the alias nor its event.
    g2 = Genome(agent_id="demo", version=2, genes=(0.3, 0.3))
    lost = GenomePromoted(agent_id="demo", version=2, previous_version=1)
    with pytest.raises(ConflictError):
        store.promote(g2, Alias(agent_id="demo", weights={2: 1.0}, revision=2), 7, events=[lost])
    assert [e for _, e in store.pending_events()] == [promoted]
    store.ack_event(key)
    assert store.pending_events() == []


def test_no_item_over_400_kb(store):
    huge = Decision(execution_id="e", layer="x", summary="s", detail={"blob": "x" * MAX_ITEM_BYTES})
    with pytest.raises(ValidationFailedError, match="item"):
        store.add_decision(huge)
    assert store.list_decisions("e") == []


def test_large_state_goes_to_the_blob_store_by_digest(store):
    big = run("big").model_copy(update={"optimizer_state": {"C": [[0.5] * 1000] * 300}})
    store.create_run(big)
    assert store.get_run("big").optimizer_state == big.optimizer_state
    saved = store.save_run(store.get_run("big").model_copy(update={"optimizer_state": {"C": [1]}}))
    assert store.get_run("big").optimizer_state == {"C": [1]} and saved.revision == 2
