"""What checking state.db on open costs and catches: PRAGMA quick_check against integrity_check.

1. Cost: a state.db of N KPIs (written through SqliteStore, as ingestion writes them); each
   check timed on the same file, interleaved, median of --repeat runs (the page cache warm, as
   for a CLI command run after another).
2. What each catches: --trials copies of a smaller real state.db, each with a few bytes (4, 32
   or 512, seeded) overwritten at a random offset past the header; counted by which check
   refuses the copy, and whether plain reads still answer on a copy quick_check passes and
   integrity_check does not (the damage that let a cycle exit 0 on a failing database).

SqliteStore runs integrity_check up to FULL_CHECK_BYTES and quick_check beyond.

Run: .venv/bin/python bench/state_check_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from chimera.domain.models import KpiRecord

from chimera_local.blobs import FileBlobs
from chimera_local.sqlite_store import FULL_CHECK_BYTES, SqliteStore


def make_db(folder: Path, kpis: int) -> Path:
    store = SqliteStore(folder / "state.db", FileBlobs(folder / "blobs"))
    for start in range(0, kpis, 1000):
        store.put_kpis(
            [
                KpiRecord(
                    agent_id="bench",
                    genome_version=1 + j % 7,
                    job_id=f"job-{j}",
                    suite="cartpole-v1",
                    success=True,
                    score=float(j % 500),
                    latency_ms=1.0,
                    fuel=5000,
                )
                for j in range(start, min(start + 1000, kpis))
            ]
        )
    store.close()
    with sqlite3.connect(folder / "state.db") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return folder / "state.db"


def check(db: Path, pragma: str) -> str:
    """'ok', 'bad' (the check lists problems) or 'error' (SQLite refuses the file)."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(f"PRAGMA {pragma}").fetchall()
    except sqlite3.DatabaseError:
        return "error"
    finally:
        conn.close()
    return "ok" if rows == [("ok",)] else "bad"


def reads_answer(db: Path) -> bool:
    conn = sqlite3.connect(db)
    conn.text_factory = bytes  # as SqliteStore reads: a damaged document is the reader's
    try:
        conn.execute("SELECT pk, sk, doc FROM items").fetchall()
        conn.execute("SELECT doc FROM items WHERE gsi1pk = 'KPI#bench#v00000001'").fetchall()
    except sqlite3.DatabaseError:
        return False
    finally:
        conn.close()
    return True


def cost(db: Path, repeat: int) -> dict[str, float]:
    times: dict[str, list[float]] = {"quick_check": [], "integrity_check": []}
    for _ in range(repeat):
        for pragma in times:  # interleaved: noise falls on both
            started = time.perf_counter()
            assert check(db, pragma) == "ok"
            times[pragma].append(time.perf_counter() - started)
    return {pragma: statistics.median(t) for pragma, t in times.items()}


OUTCOMES = (
    "refused by quick_check (and integrity_check)",
    "passes quick_check, refused by integrity_check",
    "  of which plain reads still answer",
    "passes both (damage inside a document: the reader names it)",
)


def damage(db: Path, trials: int, seed: int) -> Counter[str]:
    rng = random.Random(seed)
    size = db.stat().st_size
    copy = db.with_name("damaged.db")
    outcome: Counter[str] = Counter()
    for _ in range(trials):
        shutil.copy(db, copy)
        length = rng.choice([4, 32, 512])
        with copy.open("r+b") as f:
            f.seek(rng.randrange(100, size - length))
            f.write(rng.randbytes(length))
        quick, full = check(copy, "quick_check"), check(copy, "integrity_check")
        if quick != "ok":
            outcome["refused by quick_check (and integrity_check)"] += 1
        elif full != "ok":
            outcome["passes quick_check, refused by integrity_check"] += 1
            if reads_answer(copy):
                outcome["  of which plain reads still answer"] += 1
        else:
            outcome["passes both (damage inside a document: the reader names it)"] += 1
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small files, few trials")
    args = parser.parse_args()
    sizes = [2_000, 10_000] if args.quick else [10_000, 100_000]
    repeat, trials = (3, 40) if args.quick else (7, 200)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'KPIs':>8} {'MB':>7} {'quick_check':>12} {'integrity':>10} {'ratio':>6}")
        for kpis in sizes:
            folder = Path(tmp) / str(kpis)
            folder.mkdir()
            db = make_db(folder, kpis)
            t = cost(db, repeat)
            mb = os.path.getsize(db) / 1e6
            print(
                f"{kpis:>8} {mb:>7.1f} {t['quick_check'] * 1000:>10.1f}ms "
                f"{t['integrity_check'] * 1000:>8.1f}ms "
                f"{t['integrity_check'] / t['quick_check']:>5.1f}x"
            )
        print(f"\nSqliteStore: integrity_check up to {FULL_CHECK_BYTES / 2**20:.0f} MiB\n")
        small = Path(tmp) / "small"
        small.mkdir()
        outcome = damage(make_db(small, 5_000), trials, seed=1)
        print(f"{trials} random overwrites of a {5_000}-KPI state.db:")
        for what in OUTCOMES:
            print(f"  {outcome[what]:>4}  {what}")


if __name__ == "__main__":
    main()
