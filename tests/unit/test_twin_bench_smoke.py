"""bench/twin_bench.py at tiny sizes: both sides do the same work and report it (no timing)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
twin_bench = importlib.import_module("twin_bench")


def test_twin_bench_compares_equal_work(capsys):
    (row,) = twin_bench.report((6,), episodes=2, device="cpu", rounds=2, wasm_up_to=100)
    out = capsys.readouterr().out
    assert "torch/WASM" in out and "returns differing" in out
    assert row.population == 6 and row.episodes == 2 and row.device == "cpu"
    assert row.steps >= 6 * 2  # every episode lasts at least one step
    assert row.episodes_compared == 6 * 2 * 2 and row.episodes_differing == 0
    assert row.wasm_rate > 0 and row.torch_rate > 0 and row.ratio > 0


def test_twin_bench_skips_the_wasm_side_past_its_size():
    (row,) = twin_bench.report((4,), episodes=1, device="cpu", rounds=1, wasm_up_to=2)
    assert row.wasm_rate is None and row.ratio is None and row.episodes_differing is None
    assert row.torch_rate > 0
