"""Torch twins: checked against the WASM module before use, refused on any disagreement, and
giving the WASM evaluation path's fitnesses for the same genomes and seeds.

The modules are the bundled agents as the sandbox runs them, and hand-written WAT ports of
the same policy with one bug each (tests/hostile/linear_wat.py). Tolerance of the check:
actions equal; raw outputs within 1e-5 relative and of the same sign.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from chimera.adapters.sandbox import Sandbox
from chimera.domain.models import AgentManifest
from chimera.domain.suites import CartPole, get_suite
from chimera.settings import BUNDLED_AGENTS

from gpu_jobs.twins import (
    RTOL,
    NoTwinError,
    TwinMismatchError,
    check_twin,
    evaluate_population_torch,
    twin_for,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hostile"))
from linear_wat import TWISTS, linear_agent  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
AGENTS = {"cartpole-linear": (4, True), "breast-cancer-linear": (30, False)}


def manifest(agent: str) -> AgentManifest:
    return AgentManifest.model_validate_json((BUNDLED_AGENTS / agent / "manifest.json").read_text())


def module(agent: str, wasm: bytes | None = None):
    m = manifest(agent)
    wasm = wasm if wasm is not None else (BUNDLED_AGENTS / agent / m.module).read_bytes()
    return Sandbox().instantiate(wasm, m.limits)


def genomes(agent: str, n: int, seed: int) -> np.ndarray:
    m = manifest(agent)
    low, high = (np.array([getattr(g, k) for g in m.genome]) for k in ("low", "high"))
    rng = np.random.default_rng(seed)
    g = rng.uniform(low, high, size=(n, len(low)))
    if agent == "cartpole-linear":  # half of them near a balancer, so episodes run long
        g[: n // 2] = np.array([0.1, 0.5, 10.0, 2.0, 0.0]) + rng.normal(0, 0.3, (n // 2, 5))
    return g.astype(np.float32)


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_bundled_modules_pass_the_check_bit_for_bit(agent):
    checked = check_twin(manifest(agent), module(agent), seed=7)
    assert checked.twin.family == manifest(agent).twin
    assert checked.samples == 64 * 64 + 64 * 4
    assert checked.max_abs_diff == 0.0  # the C source's float32 order, reproduced


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_a_correct_hand_written_port_passes_too(agent):
    obs_len, step = AGENTS[agent]
    checked = check_twin(manifest(agent), module(agent, linear_agent(obs_len, step=step)))
    assert checked.max_abs_diff <= RTOL


@pytest.mark.parametrize(
    ("agent", "twist", "layout"),
    [
        ("cartpole-linear", "flip-sign", "shared"),
        ("cartpole-linear", "bias-first", "shared"),
        ("cartpole-linear", "shared-only", "per-agent"),
        ("cartpole-linear", "offset", "shared"),
        ("breast-cancer-linear", "bias-first", "shared"),
        ("breast-cancer-linear", "shared-only", "per-agent"),
        ("breast-cancer-linear", "offset", "shared"),
    ],
)
def test_a_module_that_disagrees_refuses_the_twin(agent, twist, layout):
    obs_len, step = AGENTS[agent]
    wasm = module(agent, linear_agent(obs_len, step=step, twist=twist))
    with pytest.raises(TwinMismatchError) as caught:
        check_twin(manifest(agent), wasm)
    err = caught.value
    assert err.agent_id == agent and err.layout == layout
    assert f"agent {agent}: twin refused" in str(err)
    assert err.genome.shape == (obs_len + 1,) and err.observation.shape == (obs_len,)
    assert err.wasm != err.twin
    if layout == "shared":  # the first mismatching input, reproduced alone
        again = module(agent, linear_agent(obs_len, step=step, twist=twist))
        again.prepare(err.genome[None], n_obs=1, shared=True)
        assert float(again.act(err.observation[None])[0, 0]) == err.wasm


def test_every_twist_is_exercised():
    assert set(TWISTS) == {"flip-sign", "bias-first", "shared-only", "offset"}


def test_an_agent_without_a_twin_has_no_gpu_path():
    bare = manifest("cartpole-linear").model_copy(update={"twin": None})
    with pytest.raises(NoTwinError, match="cartpole-linear declares no twin"):
        check_twin(bare, module("cartpole-linear"))


def test_a_twin_that_cannot_fit_the_genome_names_the_field():
    m = manifest("cartpole-linear")
    wrong = m.model_copy(update={"genome": m.genome[:4]})
    with pytest.raises(ValueError, match="^twin: agent cartpole-linear"):
        twin_for(wrong)


@pytest.mark.parametrize("split", ["train", "holdout"])
def test_cartpole_fitness_equals_the_wasm_path(split):
    """The suite over the sandboxed module (what evaluate_shard and the hold-out run) and the
    twin over torch CartPole: same fitness, score, per-episode returns and step count."""
    agent = "cartpole-linear"
    suite = CartPole(train_episodes=12, holdout_episodes=30)
    g = genomes(agent, 24, seed=11)
    checked = check_twin(manifest(agent), module(agent))
    for seed in (0, 987_654_321):
        wasm = suite.evaluate(module(agent), g, seed=seed, split=split)
        twin = evaluate_population_torch(checked, suite, g, seed=seed, split=split)
        np.testing.assert_array_equal(twin.fitness, wasm.fitness)
        np.testing.assert_array_equal(twin.score, wasm.score)
        np.testing.assert_array_equal(twin.items, wasm.items)
        assert twin.steps == wasm.steps and twin.failures == wasm.failures == {}
        assert wasm.fitness.max() == 500.0 and wasm.fitness.min() < 50  # long and short ones


def test_breast_cancer_fitness_equals_the_wasm_path():
    agent = "breast-cancer-linear"
    suite = get_suite("breast-cancer")
    g = genomes(agent, 16, seed=12)
    checked = check_twin(manifest(agent), module(agent))
    for split in ("train", "holdout"):
        wasm = suite.evaluate(module(agent), g, seed=3, split=split)
        twin = evaluate_population_torch(checked, suite, g, seed=3, split=split)
        np.testing.assert_array_equal(twin.fitness, wasm.fitness)
        np.testing.assert_array_equal(twin.items, wasm.items)
        assert twin.steps == wasm.steps


def test_evaluation_refuses_a_twin_checked_for_another_suite_or_bad_genomes():
    checked = check_twin(manifest("breast-cancer-linear"), module("breast-cancer-linear"))
    with pytest.raises(ValueError, match="^suite: the twin of breast-cancer-linear"):
        evaluate_population_torch(checked, CartPole(), np.zeros((2, 31)), seed=0)
    cart = check_twin(manifest("cartpole-linear"), module("cartpole-linear"))
    with pytest.raises(ValueError, match=r"^genomes: expected shape \(P, 5\)"):
        evaluate_population_torch(cart, CartPole(), np.zeros((2, 4)), seed=0)


def test_the_lambda_layer_never_imports_torch():
    """Importing every module of layers_shared/chimera leaves torch unloaded."""
    code = (
        "import importlib, pkgutil, sys, chimera\n"
        "for m in pkgutil.walk_packages(chimera.__path__, 'chimera.'):\n"
        "    importlib.import_module(m.name)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "False"
