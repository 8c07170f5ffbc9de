"""A real state.db, after a real `chimera run`, poisoned or damaged, then used as an operator
uses it: `chimera status` (text and --json), `chimera run`, `chimera genomes`, `chimera serve`
in a subprocess, and the API's GET /agents and GET /runs/{id}.

- one poisoned record (a KPI whose latency is null, a run missing a field, an agent that is
  truncated JSON, an alias whose weights do not sum to 1) never takes the rest down: the
  commands exit 0, show everything else, and name the item;
- a truncated file, a garbage header, bytes overwritten in the middle, or an index that no
  longer matches its table (which passes quick_check) is refused before anything runs: exit 2,
  the file named with what to do, and no traceback.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from chimera import runtime
from chimera.settings import BUNDLED_AGENTS

from chimera_local.workflows import LambdaContext
from functions.api import handler as api

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "tests" / "events"
AGENT = "cartpole-linear"


def chimera(
    home: Path, agents: Path, *argv: str, timeout: int = 300
) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        CHIMERA_HOME=str(home),
        CHIMERA_AGENTS_DIR=str(agents),
        POWERTOOLS_LOG_LEVEL="WARNING",
    )
    return subprocess.run(
        [sys.executable, "-m", "chimera_local.cli", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A home after one real cycle of cartpole-linear (its run, KPIs, alias and genomes)."""
    root = tmp_path_factory.mktemp("pristine")
    agents = root / "agents"
    shutil.copytree(BUNDLED_AGENTS / AGENT, agents / AGENT)
    done = chimera(root / "home", agents, "run", "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    with sqlite3.connect(root / "home" / "state.db") as conn:  # every page in the main file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return root / "home", agents


@pytest.fixture
def copy(pristine: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    home, agents = pristine
    shutil.copytree(home, tmp_path / "home")
    return tmp_path / "home", agents


def sql(home: Path, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(home / "state.db") as conn:
        return conn.execute(statement, args).fetchall()


# -- poisoned records ---------------------------------------------------------------------------
def live_version(home: Path) -> int:
    ((doc,),) = sql(home, "SELECT doc FROM items WHERE pk = ?", f"ALIASES#{AGENT}")
    weights = json.loads(doc)["weights"]
    return int(max(weights, key=lambda v: (weights[v], int(v))))


def poison_kpi(home: Path) -> str:
    """The issue's record: a KPI whose latency was infinity, stored as null (the live
    version's hold-out KPI, which status shows)."""
    live = live_version(home)
    ((pk, sk),) = sql(home, "SELECT pk, sk FROM items WHERE sk LIKE ?", f"JOB#%holdout:v{live}")
    sql(home, "UPDATE items SET doc = json_set(doc, '$.latency_ms', json('null')) WHERE sk = ?", sk)
    return f"{pk}/{sk}"


def poison_run(home: Path) -> str:
    ((pk,),) = sql(home, "SELECT pk FROM items WHERE pk LIKE 'RUN#%'")
    sql(home, "UPDATE items SET doc = json_remove(doc, '$.suite') WHERE pk = ?", pk)
    return f"{pk}/RUN"


def poison_agent(home: Path) -> str:
    """An agent item written by hand, cut off mid-document."""
    sql(home, "INSERT INTO items (pk, sk, doc) VALUES ('AGENTS', 'ghost', ?)", '{"manifest": {"ag')
    return "AGENTS/ghost"


def poison_alias(home: Path) -> str:
    doc = json.dumps({"agent_id": AGENT, "weights": {"1": 0.5, "2": 0.1}, "revision": 3})
    sql(home, "UPDATE items SET doc = ? WHERE pk = ?", doc, f"ALIASES#{AGENT}")
    return f"ALIASES#{AGENT}/live"


POISONS = {"kpi": poison_kpi, "run": poison_run, "agent": poison_agent, "alias": poison_alias}


@pytest.mark.parametrize("kind", POISONS)
def test_status_goes_on_past_one_poisoned_record_and_names_it(copy, kind):
    home, agents = copy
    live = live_version(home)
    key = POISONS[kind](home)

    text = chimera(home, agents, "status")
    assert text.returncode == 0 and "Traceback" not in text.stderr, text.stderr
    assert AGENT in text.stdout and key in text.stdout, text.stdout

    as_json = chimera(home, agents, "status", "--json")
    assert as_json.returncode == 0 and "Traceback" not in as_json.stderr, as_json.stderr
    (row,) = json.loads(as_json.stdout)
    assert row["agent_id"] == AGENT
    if kind == "alias":  # the agent's own live genome is what does not read: said in its row
        assert row["live_version"] is None and key in row["problems"][0]
    else:
        assert row["live_version"] == live and row["problems"] == []
        assert key in as_json.stderr  # beside the JSON, not inside it
    if kind == "kpi":
        assert row["holdout_score"] is None  # the live hold-out KPI is the one that does not read
    if kind == "run":
        assert "last_run" not in row


def call_api(name: str, **override: Any) -> tuple[int, Any]:
    event = json.loads((EVENTS / f"api_{name}.json").read_text())
    event.update(override)
    context = LambdaContext("chimera-api", "arn:aws:lambda:us-east-1:1:function:chimera-api")
    response = api.lambda_handler(event, context)
    return response["statusCode"], json.loads(response["body"])


def test_the_api_reads_past_poisoned_records(copy, monkeypatch):
    home, agents = copy
    run_key = poison_run(home)
    poison_agent(home)
    alias_key = poison_alias(home)
    ((run_id,),) = sql(
        home, "SELECT json_extract(doc, '$.run_id') FROM items WHERE pk LIKE 'RUN#%'"
    )
    fitness = [sk for (sk,) in sql(home, "SELECT sk FROM items WHERE pk = ?", f"FIT#{run_id}")]
    sql(
        home,
        "UPDATE items SET doc = '{\"run_id\": 7' WHERE pk = ? AND sk = ?",
        f"FIT#{run_id}",
        fitness[1],
    )
    monkeypatch.setenv("CHIMERA_HOME", str(home))
    monkeypatch.setenv("CHIMERA_AGENTS_DIR", str(agents))
    runtime.deps.cache_clear()
    try:
        status, listed = call_api("list_agents")
        assert status == 200 and [a["agent_id"] for a in listed] == [AGENT]  # no ghost
        assert listed[0]["live_version"] is None and alias_key in listed[0]["problems"][0]

        status, body = call_api("get_run", path=f"/runs/{run_id}", pathParameters={"id": run_id})
        assert status == 500 and body["error"] == "CorruptStateError", body
        assert run_key in body["message"] and "suite" in body["message"]

        sql(
            home,
            "UPDATE items SET doc = json_set(doc, '$.suite', 'cartpole-v1') WHERE pk LIKE 'RUN#%'",
        )
        status, body = call_api("get_run", path=f"/runs/{run_id}", pathParameters={"id": run_id})
        assert status == 200, body
        generations = [p["generation"] for p in body["history"]]
        assert generations == [int(sk) for sk in fitness if sk != fitness[1]]
    finally:
        runtime.deps.cache_clear()


@pytest.mark.slow
def test_a_cycle_runs_past_poisoned_records(copy):
    home, agents = copy
    keys = [poison(home) for poison in (poison_kpi, poison_run, poison_agent)]
    again = chimera(home, agents, "run", "--quiet")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Traceback" not in again.stderr and "succeeded" in again.stdout
    runs = sql(home, "SELECT count(*) FROM items WHERE pk LIKE 'RUN#%'")
    assert runs == [(2,)]
    status = chimera(home, agents, "status")
    assert status.returncode == 0 and all(k in status.stdout for k in keys), status.stdout


# -- a damaged file -----------------------------------------------------------------------------
def truncated(db: Path) -> None:
    with db.open("r+b") as f:
        f.truncate(db.stat().st_size // 2)


def garbage_header(db: Path) -> None:
    with db.open("r+b") as f:
        f.write(b"this is not a database, it is a shopping list: eggs, flour, milk. " * 2)


def _pages(db: Path, name: str) -> tuple[list[int], int]:
    with sqlite3.connect(db) as conn:
        try:
            pages = conn.execute("SELECT pageno FROM dbstat WHERE name = ?", (name,)).fetchall()
        except sqlite3.OperationalError:
            pytest.skip("this SQLite has no dbstat table to find the pages with")
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    return sorted(p for (p,) in pages), size


def overwritten_middle(db: Path) -> None:
    """512 bytes of garbage over the start of the table's middle page (in use, whatever the
    run stored: the random seed of each run changes the layout)."""
    pages, size = _pages(db, "items")
    with db.open("r+b") as f:
        f.seek((pages[len(pages) // 2] - 1) * size)
        f.write(b"\0" + random.Random(6).randbytes(511))


def index_out_of_step(db: Path) -> None:
    """One index entry names a row the table does not have: every page is well formed, so
    quick_check passes; only integrity_check (index against table) finds it."""
    pages, size = _pages(db, "gsi1")
    data = bytearray(db.read_bytes())
    at = max(data.rfind(b"holdout:v2", (p - 1) * size, p * size) for p in pages)  # the sk, last
    assert at > 0
    data[at + len(b"holdout:v")] = ord("7")
    db.write_bytes(bytes(data))
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA integrity_check").fetchall() != [("ok",)]
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] > 0  # reads go on


DAMAGE = {
    "truncated": truncated,
    "garbage header": garbage_header,
    "overwritten middle": overwritten_middle,
    "index out of step": index_out_of_step,
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_state_db_is_refused_naming_the_file(copy, damage):
    home, agents = copy
    db = home / "state.db"
    DAMAGE[damage](db)
    before = db.read_bytes()
    for argv in (
        ["status"],
        ["status", "--json"],
        ["genomes", AGENT],
        ["run", "--quiet"],
        ["serve", "--port", "0"],
    ):
        done = chimera(home, agents, *argv, timeout=60)
        assert done.returncode == 2, (argv, done.returncode, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert str(db) in done.stderr and "move it aside" in done.stderr, done.stderr
        assert "succeeded" not in done.stdout
    assert db.read_bytes() == before  # refused before anything wrote to it
