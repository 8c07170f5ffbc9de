"""Pattern-recognition state on both stores (SQLite and moto DynamoDB): one item per agent and
genome version, saved conditionally on its revision together with the AnomalyDetected events
it made, so a stale writer (a retried or concurrent ingest) writes neither state nor events;
read many at once; an unreadable one is noted and handed back fresh, to be rebuilt.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from chimera.domain.anomalies import DetectorState, advance
from chimera.domain.errors import ConflictError
from chimera.domain.events import AnomalyDetected
from chimera.domain.models import KpiRecord
from test_poisoned_state import hand_write, quarantined

AGENT = "demo"
WINDOW = 300
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def window(i: int) -> datetime:
    return T0 + timedelta(seconds=WINDOW * i)


def shifted_kpis(windows: int, shift_at: int, per: int = 6, version: int = 1) -> list[KpiRecord]:
    """`per` records a window; from window `shift_at` on the latency is 3x."""
    rnd = random.Random(version)
    out = []
    for w in range(windows):
        for i in range(per):
            slow = 3.0 if w >= shift_at else 1.0
            out.append(
                KpiRecord(
                    agent_id=AGENT,
                    genome_version=version,
                    job_id=f"v{version}-w{w}-{i}",
                    suite="cartpole-v1",
                    success=True,
                    score=rnd.gauss(200.0, 20.0),
                    latency_ms=rnd.lognormvariate(1.0, 0.2) * slow,
                    fuel=1,
                    recorded_at=window(w) + timedelta(seconds=i * WINDOW / per),
                )
            )
    return out


def event(n: int) -> AnomalyDetected:
    return AnomalyDetected(
        agent_id=AGENT,
        kpi="latency_p95_ms",
        value=float(n),
        detail=f"event {n}",
        genome_version=1,
        kind="anomaly",
        direction="up",
        window=window(n).isoformat(),
    )


def outbox(store: Any) -> list[str]:
    return sorted(e.detail for _, e in store.pending_events(limit=1000))


def test_a_state_is_saved_at_its_next_revision_with_its_events(store: Any) -> None:
    assert store.get_detector_states([(AGENT, 1)], WINDOW) == {}
    fresh = DetectorState.fresh(AGENT, 1, WINDOW)
    first = store.save_detector_state(fresh, [event(1), event(2)])
    assert first.revision == 1
    got = store.get_detector_states([(AGENT, 1), (AGENT, 2)], WINDOW)
    assert list(got) == [(AGENT, 1)] and got[(AGENT, 1)] == first
    assert outbox(store) == ["event 1", "event 2"]
    # A stale writer (read revision 0, as a concurrent ingest did): nothing is written, not
    # its state and not its events.
    moved = fresh.model_copy(update={"last_window": window(3)})
    with pytest.raises(ConflictError):
        store.save_detector_state(moved, [event(3)])
    assert store.get_detector_states([(AGENT, 1)], WINDOW)[(AGENT, 1)] == first
    assert outbox(store) == ["event 1", "event 2"]
    second = store.save_detector_state(moved.model_copy(update={"revision": 1}), [event(3)])
    assert second.revision == 2 and second.last_window == window(3)
    assert outbox(store) == ["event 1", "event 2", "event 3"]
    with pytest.raises(ConflictError):  # revision 1 is gone
        store.save_detector_state(first, [event(4)])
    assert outbox(store) == ["event 1", "event 2", "event 3"]


def test_states_fed_from_stored_rollups_round_trip_and_list_by_agent(store: Any) -> None:
    """What ingestion stores: detectors fed from put_kpis' window rollups (a latency shift
    at window 35 of 45), read back equal, listed by agent; many pairs read at once."""
    for version in (1, 2):
        store.put_kpis(shifted_kpis(45, 35, version=version), WINDOW)
    rollups = [r for r in store.list_rollups(AGENT, None, None, window(45))]
    states, found = {}, {}
    for version in (1, 2):
        state, events = advance(
            DetectorState.fresh(AGENT, version, WINDOW),
            [r for r in rollups if r.genome_version == version],
            window(45),
            T0.isoformat(),
        )
        states[version] = store.save_detector_state(state, events)
        found[version] = [(e.kpi, e.direction, e.window) for e in events]
        assert states[version].last_window == window(44)
    for version in (1, 2):
        assert ("latency_p95_ms", "up", window(35).isoformat()) in found[version]
    assert len(outbox(store)) == sum(len(f) for f in found.values())
    many = [(AGENT, v) for v in range(1, 131)]  # more keys than one batch read takes
    got = store.get_detector_states(many, WINDOW)
    assert got == {(AGENT, 1): states[1], (AGENT, 2): states[2]}
    assert store.list_detector_states(AGENT) == [states[1], states[2]]
    assert store.list_detector_states("someone-else") == []
    # The detectors read back go on exactly as the ones that were never stored.
    tail = shifted_kpis(47, 35, version=1)[45 * 6 :]
    store.put_kpis(tail, WINDOW)
    later = [r for r in store.list_rollups(AGENT, 1, window(45), window(47))]
    a, _ = advance(states[1], later, window(47), "t")
    b, _ = advance(
        advance(
            DetectorState.fresh(AGENT, 1, WINDOW),
            [r for r in rollups if r.genome_version == 1],
            window(45),
            "t",
        )[0],
        later,
        window(47),
        "t",
    )
    assert a.metrics == b.metrics and a.last_window == b.last_window == window(46)


def test_an_unreadable_state_is_noted_and_handed_back_fresh_at_its_revision(store: Any) -> None:
    stored = store.save_detector_state(
        DetectorState.fresh(AGENT, 1, WINDOW).model_copy(update={"last_window": window(2)})
    )
    stored = store.save_detector_state(stored)  # revision 2
    hand_write(store, f"DETECT#{AGENT}", "v00000001", '{"agent_id": "demo", "metrics": 7')
    got = store.get_detector_states([(AGENT, 1)], WINDOW)[(AGENT, 1)]
    assert got.replaying and got.revision == 2 and got.last_window is None
    assert f"DETECT#{AGENT}/v00000001" in quarantined(store)
    assert store.list_detector_states(AGENT) == []  # a list read skips it
    rebuilt = store.save_detector_state(got.model_copy(update={"last_window": window(5)}))
    assert rebuilt.revision == 3 and not rebuilt.replaying
    assert store.get_detector_states([(AGENT, 1)], WINDOW)[(AGENT, 1)] == rebuilt
    assert f"DETECT#{AGENT}/v00000001" not in quarantined(store)


def test_a_state_kept_for_another_window_length_starts_again(store: Any) -> None:
    stored = store.save_detector_state(
        DetectorState.fresh(AGENT, 1, 60).model_copy(update={"last_window": window(2)})
    )
    got = store.get_detector_states([(AGENT, 1)], WINDOW)[(AGENT, 1)]
    assert got.window_s == WINDOW and got.replaying and got.revision == stored.revision
    assert got.last_window is None
