"""KPI ingestion at volume through the refinement Lambda handler, as SQS delivers it: an SQS
batch of EventBridge KpiRecorded envelopes is stored in as few transactions as the chunking
allows, a poisoned or refused message fails alone, and a handler SIGKILLed after its first
committed chunk loses nothing and stores nothing twice when the batch is redelivered.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from chimera import runtime
from chimera.domain.errors import UnavailableError
from chimera.domain.models import KpiRecord
from chimera.domain.rollups import RELATIVE_ACCURACY, floor_window
from chimera.runtime import deps
from live_agents import start_live_cartpole

from chimera_local.workflows import handler_for

AGENT = "cartpole-linear"
REPO = Path(__file__).resolve().parents[2]
TEMPLATE = json.loads((REPO / "tests" / "events" / "sqs_kpi_batch.json").read_text())["Records"][0]

# Runs the handler in a process of its own and SIGKILLs it right after its first commit that
# stored KPIs: no exception, no cleanup, the way a Lambda container dies.
KILLED_HANDLER = """
import json, os, signal, sys
from chimera.runtime import deps
from chimera_local.workflows import handler_for

store = deps().store
real = store._commit

def commit(writes):
    real(writes)
    if any(w.pk.startswith("KPI#") for w in writes):
        os.kill(os.getpid(), signal.SIGKILL)

