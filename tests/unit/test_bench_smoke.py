"""The benchmarks' pieces run at tiny sizes and report like for like (structure only, no timing)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
from chimera.domain.statistics import sample_size

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


# -- bench/experiment_bench.py ------------------------------------------------------------------
experiment_bench = importlib.import_module("experiment_bench")


def test_experiment_bench_vectorized_path_is_the_modules_test():
    """Running moments merged per look, and the mSPRT evaluated in bulk, equal Moments.of on
    the same raw streams and sequential_test / welch_test on those moments."""
    from chimera.domain.statistics import Moments, sequential_test, welch_test

    rng = np.random.default_rng(0)
    raw_c = rng.lognormal(0.0, 1.0, (3, 4, 30))
    raw_t = rng.lognormal(0.0, 1.0, (3, 4, 30)) + np.array([0.0, 0.5, 3.0])[:, None, None]
    control = experiment_bench.cumulate(30, *experiment_bench.batch_moments(raw_c))
    treatment = experiment_bench.cumulate(30, *experiment_bench.batch_moments(raw_t))
    for tau in (None, 0.4):
        reject, lower, upper = experiment_bench.msprt_at_looks(
            control, treatment, alpha=0.05, kind="mean", tau=tau
        )
        welch_p = experiment_bench.welch_p_at_looks(control, treatment)
        for e in range(3):
            for look in range(4):
                c = Moments.of(raw_c[e, : look + 1].ravel())
                t = Moments.of(raw_t[e, : look + 1].ravel())
                assert control[0][e, look] == c.n and treatment[0][e, look] == t.n
                assert control[1][e, look] == pytest.approx(c.mean, rel=1e-12)
                assert control[2][e, look] == pytest.approx(c.m2, rel=1e-9)
                r = sequential_test(c, t, alpha=0.05, kind="mean", tau=tau)
                assert reject[e, look] == (r.p_value <= 0.05)
                assert (lower[e, look], upper[e, look]) == pytest.approx((r.lower, r.upper))
                assert welch_p[e, look] == pytest.approx(welch_test(c, t, alpha=0.05).p_value)
    assert 0 < reject.sum() < reject.size and reject[2, -1]  # both outcomes compared

    rng = np.random.default_rng(1)
    control = experiment_bench.bernoulli_arm(rng, 4, 3, 40, 0.1)
    treatment = experiment_bench.bernoulli_arm(rng, 4, 3, 40, 0.3)
    reject, lower, upper = experiment_bench.msprt_at_looks(
        control, treatment, alpha=0.05, kind="proportion", tau=None
    )
    for e in range(4):
        for look in range(3):
            c, t = (
                Moments(int(a[0][e, look]), a[1][e, look], a[2][e, look])
                for a in (control, treatment)
            )
            r = sequential_test(c, t, alpha=0.05, kind="proportion")
            assert reject[e, look] == (r.p_value <= 0.05)
            assert (lower[e, look], upper[e, look]) == pytest.approx((r.lower, r.upper))
    assert 0 < reject.sum() < reject.size


def test_experiment_bench_aa_rows_count_every_experiment(capsys):
    rows = experiment_bench.report_aa(experiments=200, looks=3)
    assert "A/A" in capsys.readouterr().out
    assert len(rows) == len(experiment_bench.aa_cases())
    for row in rows:
        assert row.experiments == 200 and row.looks == 3
        assert 0.0 <= row.fpr <= 1.0 and 0.0 <= row.peeking_fpr <= 1.0
        assert row.se == pytest.approx((row.fpr * (1 - row.fpr) / 200) ** 0.5)
        assert row.fpr * 200 == pytest.approx(round(row.fpr * 200))  # a count of experiments


def test_experiment_bench_size_rows_compare_equal_power(capsys):
    rows = experiment_bench.report_size(
        experiments=300, batch=20, tau_cs=(1.0, 2.0), effects=(1.0, 2.0)
    )
    out = capsys.readouterr().out
    assert "sample size" in out and "goal" in out
    assert len(rows) == 4
    fixed = {r.fixed_n for r in rows}
    assert fixed == {393}  # sample_size(alpha 0.05, power 0.8, MDE 0.2 sd)
    for r in rows:
        assert r.cap_n % 20 == 0 and 0 < r.avg_n <= r.cap_n
        if r.effect == 1.0:
            assert r.seq_power >= 0.8 or r.cap_n >= 4 * 393  # capped where power reaches 0.8
        assert r.ratio == pytest.approx(r.avg_n / 393)


def test_experiment_bench_sprt_rows_compare_equal_alpha_and_power(capsys):
    (summary,) = experiment_bench.report_sprt(experiments=400, batches=(20,))
    out = capsys.readouterr().out
    assert "SPRT" in out and "goal" in out
    assert [r.effect for r in summary.rows] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert summary.fixed_n == sample_size(
        alpha=0.05, power=summary.power, mde=0.2, sd=1.0, two_sided=False
    )
    assert summary.row(0.0).rejected <= 0.05 + 3 * (0.05 * 0.95 / 400) ** 0.5  # its size
    assert summary.row(1.0).avg_n >= summary.bound_n * 0.9  # nothing beats the bound by much
    for r in summary.rows:
        assert 20 <= r.avg_n <= 4 * 310
    assert summary.even_mix == pytest.approx(
        (summary.row(0.0).avg_n + summary.row(1.0).avg_n) / 2 / summary.fixed_n
    )


def test_changepoint_bench_scores_every_detector_on_the_same_streams(capsys):
    changepoint_bench = importlib.import_module("changepoint_bench")
    rows = changepoint_bench.report(count=4, seed=3, min_len=300, max_len=320)
    out = capsys.readouterr().out
    assert "offline" in out and "delay" in out and "ruptures" in out
    streams = changepoint_bench.make_streams(4, 3, 300, 320)
    true = sum(len(s.changes) for s in streams)
    assert [r.detector for r in rows] == list(changepoint_bench.DETECTORS)
    for r in rows:
        assert r.streams == 4 and r.true == true and 0 <= r.matched <= min(r.true, r.reported)
        assert sum(t for _, t in r.found_by.values()) == true
        assert (r.mode == "online") == bool(r.delays) or r.matched == 0
        assert all(d >= -changepoint_bench.TOL_BEFORE for d in r.delays)
    # each true change lies MIN_GAP from the ends and from the next; a stream is seeded
    for s in streams:
        idx = [0, *(c.index for c in s.changes), len(s.values)]
        assert all(b - a >= changepoint_bench.MIN_GAP for a, b in zip(idx, idx[1:], strict=False))
    again = changepoint_bench.make_streams(4, 3, 300, 320)
    assert all(np.array_equal(a.values, b.values) for a, b in zip(streams, again, strict=True))


def test_changepoint_bench_matches_each_true_change_once():
    changepoint_bench = importlib.import_module("changepoint_bench")
    change = changepoint_bench.Change
    changes = [change(100, "mean", 2.0), change(160, "mean", 1.0)]
    # two reports near the first change: one matches it, the other is a false alarm; the
    # second change is reported 11 after (outside the tolerance): a miss
    hits = changepoint_bench.match(changes, [(98, 104), (103, 109), (171, 175)])
    assert hits == [(changes[0], 104), None]


# -- bench/ingest_bench.py ---------------------------------------------------------------------
ingest_bench = importlib.import_module("ingest_bench")


def test_ingest_bench_rows_store_each_record_once_on_every_path(tmp_path, capsys):
    rows = ingest_bench.report_sqlite(total=60, sizes=(25,), folder=tmp_path)
    assert [(r.path, r.new) for r in rows] == [
        ("ingest + rollups (SQLite)", 60),
        ("ingest + rollups (SQLite), redelivered", 0),
        ("baseline: no rollups", 60),
        ("baseline: no rollups, redelivered", 0),
    ]
    assert [r.rolled_up for r in rows] == [60, 60, None, None]  # redelivery counted nowhere
    for row in rows:
        assert row.records == 60 and row.batch == 25
        assert row.wall_rate > 0 and row.cpu_rate > 0 and 0 < row.p50_ms <= row.p99_ms
    moto = ingest_bench.report_moto(total=12, size=5, folder=tmp_path)
    assert moto.new == 12 and moto.rolled_up == 12 and "mock" in moto.path
    ingest_bench.print_rows([*rows, moto])
    assert "in rollups" in capsys.readouterr().out
