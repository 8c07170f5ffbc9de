"""KPI rollups on both stores: kept by put_kpis in the transactions that store the KPIs, equal
to a recomputation from the raw records, never counting a record twice, whole per chunk when
a writer dies between chunks, retried past a concurrent writer, and read by index.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from chimera.adapters.kv import KPI_RETRIES, MAX_ITEM_BYTES, Put, item_size
from chimera.domain.errors import ConflictError
from chimera.domain.models import KpiRecord
from chimera.domain.rollups import RELATIVE_ACCURACY, Rollup, Scope, floor_window, merge_all
from test_poisoned_state import hand_write, quarantined

from chimera_local.sqlite_store import SqliteStore

AGENT = "demo"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WINDOW = 300


class Killed(BaseException):
    """The process dies here: nothing catches it."""


def records(
    n: int,
    seed: int = 7,
    prefix: str = "j",
    versions: Sequence[int] = (1, 2),
    minutes: float = 32.0,
    experiment: str | None = "exp-1",
) -> list[KpiRecord]:
    """n records over `minutes` (several windows), two versions, ~15 % failures, some zero
    latencies, a third routed by an experiment in steps 0..2."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        ok = rnd.random() > 0.15
        routed = experiment is not None and rnd.random() < 0.35
        out.append(
            KpiRecord(
                agent_id=AGENT,
                genome_version=rnd.choice(versions),
                job_id=f"{prefix}{i}",
                suite="cartpole-v1",
                success=ok,
                score=rnd.gauss(200.0, 60.0) if ok else None,
                reason=None if ok else "out-of-fuel",
                latency_ms=0.0 if rnd.random() < 0.02 else rnd.lognormvariate(1.5, 1.2),
                fuel=rnd.randrange(1, 10**6),
                cost_usd=rnd.random() * 1e-6,
                recorded_at=T0 + timedelta(seconds=rnd.random() * minutes * 60),
                experiment_id=experiment if routed else None,
                step=rnd.randrange(3) if routed else None,
            )
        )
    return out


def sized(store: Any, n: int) -> int:
    """n records on SQLite; fewer on moto, whose every transaction deep-copies the table (the
    cost grows with the table: a property of the mock), still several chunks."""
    return n if isinstance(store, SqliteStore) else n * 3 // 7


def assert_matches(rollup: Rollup, recs: Sequence[KpiRecord]) -> None:
    """The rollup equals what the raw records give: counts, sums and moments exactly (to
    1e-9), latency quantiles within the sketch's relative accuracy of numpy's."""
    assert rollup.count == len(recs)
    assert rollup.failures == sum(not r.success for r in recs)
    assert rollup.error_rate == pytest.approx(rollup.failures / len(recs))
    scores = np.array([r.score for r in recs if r.success], dtype=float)
    assert rollup.score.n == len(scores)
    if len(scores):
        assert rollup.score.mean == pytest.approx(scores.mean(), rel=1e-9)
    if len(scores) > 1:
        assert rollup.score.variance == pytest.approx(scores.var(ddof=1), rel=1e-9)
    latencies = np.array([r.latency_ms for r in recs])
    for q in (0.5, 0.95, 0.99):
        # DDSketch answers the value at rank floor(q (n - 1)): numpy's "lower" quantile.
        truth = float(np.quantile(latencies, q, method="lower"))
        got = rollup.latency_quantile(q)
        assert got is not None and abs(got - truth) <= RELATIVE_ACCURACY * truth + 1e-12, (q, got)
    assert rollup.fuel == sum(r.fuel for r in recs)
    assert rollup.cost_usd == pytest.approx(sum(r.cost_usd for r in recs), rel=1e-9)
    assert rollup.first_at == min(r.recorded_at for r in recs)
    assert rollup.last_at == max(r.recorded_at for r in recs)


def by_window(recs: Sequence[KpiRecord]) -> dict[tuple[int, datetime], list[KpiRecord]]:
    out: dict[tuple[int, datetime], list[KpiRecord]] = defaultdict(list)
    for r in recs:
        out[(r.genome_version, floor_window(r.recorded_at, WINDOW))].append(r)
    return out


