"""bench/placement_bench.py at tiny sizes: the heuristic and the brute force agree on what
they compare, and the optimum is one (no timing asserted)."""

from __future__ import annotations

import importlib
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
placement_bench = importlib.import_module("placement_bench")


def test_placement_bench_prints_its_table(capsys):
    rows = placement_bench.report(jobs=3, seed=1, mixes=placement_bench.MIXES[:2])
    out = capsys.readouterr().out
    assert "mean gap" in out and "heuristic ms p50/p99" in out and "goal:" in out
    assert [r.mix for r in rows] == [m.name for m in placement_bench.MIXES[:2]]
    for row in rows:
        assert row.jobs == 3 and row.missed_deadlines == 0
        assert row.mean_gap_pct >= -1e-9 and row.worst_gap_pct >= row.mean_gap_pct - 1e-9
        assert sum(row.placements.values()) == round(row.segments * row.jobs)
        assert row.heuristic_ms[0] > 0 and row.brute_ms[0] > 0


def test_the_optimum_is_no_dearer_than_any_assignment_that_meets_the_deadline():
    bench = placement_bench
    table = bench.load_prices()
    for job in bench.generate(bench.MIXES[3], 4, seed=2):  # tight deadlines
        deadline = bench.deadline_s(table, job)
        best = bench.optimum(table, job, deadline)
        mine = bench.heuristic(table, job, deadline)
        assert best.seconds <= deadline and mine.seconds <= deadline
        assert mine.usd >= best.usd - 1e-12
        priced = {
            (p, g): bench.price(table, job, p, g) for p in bench.DEPLOYED for g in job.segments
        }
        for assignment in itertools.product(bench.DEPLOYED, repeat=len(job.segments)):
            costs = [priced[p, g] for p, g in zip(assignment, job.segments, strict=True)]
            if sum(c.seconds for c in costs) <= deadline:
                assert sum(c.usd for c in costs) >= best.usd - 1e-12