store._commit = commit
handler_for("refinement")(json.loads(open(sys.argv[1]).read()))
print("the handler finished: it was never killed")
"""


@pytest.fixture
def live(home, only_cartpole):
    """cartpole-linear live on genome v1, through the handlers as the cycle does it."""
    start_live_cartpole("ingest-volume")
    return runtime.deps().store


def kpi_dicts(n: int, seed: int = 1, prefix: str = "job") -> list[dict[str, Any]]:
    """Records as a producer sends them: over the last 40 minutes (several windows), some
    failed, a third routed by an experiment."""
    rnd = random.Random(seed)
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        ok = rnd.random() > 0.2
        routed = rnd.random() < 0.3
        out.append(
            {
                "agent_id": AGENT,
                "genome_version": 1,
                "job_id": f"{prefix}-{i}",
                "suite": "cartpole-v1",
                "success": ok,
                "score": rnd.uniform(0, 500) if ok else None,
                "latency_ms": rnd.lognormvariate(0.0, 1.0),
                "fuel": rnd.randrange(1, 10**6),
                "cost_usd": 0.0,
                "reason": None if ok else "trap: unreachable",
                "recorded_at": (now - timedelta(seconds=rnd.uniform(5, 2400))).isoformat(),
                "experiment_id": "canary-1" if routed else None,
                "step": rnd.randrange(3) if routed else None,
            }
        )
    return out


def message(message_id: str, record: dict[str, Any] | None = None, body: str | None = None):
    envelope = json.loads(TEMPLATE["body"])
    if record is not None:
        envelope["detail"]["record"] = record
    return {**TEMPLATE, "messageId": message_id, "body": body or json.dumps(envelope)}


def sqs_batch(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Records": [message(f"m-{r['job_id']}", r) for r in records]}


def stored(store: Any) -> list[KpiRecord]:
    return store.list_kpis(AGENT, genome_version=1, limit=10**6)


def assert_rollups_match(store: Any, records: list[KpiRecord]) -> None:
    """Every window and arm rollup equals the recomputation from `records`."""
    window_s = deps().settings.rollup_window_s
    windows: dict[Any, list[KpiRecord]] = defaultdict(list)
    arms: dict[Any, list[KpiRecord]] = defaultdict(list)
    for r in records:
        windows[floor_window(r.recorded_at, window_s)].append(r)
        if r.experiment_id is not None:
            arms[r.step].append(r)
    rollups = store.list_rollups(AGENT, genome_version=1)
    assert [r.window_start for r in rollups] == sorted(windows)
    arm_rollups = store.experiment_rollups("canary-1")
    assert sorted(a.step for a in arm_rollups) == sorted(arms)
    for rollup, recs in [
        *((r, windows[r.window_start]) for r in rollups),
        *((a, arms[a.step]) for a in arm_rollups),
    ]:
        assert rollup.count == len(recs)
        assert rollup.failures == sum(not r.success for r in recs)
        scores = np.array([r.score for r in recs if r.success], dtype=float)
        assert rollup.score.n == len(scores)
        if len(scores) > 1:
            assert rollup.score.mean == pytest.approx(scores.mean(), rel=1e-9)
            assert rollup.score.variance == pytest.approx(scores.var(ddof=1), rel=1e-9)
        latencies = np.array([r.latency_ms for r in recs])
        for q in (0.5, 0.95, 0.99):
            truth = float(np.quantile(latencies, q, method="lower"))
            assert abs(rollup.latency_quantile(q) - truth) <= RELATIVE_ACCURACY * truth


def kpi_commits(store: Any) -> list[int]:
    """Counts the KPIs of each commit the store makes from now on."""
    real, counts = store._commit, []

    def commit(writes: Any) -> None:
        real(writes)
        counts.append(sum(w.pk.startswith("KPI#") for w in writes))

    store._commit = commit
    return counts


# -- a handler killed mid-batch ---------------------------------------------------------------
def test_a_handler_killed_after_its_first_chunk_loses_nothing_and_stores_nothing_twice(
    live, tmp_path
):
    records = kpi_dicts(live.kpi_txn_items * 5 // 2)  # chunks: 2,000 items on SQLite
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps(sqs_batch(records)))
    script = tmp_path / "killed_handler.py"
    script.write_text(KILLED_HANDLER)
    proc = subprocess.run(
        [sys.executable, str(script), str(batch)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, (proc.stdout, proc.stderr)
    runtime.deps.cache_clear()  # a fresh container: the store as the dead one left it
    store = deps().store
    first = stored(store)
    assert 0 < len(first) <= store.kpi_txn_items < len(records)  # one whole chunk, no more
    assert_rollups_match(store, first)  # its rollups committed with it, nothing else
    # SQS redelivers the whole batch (the dead invocation never answered).
    assert handler_for("refinement")(json.loads(batch.read_text())) == {"batchItemFailures": []}
    kept = stored(store)
    assert sorted(k.job_id for k in kept) == sorted(r["job_id"] for r in records)
    assert_rollups_match(store, kept)
    # And once more (an at-least-once queue): nothing changes.
    before = store.list_rollups(AGENT), store.experiment_rollups("canary-1")
    assert handler_for("refinement")(json.loads(batch.read_text())) == {"batchItemFailures": []}
    assert (store.list_rollups(AGENT), store.experiment_rollups("canary-1")) == before


# -- partial batches ----------------------------------------------------------------------------
def test_a_batch_is_stored_in_few_transactions_and_poisoned_messages_fail_alone(live):
    good = kpi_dicts(160, seed=2)
    future = kpi_dicts(1, seed=3, prefix="future")[0]
    future["recorded_at"] = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    unknown_agent = {**kpi_dicts(1, seed=4, prefix="stranger")[0], "agent_id": "nobody"}
    unknown_version = {**kpi_dicts(1, seed=5, prefix="v99")[0], "genome_version": 99}
    no_reason = {**kpi_dicts(1, seed=6, prefix="noreason")[0], "success": False, "reason": None}
    negative = {**kpi_dicts(1, seed=7, prefix="negative")[0], "latency_ms": -1.0}
    bad = [
        message("bad-not-json", body="{not json"),
        message("bad-no-record", body=json.dumps({"detail-type": "KpiRecorded", "detail": {}})),
        message("bad-future", future),
        message("bad-unknown-agent", unknown_agent),
        message("bad-unknown-version", unknown_version),
        message("bad-no-reason", no_reason),
        message("bad-negative-latency", negative),
    ]
    batch = sqs_batch(good)
    for i, poisoned in enumerate(bad):  # spread through the batch
        batch["Records"].insert(i * 25, poisoned)
    batch["Records"].append(batch["Records"][3])  # a message delivered twice in one batch
    store = deps().store
    commits = kpi_commits(store)
    answer = handler_for("refinement")(batch)
    assert [f["itemIdentifier"] for f in answer["batchItemFailures"]] == [
        m["messageId"] for m in bad
    ]  # each alone, in the batch's order
    kept = stored(store)
    assert sorted(k.job_id for k in kept) == sorted(r["job_id"] for r in good)
    assert_rollups_match(store, kept)
    # 160 records in one transaction with their rollups (SQLite: up to 2,000 items), not 160
    # (the detectors' state, when the batch closes a window, is a write of its own).
    assert [n for n in commits if n] == [160]


def test_a_store_failure_isolates_the_message_at_fault(live):
    """When the batch's write fails (throttled on one item), each message is stored on its
    own: only the one whose write keeps failing is reported, SQS retries it alone."""
    records = kpi_dicts(30, seed=8)
    store = deps().store
    real = store._commit

    def throttled_on_one(writes: Any) -> None:
        if any(w.sk == "JOB#job-7" for w in writes):
            raise UnavailableError("ProvisionedThroughputExceeded on KPI#cartpole-linear")
        real(writes)

    store._commit = throttled_on_one
    answer = handler_for("refinement")(sqs_batch(records))
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-job-7"}]}
    kept = stored(store)
    assert sorted(k.job_id for k in kept) == sorted(
        r["job_id"] for r in records if r["job_id"] != "job-7"
    )
    assert_rollups_match(store, kept)
    store._commit = real  # the throttling passes; SQS redelivers the failed message
    assert handler_for("refinement")(sqs_batch([records[7]])) == {"batchItemFailures": []}
    assert_rollups_match(store, stored(store))
    assert len(stored(store)) == 30
