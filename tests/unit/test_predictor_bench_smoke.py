"""bench/predictor_bench.py at tiny sizes: history → training → every arm runs the same search
and counts only what it evaluated (no timing)."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
predictor_bench = importlib.import_module("predictor_bench")


def test_predictor_bench_counts_evaluations_per_arm(capsys):
    result = predictor_bench.bench("cartpole-v1", seeds=2, history=3, epochs=5, cap=2)
    out = capsys.readouterr().out
    assert "R²" in out and "within 10 %" in out and "vs plain (sum)" in out
    arms = result["arms"]
    assert set(arms) == set(predictor_bench.ARMS)
    lam = predictor_bench.population_size(5)  # Layer 6's λ for 5 genes: 24
    per_generation = {"plain": lam, "pool": lam, "pool-random": lam}
    per_generation |= {"fewer": lam // 2, "fewer-random": lam // 2}
    for arm, per in per_generation.items():
        for evaluations in arms[arm]["evaluations"]:
            # Only evaluated candidates count: whole generations of `per`, at most the cap.
            assert evaluations % per == 0 and per <= evaluations <= 2 * per, (arm, evaluations)
    assert arms["plain"]["ratio"] == 1.0
    assert math.isfinite(result["r2"]) and result["r2"] <= 1.0  # held-out R², however poor
    assert 0.0 <= result["within_10pct"] <= 1.0
