"""A state.db written by the first layout opens with nothing lost (the embedded default)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

from chimera.domain.models import KpiRecord, RunStatus
from test_store_contract import agent, run

from chimera_local.blobs import FileBlobs
from chimera_local.sqlite_store import SqliteStore

V1 = """
CREATE TABLE items (pk TEXT NOT NULL, sk TEXT NOT NULL, doc TEXT NOT NULL, rev INTEGER,
  ttl INTEGER, PRIMARY KEY (pk, sk)) WITHOUT ROWID;
"""


def test_first_layout_rows_move_to_todays_keys(tmp_path):
    path = tmp_path / "state.db"
    at = datetime(2026, 11, 2, tzinfo=UTC)
    old_run = run("old").model_dump(mode="json", exclude={"revision"})
    kpi = KpiRecord(
        agent_id="demo",
        genome_version=2,
        job_id="j1",
        suite="s",
        success=True,
        score=1.0,
        latency_ms=1.0,
        fuel=1,
        recorded_at=at,
    )
    cost = {"entry_id": "c1", "run_id": "old", "placement": "lambda", "estimated_usd": 0.5}
    with sqlite3.connect(path) as conn:
        conn.executescript(V1)
        rows = [
            ("AGENTS", "demo", agent().model_dump_json()),
            ("RUNS", "old", json.dumps(old_run)),
            ("KPIS#demo", "j1", kpi.model_dump_json()),
            # a cost of the first layout (no reader since layer 8's ledger): moved, harmless
            ("COSTS", f"{at.isoformat()}#c1", json.dumps(cost | {"at": at.isoformat()})),
        ]
        conn.executemany("INSERT INTO items (pk, sk, doc) VALUES (?, ?, ?)", rows)

    store = SqliteStore(path, FileBlobs(tmp_path / "blobs"))
    assert store.get_agent("demo").manifest == agent().manifest
    moved = store.get_run("old")
    # Its optimizer state is of the first format: closed with the reason, not resumable.
    assert moved.status == RunStatus.FAILED and "older Chimera" in (moved.decision or "")
    assert [r.run_id for r in store.list_runs("demo", status=RunStatus.FAILED)] == ["old"]
    assert store.list_runs("demo", status=RunStatus.RUNNING) == []
    assert store.list_kpis("demo", genome_version=2) == [kpi]
    assert store.put_kpis([kpi]) == 0  # still idempotent by job id
    # Opening again changes nothing.
    again = SqliteStore(path, FileBlobs(tmp_path / "blobs"))
    assert again.get_run("old") == moved and again.list_kpis("demo") == [kpi]
