"""The period's hard budget under concurrent reservations, on SQLite and on DynamoDB (moto).

Threads reserve, commit and retry at once; whatever the interleaving, what the budget holds
(open reservations plus committed actuals) never passes it, equals the ledger's own sum to
the micro-dollar, and a retried reserve or commit charges nothing twice.
"""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime, timedelta

import pytest
from chimera.domain.budget import LedgerEntry
from chimera.domain.errors import BudgetExceededError, NotFoundError
from chimera.domain.prices import micro_usd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

T0 = datetime(2026, 11, 5, 12, tzinfo=UTC)
BUDGET = 1.0
RUNS = itertools.count()


class Serialized:
    """A boto3 client whose calls run one at a time. DynamoDB makes each request atomic;
    moto's in-memory backend is not thread-safe, so the test makes each request atomic
    itself: threads still interleave between requests, which is what the store must survive."""

    def __init__(self, client) -> None:  # type: ignore[no-untyped-def]
        self._client, self._lock = client, threading.Lock()

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        call = getattr(self._client, name)
        if not callable(call):
            return call

        def locked(*args, **kwargs):  # type: ignore[no-untyped-def]
            with self._lock:
                return call(*args, **kwargs)

        return locked


def atomic_requests(store):  # type: ignore[no-untyped-def]
    if hasattr(store, "client") and not isinstance(store.client, Serialized):
        store.client = Serialized(store.client)
    return store


def entry(run: str, i: int, usd: float) -> LedgerEntry:
    return LedgerEntry(
        entry_id=f"{run}:{i:06d}:segment",
        run_id=run,
        execution_id="ex",
        period="2026-11",
        placement="lambda",
        estimated_usd=usd / 2,
        reserved_usd=usd,
        reserved_at=T0,
        expires_at=T0 + timedelta(hours=1),
    )


def ledger_micro(store) -> int:  # type: ignore[no-untyped-def]
    total = 0
    for e in store.list_ledger(period="2026-11"):
        total += micro_usd(e.actual_usd) if e.status == "committed" else micro_usd(e.reserved_usd)
    return total


jobs = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=0.4, allow_nan=False),  # reserved
        st.floats(min_value=0.0, max_value=1.0),  # actual, as a share of the reservation
        st.booleans(),  # the worker retries its reserve and commit
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=jobs)
def test_concurrent_reservations_never_pass_the_budget(store, batch) -> None:  # type: ignore[no-untyped-def]
    run_id = f"r{next(RUNS)}"  # a fresh run per example (the store outlives examples)
    store = atomic_requests(store)
    granted: list[LedgerEntry] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(batch))

    def worker(i: int, usd: float, share: float, retry: bool) -> None:
        try:
            barrier.wait()
            for _ in range(2 if retry else 1):
                try:
                    got, _new = store.reserve(entry(run_id, i, usd), BUDGET)
                except BudgetExceededError:
                    return
            granted.append(got)
            for _ in range(2 if retry else 1):
                store.settle(run_id, got.entry_id, usd * share, T0 + timedelta(minutes=1))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    before = micro_usd(store.budget_state("2026-11", BUDGET).held_usd)
    threads = [threading.Thread(target=worker, args=(i, *job)) for i, job in enumerate(batch)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    state = store.budget_state("2026-11", BUDGET)
    assert state.held_usd <= BUDGET
    assert micro_usd(state.held_usd) == ledger_micro(store)  # nothing charged twice or lost
    mine = store.list_ledger(run_id=run_id)
    assert {e.entry_id for e in mine} == {g.entry_id for g in granted}
    assert all(e.status == "committed" for e in mine)
    assert micro_usd(state.held_usd) - before == sum(micro_usd(e.actual_usd) for e in mine)
    # what was refused was refused because it did not fit at the time
    if len(mine) < len(batch):
        assert max(u for u, _, _ in batch) > 0


def test_reserve_commit_release_and_retries(store) -> None:  # type: ignore[no-untyped-def]
    first, new = store.reserve(entry("r1", 0, 0.6), BUDGET)
    assert new and first.status == "reserved" and first.revision == 1
    again, new = store.reserve(entry("r1", 0, 0.6), BUDGET)
    assert not new and again == first  # a retry holds nothing more
    with pytest.raises(BudgetExceededError, match="budget_usd"):
        store.reserve(entry("r2", 0, 0.5), BUDGET)  # 0.6 + 0.5 would pass 1.0
    done = store.settle("r1", first.entry_id, 0.25, T0)
    assert (done.status, done.actual_usd) == ("committed", 0.25)
    assert store.settle("r1", first.entry_id, 0.9, T0) == done  # committed once
    state = store.budget_state("2026-11", BUDGET)
    assert (state.held_usd, state.spent_usd) == (0.25, 0.25)  # the rest released
    assert store.reserve(entry("r2", 0, 0.5), BUDGET)[1]  # fits now
    with pytest.raises(NotFoundError):
        store.settle("r9", "nothing", 0.1, T0)


def test_thresholds_fire_once_each_through_the_outbox(store) -> None:  # type: ignore[no-untyped-def]
    for i, usd in enumerate((0.3, 0.3, 0.25, 0.15)):
        got, _ = store.reserve(entry("r", i, usd), BUDGET)
        store.settle("r", got.entry_id, usd, T0)
        store.fire_thresholds("2026-11", BUDGET)
        store.fire_thresholds("2026-11", BUDGET)  # a retry fires nothing more
    events = [e for _, e in store.pending_events() if e.detail_type == "BudgetThresholdReached"]
    assert [e.threshold for e in events] == [0.5, 0.8, 1.0]
    assert [e.spent_usd for e in events] == [0.6, 0.85, 1.0]
    assert store.budget_state("2026-11", BUDGET).thresholds_fired == (0.5, 0.8, 1.0)
