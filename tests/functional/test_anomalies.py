"""Pattern recognition at ingestion, driven as SQS delivers KPIs to the refinement handler:
a level shift in latency or in score is announced by exactly one AnomalyDetected (its
direction, its window) on the local bus; a steady stream by none; a redelivered batch, a late
record or a report announces nothing again; a handler SIGKILLed between its writes leaves
detector state and events consistent, and the redelivery completes them exactly once.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from chimera import runtime
from chimera.domain.anomalies import DetectorState, advance
from chimera.domain.rollups import floor_window
from chimera.runtime import deps
from live_agents import start_live_cartpole

from chimera_local.workflows import handler_for

AGENT = "cartpole-linear"
REPO = Path(__file__).resolve().parents[2]
TEMPLATE = json.loads((REPO / "tests" / "events" / "sqs_kpi_batch.json").read_text())["Records"][0]
WINDOWS = 45  # windows of KPIs, the newest ending before now
PER_WINDOW = 40

# The handler in a process of its own, SIGKILLed right after its first commit that wrote
# what the argument names: KPIs, or a detector state (with its events).
KILLED_HANDLER = """
import json, os, signal, sys
from chimera.runtime import deps
from chimera_local.workflows import handler_for

store = deps().store
real = store._commit
prefix = sys.argv[2]

def commit(writes):
    real(writes)
    if any(w.pk.startswith(prefix) for w in writes):
        os.kill(os.getpid(), signal.SIGKILL)

