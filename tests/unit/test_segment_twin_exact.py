"""The CPU twin is bit for bit the Lambda path: CartPole's state equal to gymnasium's at every
step of every episode, long ones included, and the population's returns equal to the WASM
path's, shard layout and all.

torch's own float64 sin and cos differ from numpy's in the last bit for some arguments (found
below); each test that compares bits also shows that the same comparison fails when the
twin takes torch's sin and cos, so it would catch the fix being undone.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from chimera.adapters.sandbox import Sandbox
from chimera.domain.models import AgentManifest
from chimera.domain.suites import CartPole
from chimera.settings import BUNDLED_AGENTS
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

from gpu_jobs.twins import cartpole, check_twin, evaluate_population_torch
from gpu_jobs.twins.cartpole import TorchCartPole, sin_cos, vector_reset_states

AGENT = "cartpole-linear"
BALANCER = np.array([0.1, 0.5, 10.0, 2.0, 0.0])  # keeps the pole up for all 500 steps


def torch_sin_cos(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.sin(theta), torch.cos(theta)


def manifest() -> AgentManifest:
    return AgentManifest.model_validate_json((BUNDLED_AGENTS / AGENT / "manifest.json").read_text())


def module():
    m = manifest()
    return Sandbox().instantiate((BUNDLED_AGENTS / AGENT / m.module).read_bytes(), m.limits)


def population(n: int, seed: int) -> np.ndarray:
    """Half near the balancer (episodes of hundreds of steps), half anywhere in the bounds."""
    rng = np.random.default_rng(seed)
    g = rng.uniform(-1.0, 1.0, size=(n, 5)) * np.array([g.high for g in manifest().genome])
    g[: n // 2] = BALANCER + rng.normal(0.0, 0.3, size=(n // 2, 5))
    return g.astype(np.float32)


def push(genes: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """The bundled agent's policy in float32, the C source's order."""
    v = genes[:, 4].copy()
    for i in range(4):
        v = (v + genes[:, i] * obs[:, i]).astype(np.float32)
    return v > 0


def first_divergence(genes: np.ndarray, seed: int) -> tuple[int, int] | None:
    """Play CartPoleVectorEnv and the torch twin side by side, one episode per genome, and
    return the first (step, episode) whose float64 state differs in any bit (None: none)."""
    n = len(genes)
    env = CartPoleVectorEnv(num_envs=n, max_episode_steps=500)
    try:
        obs, _ = env.reset(seed=seed)
        twin = TorchCartPole(vector_reset_states(seed, n))
        alive = np.ones(n, dtype=bool)
        for t in range(1, 501):
            action = push(genes, obs)
            obs, _, terminated, truncated, _ = env.step(action.astype(np.int64))
            _, t_term, t_trunc = twin.step(torch.as_tensor(action))
            state = twin.state.numpy()
            # gymnasium auto-resets a finished episode at its next step: compare running ones
            differs = alive & np.any(state != env.state.T, axis=1)
            if differs.any():
                return t, int(np.flatnonzero(differs)[0])
            np.testing.assert_array_equal(t_term.numpy()[alive], terminated[alive])
            np.testing.assert_array_equal(t_trunc.numpy()[alive], truncated[alive])
            alive &= ~(terminated | truncated)
            if not alive.any():
                return None
        return None
    finally:
        env.close()


def test_torch_sin_and_cos_differ_from_numpy_where_the_twin_does_not():
    x = torch.as_tensor(np.random.default_rng(0).uniform(-0.25, 0.25, 200_000))
    sin_t, cos_t = torch_sin_cos(x)
    sin_n, cos_n = np.sin(x.numpy()), np.cos(x.numpy())
    assert (sin_t.numpy() != sin_n).sum() > 0 and (cos_t.numpy() != cos_n).sum() > 0
    sin_c, cos_c = sin_cos(x)
    np.testing.assert_array_equal(sin_c.numpy(), sin_n)
    np.testing.assert_array_equal(cos_c.numpy(), cos_n)
    assert sin_c.dtype == torch.float64 and sin_c.device.type == "cpu"


def test_cpu_twin_equals_gymnasium_bit_for_bit_through_long_episodes(monkeypatch):
    genes = np.repeat(population(64, seed=5), 8, axis=0)  # 512 episodes, most of them long
    for seed in (0, 1, 2, 77, 123_456):
        assert first_divergence(genes, seed) is None, seed
    # The same comparison catches torch's own sin and cos.
    monkeypatch.setattr(cartpole, "sin_cos", torch_sin_cos)
    assert any(first_divergence(genes, seed) is not None for seed in (0, 1, 2, 77, 123_456))


@pytest.mark.parametrize("blocks", [None, [10, 10, 4], [7, 17]])
def test_population_returns_equal_the_wasm_path_per_shard(blocks):
    """evaluate_shard runs the suite once per shard, each on its own vector env reset with
    the generation's seed; the twin with the same blocks gives every candidate the same
    returns, episode for episode."""
    suite = CartPole(train_episodes=20)
    g = population(24, seed=11)
    checked = check_twin(manifest(), module())
    sizes = blocks or [len(g)]
    starts = np.cumsum([0, *sizes])
    for seed in (3, 400_000_017):
        wasm = [
            suite.evaluate(module(), g[lo:hi], seed=seed)
            for lo, hi in zip(starts[:-1], starts[1:], strict=True)
        ]
        twin = evaluate_population_torch(checked, suite, g, seed=seed, blocks=blocks)
        np.testing.assert_array_equal(twin.fitness, np.concatenate([w.fitness for w in wasm]))
        np.testing.assert_array_equal(twin.items, np.concatenate([w.items for w in wasm]))
        assert twin.steps == sum(w.steps for w in wasm)
        assert twin.fitness.max() == 500.0  # long episodes are in it


def test_blocks_must_cover_the_population():
    checked = check_twin(manifest(), module())
    with pytest.raises(ValueError, match="^blocks: sizes"):
        evaluate_population_torch(checked, CartPole(), population(4, 0), seed=0, blocks=[3])
    with pytest.raises(ValueError, match="^blocks: sizes"):
        evaluate_population_torch(checked, CartPole(), population(4, 0), seed=0, blocks=[4, 0])