def by_arm(recs: Sequence[KpiRecord], experiment: str) -> dict[tuple[int, int], list[KpiRecord]]:
    out: dict[tuple[int, int], list[KpiRecord]] = defaultdict(list)
    for r in recs:
        if r.experiment_id == experiment:
            assert r.step is not None
            out[(r.step, r.genome_version)].append(r)
    return out


def assert_store_matches(store: Any, recs: Sequence[KpiRecord]) -> None:
    """Every window and arm rollup of the store equals the recomputation from `recs`."""
    expected = by_window(recs)
    rollups = store.list_rollups(AGENT)
    assert [(r.genome_version, r.window_start) for r in rollups] == sorted(expected, key=_by_time)
    for rollup in rollups:
        assert rollup.window_s == WINDOW and rollup.revision >= 1
        assert_matches(rollup, expected[(rollup.genome_version, rollup.window_start)])
    arms = by_arm(recs, "exp-1")
    stored_arms = store.experiment_rollups("exp-1")
    assert sorted((a.step, a.genome_version) for a in stored_arms) == sorted(arms)
    for arm in stored_arms:
        assert_matches(arm, arms[(arm.step, arm.genome_version)])


def _by_time(key: tuple[int, datetime]) -> tuple[datetime, int]:
    return key[1], key[0]


def stored(store: Any) -> list[KpiRecord]:
    return [k for v in (1, 2) for k in store.list_kpis(AGENT, genome_version=v, limit=10**6)]


