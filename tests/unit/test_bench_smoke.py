"""The benchmarks' pieces run at tiny sizes and report like for like (structure only, no timing)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
evolution_bench = importlib.import_module("evolution_bench")
sandbox_bench = importlib.import_module("sandbox_bench")


def test_engines_do_the_same_work_under_the_same_cma_es(capsys):
    runs = evolution_bench.report_engines(seed=1, population=4, generations=2, episodes=1)
    assert "1) engines" in capsys.readouterr().out
    assert len(runs) == 3
    assert len({(r.generations, r.evaluations, r.steps) for r in runs}) == 1
    assert runs[0].evaluations == 8
    for run in runs:
        assert run.wall_s > 0 and run.evals_per_s > 0 and run.steps_per_s > 0


def test_ga_and_easimple_start_alike_on_the_same_engine(capsys):
    ours, theirs = evolution_bench.report_search(seeds=[1], population=6, max_gens=2, episodes=1)
    assert "eaSimple" in capsys.readouterr().out
    (a,), (b,) = ours, theirs
    assert 1 <= a.generations <= 2 and 1 <= b.generations <= 2
    assert a.evaluations == 6 * a.generations
    assert 6 <= b.evaluations <= 6 * b.generations  # eaSimple re-evaluates changed ones only
    assert a.wall_s > 0 and b.wall_s > 0 and 0 <= a.eval_s <= a.wall_s


def test_sandbox_cost_compares_equal_work(capsys):
    (row,) = sandbox_bench.report((4,), steps=10)
    assert "slowdown" in capsys.readouterr().out
    assert row.steps == 4 * 10
    assert row.slowdown > 0 and row.wasm_rate > 0 and row.numpy_rate > 0
    assert row.same_trajectories


@pytest.mark.parametrize("policy", ["numpy", "wasm"])
def test_scalar_engine_plays_the_suites_episodes(policy):
    genomes = [[0.0, 0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]]
    batched = evolution_bench.BatchedWasm(episodes=2).evaluate(np.array(genomes), seed=3)
    scalar = evolution_bench.Scalar(episodes=2, policy=policy).evaluate(np.array(genomes), seed=3)
    np.testing.assert_array_equal(batched[0], scalar[0])
    assert batched[1] == scalar[1]