store._commit = commit
handler_for("refinement")(json.loads(open(sys.argv[1]).read()))
print("the handler finished: it was never killed")
"""


T0: list[datetime] = []  # the test's first window, taken once (the clock may pass a boundary)


@pytest.fixture
def live(home, only_cartpole):
    start_live_cartpole("anomalies")
    window_s = deps().settings.rollup_window_s
    T0[:] = [floor_window(datetime.now(UTC), window_s) - timedelta(seconds=window_s * WINDOWS)]
    return home


def window(i: int) -> datetime:
    return T0[0] + timedelta(seconds=deps().settings.rollup_window_s * i)


def kpis(
    shift_at: int | None = None, latency: float = 1.0, score: float = 0.0, seed: int = 1
) -> list[list[dict[str, Any]]]:
    """Per window, the records a producer sends: ~10 % failures, scores around 300, lognormal
    latencies; from window `shift_at` on, latencies times `latency` and scores plus `score`."""
    rnd = random.Random(seed)
    t0, window_s = T0[0], deps().settings.rollup_window_s
    out = []
    for w in range(WINDOWS):
        shifted = shift_at is not None and w >= shift_at
        batch = []
        for i in range(PER_WINDOW):
            ok = rnd.random() > 0.1
            batch.append(
                {
                    "agent_id": AGENT,
                    "genome_version": 1,
                    "job_id": f"s{seed}-w{w}-{i}",
                    "suite": "cartpole-v1",
                    "success": ok,
                    "score": rnd.gauss(300.0, 60.0) + (score if shifted else 0.0) if ok else None,
                    "latency_ms": rnd.lognormvariate(0.0, 0.3) * (latency if shifted else 1.0),
                    "fuel": rnd.randrange(1, 10**6),
                    "cost_usd": 0.0,
                    "reason": None if ok else "trap: unreachable",
                    "recorded_at": (
                        t0 + timedelta(seconds=window_s * w + (i + 0.5) * window_s / PER_WINDOW)
                    ).isoformat(),
                }
            )
        out.append(batch)
    return out


def sqs_batch(records: list[dict[str, Any]]) -> dict[str, Any]:
    batch = []
    for r in records:
        envelope = json.loads(TEMPLATE["body"])
        envelope["detail"]["record"] = r
        batch.append({**TEMPLATE, "messageId": f"m-{r['job_id']}", "body": json.dumps(envelope)})
    return {"Records": batch}


def deliver(records: list[dict[str, Any]]) -> None:
    assert handler_for("refinement")(sqs_batch(records)) == {"batchItemFailures": []}


def anomalies(home: Path) -> list[dict[str, Any]]:
    """AnomalyDetected events the local bus published (its log), oldest first."""
    log = home / "events.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    return [e["detail"] for e in map(json.loads, lines) if e["detail-type"] == "AnomalyDetected"]


def state() -> DetectorState:
    return deps().store.get_detector_states([(AGENT, 1)], deps().settings.rollup_window_s)[
        (AGENT, 1)
    ]


def recomputed(until: datetime) -> DetectorState:
    """The state the detectors reach when every window before `until` is fed once, in order,
    from the stored rollups."""
    store, window_s = deps().store, deps().settings.rollup_window_s
    rollups = store.list_rollups(AGENT, 1, None, until)
    fed, _ = advance(DetectorState.fresh(AGENT, 1, window_s), rollups, until, "now")
    return fed


@pytest.mark.parametrize(
    ("shift", "metric", "direction"),
    [({"latency": 2.5}, "latency_p95_ms", "up"), ({"score": -45.0}, "score_mean", "down")],
)
def test_a_level_shift_is_one_anomaly_with_its_direction_and_window(live, shift, metric, direction):
    """Window by window as a queue delivers them (two SQS batches a window): the shift at
    window 35 of 45 is one event, once the next window closes it."""
    for records in kpis(shift_at=35, **shift):
        deliver(records[: PER_WINDOW // 2])
        deliver(records[PER_WINDOW // 2 :])
    found = anomalies(live)
    assert [(e["kpi"], e["direction"], e["window"]) for e in found] == [
        (metric, direction, window(35).isoformat())
    ], found
    assert found[0]["agent_id"] == AGENT and found[0]["genome_version"] == 1
    assert found[0]["kind"] in ("anomaly", "trend", "change-point")
    assert deps().store.pending_events() == []  # published, nothing left behind
    # The newest window (44) is open; every one before it was fed, once.
    fed = state()
    assert fed.last_window == window(43)
    assert fed.metrics == recomputed(window(44)).metrics


def test_a_steady_stream_announces_nothing(live):
    for records in kpis():
        deliver(records)
    assert anomalies(live) == []
    assert state().last_window == window(43)


def test_redelivery_a_late_record_and_a_report_announce_nothing_again(live):
    batches = kpis(shift_at=35, latency=2.5, seed=2)
    for records in batches:
        deliver(records)
    assert len(anomalies(live)) == 1
    before = state()
    # SQS delivers it all again (one big batch, then window by window): nothing changes.
    deliver([r for records in batches for r in records])
    for records in batches:
        deliver(records)
    assert state() == before and len(anomalies(live)) == 1
    # A record that comes late for window 36 (fed already): its rollup counts it, the
    # detectors do not see it again.
    late = {**batches[36][0], "job_id": "late-1", "latency_ms": 400.0}
    deliver([late])
    rollup = deps().store.list_rollups(AGENT, 1, window(36), window(37))[0]
    assert rollup.count == PER_WINDOW + 1
    assert state() == before
    # The report closes the newest window (it ended before now), once; a retry adds nothing.
    report = {"action": "report", "execution_id": "anomalies"}
    handler_for("refinement")(report)
    closed = state()
    assert closed.revision == before.revision + 1
    assert closed.last_window is not None and closed.last_window >= window(44)
    handler_for("refinement")(report)
    assert state() == closed and len(anomalies(live)) == 1


@pytest.mark.parametrize("killed_after", ["KPI#", "DETECT#"])
def test_a_handler_killed_between_writes_leaves_state_and_events_consistent(
    live, tmp_path, killed_after
):
    """All 45 windows in one SQS batch (a backlog): the KPIs commit first, then the detector
    state moves 16 windows a transaction with the events of those windows. A latency shift at
    window 12 is a change point in the first 16. Killed after the KPIs, no window was fed;
    killed after the first state, its event is out and 16 windows are fed. The redelivered
    batch feeds the rest: one event in all, and the state of feeding each window once."""
    records = [r for records in kpis(shift_at=12, latency=2.5, seed=3) for r in records]
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps(sqs_batch(records)))
    script = tmp_path / "killed_handler.py"
    script.write_text(KILLED_HANDLER)
    proc = subprocess.run(
        [sys.executable, str(script), str(batch), killed_after],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, (proc.stdout, proc.stderr)
    runtime.deps.cache_clear()  # a fresh container: the store as the dead one left it
    store, window_s = deps().store, deps().settings.rollup_window_s
    assert len(store.list_kpis(AGENT, 1, limit=10**6)) == len(records)
    got = store.get_detector_states([(AGENT, 1)], window_s)
    if killed_after == "KPI#":
        assert got == {} and anomalies(live) == []
    else:
        assert got[(AGENT, 1)].last_window == window(15)
        assert got[(AGENT, 1)].metrics == recomputed(window(16)).metrics
        assert len(anomalies(live)) == 1
    deliver(records)  # SQS redelivers the batch
    found = anomalies(live)
    assert [(e["kpi"], e["direction"], e["kind"], e["start"]) for e in found] == [
        ("latency_p95_ms", "up", "change-point", window(12).isoformat())
    ], found
    assert store.pending_events() == []
    assert state().last_window == window(43)
    assert state().metrics == recomputed(window(44)).metrics