# -- equal to a recomputation ---------------------------------------------------------------
def test_rollups_equal_a_recomputation_over_windows_versions_and_arms(store):
    n = sized(store, 700)
    recs = records(n)
    # In batches of uneven sizes, as queues deliver them; the larger span several chunks.
    cuts = (0, n // 5, n * 4 // 7, n)
    assert sum(store.put_kpis(recs[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)) == n
    assert_store_matches(store, recs)
    assert len(store.list_rollups(AGENT)) >= 14  # 7 windows x 2 versions
    # Windows merge into any range: exact counts and moments, quantiles within accuracy.
    for version in (1, 2):
        merged = merge_all(store.list_rollups(AGENT, genome_version=version))
        assert merged is not None and merged.genome_version == version
        assert_matches(merged, [r for r in recs if r.genome_version == version])
    everything = merge_all(store.list_rollups(AGENT))
    assert everything is not None and everything.genome_version is None
    assert_matches(everything, recs)
    # The arms of one experiment, merged across steps for a version.
    arms_v1 = [a for a in store.experiment_rollups("exp-1") if a.genome_version == 1]
    merged_arm = merge_all(arms_v1)
    assert merged_arm is not None and merged_arm.step is None
    assert_matches(merged_arm, [r for r in recs if r.experiment_id and r.genome_version == 1])


def test_duplicates_and_redelivered_batches_change_nothing(store):
    n = sized(store, 300)
    recs = records(n, seed=3)
    first = n * 2 // 3
    assert store.put_kpis(recs[:first]) == first
    before = store.list_rollups(AGENT), store.experiment_rollups("exp-1")
    assert store.put_kpis(recs[:first]) == 0  # the whole batch again (SQS redelivery)
    assert store.put_kpis([recs[5], recs[5], recs[17]]) == 0  # twice in one batch, stored
    assert (store.list_rollups(AGENT), store.experiment_rollups("exp-1")) == before  # revisions too
    # Old and new mixed, and a new record twice in its batch: only the new count, once.
    assert store.put_kpis([*recs[first // 2 :], recs[-1]]) == n - first
    assert_store_matches(store, recs)
    assert len(stored(store)) == n


def test_list_rollups_filters_by_time_range_and_version(store):
    recs = records(sized(store, 400), seed=11)
    store.put_kpis(recs)
    since, until = T0 + timedelta(minutes=10), T0 + timedelta(minutes=25)
    # Windows start at 12:10, 12:15, 12:20 (12:25 is `until`: excluded).
    got = store.list_rollups(AGENT, genome_version=2, since=since, until=until)
    starts = [T0 + timedelta(minutes=m) for m in (10, 15, 20)]
    assert [r.window_start for r in got] == starts
    assert all(r.genome_version == 2 for r in got)
    expected = by_window(recs)
    for r in got:
        assert_matches(r, expected[(2, r.window_start)])
    both = store.list_rollups(AGENT, since=since, until=until)
    assert [(r.window_start, r.genome_version) for r in both] == [
        (s, v) for s in starts for v in (1, 2)
    ]
    # A range that does not start on a window boundary: windows starting inside it.
    inside = store.list_rollups(AGENT, since=since + timedelta(seconds=1))
    assert inside[0].window_start == T0 + timedelta(minutes=15)
    assert store.list_rollups(AGENT, genome_version=3) == []
    assert store.list_rollups("someone-else") == []
    assert store.experiment_rollups("no-such-experiment") == []


# -- damaged items ----------------------------------------------------------------------------
def test_a_rollup_that_does_not_parse_is_quarantined_skipped_and_rebuilt(store):
    recs = records(200, seed=5, versions=(1,))
    store.put_kpis(recs)
    first = store.list_rollups(AGENT)[0]
    assert first.window_start is not None
    pk, sk = f"ROLLUP#{AGENT}", f"{first.window_start.isoformat()}#v00000001"
    assert store._get(pk, sk) is not None  # the key layout the kv docstring documents
    hand_write(store, pk, sk, '{"agent_id": "demo", "count": "lots"')
    arm = store.experiment_rollups("exp-1")[0]
    arm_key = ("ARM#exp-1", f"{arm.step:02d}#v00000001")
    hand_write(store, *arm_key, '{"agent_id": "demo"}')
    left = store.list_rollups(AGENT)
    assert first.window_start not in [r.window_start for r in left]
    assert len(left) == len(by_window(recs)) - 1
    assert len(store.experiment_rollups("exp-1")) == len(by_arm(recs, "exp-1")) - 1
    notes = quarantined(store)
    assert "not valid JSON" in notes[f"{pk}/{sk}"]
    assert f"{arm_key[0]}/{arm_key[1]}" in notes
    # The next record of that window rebuilds it from the stored KPIs (the index), and of
    # that arm from the version's KPIs of the experiment step.
    late = KpiRecord(
        **{
            **recs[0].model_dump(),
            "job_id": "late",
            "recorded_at": first.window_start + timedelta(seconds=1),
            "experiment_id": "exp-1",
            "step": arm.step,
        }
    )
    assert store.put_kpis([late]) == 1
    assert_store_matches(store, [*recs, late])
    assert quarantined(store) == {}  # both items read again


def test_a_worst_case_rollup_stays_far_under_the_item_limit():
    """Latencies from 0 and sub-microsecond to a day (a KPI's range), one in every bin the
    sketch can have: the bin limit keeps the item small (the lowest bins collapse)."""
    at = T0 + timedelta(seconds=1)
    lat = [0.0, 5e-324, 1e-300, 1e-9, *np.geomspace(1e-3, 86_400_000, 3000).tolist()]
    recs = [
        KpiRecord(
            agent_id=AGENT,
            genome_version=1,
            job_id=f"w{i}",
            suite="cartpole-v1",
            success=True,
            score=float(i),
            latency_ms=x,
            fuel=2**64 - 1,
            cost_usd=1_000_000.0,
            recorded_at=at,
        )
        for i, x in enumerate(lat)
    ]
    scope = Scope(AGENT, 1, floor_window(at, WINDOW))
    rollup = Rollup.empty(scope, WINDOW).with_records(recs[:1500]).with_records(recs[1500:])
    doc = rollup.model_dump_json()
    size = item_size(Put(f"ROLLUP#{AGENT}", "x" * 40, doc, rev=1, gsi1=("g" * 80, "y" * 40)))
    assert size < MAX_ITEM_BYTES / 10, size
    assert Rollup.model_validate_json(doc) == rollup
    assert rollup.latency_quantile(0.99) == pytest.approx(
        float(np.quantile(lat, 0.99, method="lower")), rel=RELATIVE_ACCURACY
    )
    assert rollup.latency_quantile(0.0) == 0.0


# -- a writer dying between chunks; a concurrent writer ----------------------------------------
def test_a_writer_killed_between_chunks_leaves_whole_chunks_and_a_retry_completes(store):
    # Three chunks or more: SQLite takes 2,000 items a transaction, DynamoDB 100.
    recs = records(store.kpi_txn_items * 23 // 10, seed=13)
    real = store._commit
    commits: list[int] = []

    def dies_on_the_third(writes: Sequence[Any]) -> None:
        if len(commits) == 2:
            raise Killed("SIGKILL between chunks")
        real(writes)
        commits.append(sum(w.pk.startswith("KPI#") for w in writes))

    store._commit = dies_on_the_third
    with pytest.raises(Killed):
        store.put_kpis(recs)
    store._commit = real
    # Two whole chunks: their KPIs, and rollups that count exactly those KPIs.
    kept = stored(store)
    limit = store.kpi_txn_items
    assert len(kept) == sum(commits) and 2 * (limit - 25) <= sum(commits) <= 2 * limit
    assert {k.job_id for k in kept} == {r.job_id for r in recs[: len(kept)]}
    assert_store_matches(store, recs[: len(kept)])
    # The same batch again: the rest, nothing twice.
    assert store.put_kpis(recs) == len(recs) - len(kept)
    assert len(stored(store)) == len(recs)
    assert_store_matches(store, recs)


def interleave(store: Any, other_writes: Callable[[int], None]) -> list[int]:
    """Before each of the store's commits, another writer commits first (the hook is off
    while it does). Returns the commit attempts seen."""
    real = store._commit
    seen: list[int] = []

    def racing(writes: Sequence[Any]) -> None:
        seen.append(len(writes))
        store._commit = real
        try:
            other_writes(len(seen))
        finally:
            store._commit = racing
        real(writes)

    store._commit = racing
    return seen


def test_a_concurrent_writer_makes_a_chunk_re_read_and_retry(store):
    recs = records(60, seed=17, minutes=4)  # one window per version, some arms
    theirs = records(30, seed=19, prefix="t", minutes=4)
    overlap = recs[10]

    def race(attempt: int) -> None:
        if attempt == 1:  # other records of the same windows: only the rollups moved
            store.put_kpis(theirs)
        if attempt == 2:  # one of ours lands meanwhile (and moves its rollups)
            store.put_kpis([overlap])

    seen = interleave(store, race)
    assert store.put_kpis(recs) == len(recs) - 1  # the overlapping one was theirs
    assert len(seen) == 3  # lost twice, re-read each time
    assert_store_matches(store, [*recs, *theirs])


def test_a_writer_that_always_loses_gives_up_with_a_conflict(store):
    recs = records(20, seed=23, minutes=4, versions=(1,), experiment=None)

    def every_time(attempt: int) -> None:
        theirs = records(
            1, seed=100 + attempt, prefix=f"x{attempt}-", minutes=4, versions=(1,), experiment=None
        )
        store.put_kpis(theirs)

    seen = interleave(store, every_time)
    with pytest.raises(ConflictError, match="records"):
        store.put_kpis(recs)
    assert len(seen) == KPI_RETRIES
    assert {k.job_id for k in stored(store)}.isdisjoint(r.job_id for r in recs)


def test_the_largest_kpi_item_stays_under_the_bound_put_kpis_relies_on():
    """put_kpis checks a KPI item for NaN but not its size: every field at its limit, in the
    characters JSON escapes most (6 bytes each), is still far from 400 KB."""
    from chimera.adapters.kv import KeyValueStore

    worst = KpiRecord(
        agent_id="a" * 63,
        genome_version=99_999_999,
        job_id="\x01" * 256,
        suite="\x01" * 128,
        success=False,
        reason="\x01" * 4000,
        trace_id="\x01" * 256,
        latency_ms=86_400_000,
        fuel=2**64 - 1,
        cost_usd=1_000_000,
        experiment_id="e" * 160,
        step=64,
    )
    assert item_size(KeyValueStore._kpi_put(worst)) < 40 * 1024
