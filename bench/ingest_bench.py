"""KPI ingestion at volume: validated records per second per core, and batch latency.

Each batch goes through `refinement.ingest` as the API and the SQS edge call it: the records
arrive as dicts (parsed JSON) and are validated into an `IngestRequest` inside the timed
section, checked against the store (`_check_known`: known agent and genome version, not in
the future), then stored by `put_kpis` with their rollups (time windows and experiment arms)
in chunked transactions. One process, one thread: records/s of wall time and of CPU time are
per core. Batch latency p50/p99 is each batch's wall time (p99: the value at rank
floor(0.99 n) of n batches, so the largest when there are fewer than 100).

Beside it, in the same process and on a fresh store, the baseline: the previous path (the
same validation and checks, then one put-if-absent per record, no rollups) - a copy of the
loop put_kpis had before rollups - so the price of the rollups is visible.

The traffic: 2 genome versions, ~15 % failures, 30 % routed by an experiment (3 steps), one
record every 0.2 s of recorded time (a 300 s window holds ~1,500 records), batches of
consecutive records as a queue delivers them; the local store (SQLite, WAL, synchronous
NORMAL) under a temporary folder. A last row runs moto's in-memory DynamoDB at a small size:
a mock (its transactions deep-copy the table), not a figure for the cloud.

Goals (issue 7): >= 20,000 validated records/s/core, p99 batch <= 100 ms.

Run: .venv/bin/python bench/ingest_bench.py [--records 50000] [--sizes 10,100,1000]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from chimera.adapters.kv import KPI_TTL_S, Put, _iso
from chimera.domain.models import Genome
from chimera.domain.rollups import merge_all
from chimera.services import discovery, refinement
from chimera.services.contracts import DiscoverRequest, IngestRequest
from chimera.services.deps import Deps
from chimera.settings import BUNDLED_AGENTS, LocalSettings

from chimera_local.composition import local_deps

AGENT = "cartpole-linear"
GOAL_RATE = 20_000
GOAL_P99_MS = 100.0


@dataclass
class Row:
    path: str
    batch: int
    records: int
    new: int
    wall_rate: float  # validated records per second of wall time
    cpu_rate: float  # per second of CPU time (one thread: per core)
    p50_ms: float
    p99_ms: float
    rolled_up: int | None = None  # records the stored window rollups count (None: no rollups)


def kpi_dicts(n: int, seed: int = 0, start: datetime | None = None) -> list[dict[str, Any]]:
    """Records as the edge receives them (parsed JSON), one every 0.2 s from `start`."""
    rnd = random.Random(seed)
    t0 = start or datetime.now(UTC) - timedelta(seconds=0.2 * n + 60)
    out = []
    for i in range(n):
        ok = rnd.random() > 0.15
        routed = rnd.random() < 0.3
        out.append(
            {
                "agent_id": AGENT,
                "genome_version": 1 + i % 2,
                "job_id": f"job-{seed}-{i}",
                "suite": "cartpole-v1",
                "success": ok,
                "score": round(rnd.uniform(0, 500), 3) if ok else None,
                "latency_ms": round(rnd.lognormvariate(0.0, 0.8), 4),
                "fuel": rnd.randrange(1_000, 1_000_000),
                "cost_usd": 0.0,
                "reason": None if ok else "out-of-fuel",
                "recorded_at": (t0 + timedelta(seconds=0.2 * i)).isoformat(),
                "experiment_id": "canary-1" if routed else None,
                "step": i % 3 if routed else None,
            }
        )
    return out


def live_deps(home: Path) -> Deps:
    """The local composition on a fresh home, cartpole-linear discovered, genomes 1 and 2."""
    agents = home / "agents"
    shutil.copytree(BUNDLED_AGENTS / AGENT, agents / AGENT)
    deps = local_deps(LocalSettings(home=home / "state", agents_dir=agents))
    discovery.discover(DiscoverRequest(execution_id="bench"), deps)
    genes = deps.store.get_agent(AGENT).manifest.default_genes()
    for version in (1, 2):
        deps.store.add_genome(Genome(agent_id=AGENT, version=version, genes=genes))
    return deps


def ingest(batch: list[dict[str, Any]], deps: Deps) -> int:
    """Today's path: the edge's validation, then refinement.ingest (rollups included)."""
    return refinement.ingest(IngestRequest.model_validate({"records": batch}), deps).new


def baseline(batch: list[dict[str, Any]], deps: Deps) -> int:
    """The previous path: the same validation and checks, then put_kpis as it was before
    rollups (one put-if-absent per record, nothing else)."""
    req = IngestRequest.model_validate({"records": batch})
    refinement._check_known(req.records, deps)
    store: Any = deps.store
    new = 0
    for r in req.records:
        new += store._put_if_absent(
            Put(
                f"KPI#{r.agent_id}",
                f"JOB#{r.job_id}",
                r.model_dump_json(),
                ttl=int(r.recorded_at.timestamp()) + KPI_TTL_S,
                gsi1=(
                    f"KPI#{r.agent_id}#v{r.genome_version:08d}",
                    f"{_iso(r.recorded_at)}#{r.job_id}",
                ),
            )
        )
    return new


def measure(
    path: str,
    run: Callable[[list[dict[str, Any]], Deps], int],
    deps: Deps,
    records: list[dict[str, Any]],
    size: int,
) -> Row:
    batches = [records[i : i + size] for i in range(0, len(records), size)]
    times, new = [], 0
    # The harness's own records (all the batches at once) out of the cyclic collector's
    # sight: a Lambda holds one batch, not all of them.
    gc.collect()
    gc.freeze()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for batch in batches:
        t = time.perf_counter()
        new += run(batch, deps)
        times.append(time.perf_counter() - t)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    gc.unfreeze()
    times.sort()
    return Row(
        path=path,
        batch=size,
        records=len(records),
        new=new,
        wall_rate=len(records) / wall,
        cpu_rate=len(records) / cpu if cpu > 0 else float("nan"),
        p50_ms=1000 * statistics.median(times),
        p99_ms=1000 * times[min(len(times) - 1, int(0.99 * len(times)))],
    )


def rolled_up(deps: Deps) -> int:
    merged = merge_all(deps.store.list_rollups(AGENT))
    return 0 if merged is None else merged.count


def print_rows(rows: Sequence[Row]) -> None:
    print(
        f"{'path':<40} {'batch':>6} {'records':>8} {'new':>7} {'rec/s wall':>11} "
        f"{'rec/s CPU':>10} {'p50 ms':>8} {'p99 ms':>8} {'in rollups':>10}"
    )
    for r in rows:
        print(
            f"{r.path:<40} {r.batch:>6} {r.records:>8} {r.new:>7} {r.wall_rate:>11,.0f} "
            f"{r.cpu_rate:>10,.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{'-' if r.rolled_up is None else r.rolled_up:>10}"
        )


def report_sqlite(total: int, sizes: Sequence[int], folder: Path) -> list[Row]:
    rows = []
    for size in sizes:
        for path, run in (
            ("ingest + rollups (SQLite)", ingest),
            ("baseline: no rollups", baseline),
        ):
            deps = live_deps(folder / f"{path[:6]}-{size}")
            records = kpi_dicts(total, seed=size)
            first = measure(path, run, deps, records, size)
            again = measure(path + ", redelivered", run, deps, records, size)
            if run is ingest:  # what the rollups hold after both: every record, once
                first.rolled_up = again.rolled_up = rolled_up(deps)
            rows += [first, again]
            deps.store.close()  # type: ignore[attr-defined]
    return rows


def report_moto(total: int, size: int, folder: Path) -> Row:
    """refinement.ingest on DynamoDbStore over moto (an in-memory mock, not the cloud)."""
    import boto3
    from chimera.adapters.aws.dynamodb_store import DynamoDbStore
    from chimera.adapters.aws.s3_blobs import S3Blobs
    from moto import mock_aws

    # The table as infra_cdk declares it (the contract tests' set-up), loaded by path.
    spec = importlib.util.spec_from_file_location(
        "contract_tables", Path(__file__).resolve().parents[1] / "tests/contract/conftest.py"
    )
    assert spec is not None and spec.loader is not None
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)

    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        tables.create_table(client, tables.TABLE)
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=tables.BUCKET)
        local = live_deps(folder / "moto")
        store = DynamoDbStore(tables.TABLE, client, S3Blobs(tables.BUCKET, "artifacts/", s3))
        store.put_agent(local.store.get_agent(AGENT))
        for genome in local.store.list_genomes(AGENT):
            store.add_genome(genome)
        deps = Deps(
            store=store,
            artifacts=local.artifacts,
            bus=local.bus,
            sandbox=local.sandbox,
            settings=local.settings,
        )
        row = measure(
            "ingest + rollups (moto: in-memory mock)", ingest, deps, kpi_dicts(total), size
        )
        row.rolled_up = rolled_up(deps)
        return row


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=50_000, help="records per row")
    parser.add_argument("--sizes", default="10,100,1000", help="batch sizes")
    parser.add_argument("--moto-records", type=int, default=400)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        rows = report_sqlite(args.records, sizes, Path(tmp))
        rows.append(report_moto(args.moto_records, 100, Path(tmp)))
    print_rows(rows)
    best = [r for r in rows if r.path == "ingest + rollups (SQLite)"]
    for r in best:
        ok = r.cpu_rate >= GOAL_RATE and r.p99_ms <= GOAL_P99_MS
        print(
            f"batch {r.batch:>5}: {r.cpu_rate:,.0f} rec/s/core, p99 {r.p99_ms:.1f} ms "
            f"(goal >= {GOAL_RATE:,} and <= {GOAL_P99_MS:.0f} ms: {'met' if ok else 'NOT met'})"
        )


if __name__ == "__main__":
    main()
