"""CartPole-v1 in torch against gymnasium's own, step for step.

Each side plays its own episode with the same policy (each acting on its own observations,
as an evaluation does). No tolerance: on the CPU the twin takes sin and cos from numpy, as
gymnasium does (gpu_jobs/twins/cartpole.py, `sin_cos`), so the float64 state is gymnasium's
bit for bit at every step of every episode, truncated 500-step ones included, and so are the
float32 observation the policy sees, terminated, truncated and the episode returns.
(test_segment_twin_exact.py shows that the same comparison fails with torch's own sin and
cos, which differ from numpy's in the last bit for some arguments.)
"""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

from gpu_jobs.twins.cartpole import TorchCartPole, single_reset_states, vector_reset_states

BALANCER = np.array([0.1, 0.5, 10.0, 2.0, 0.0], dtype=np.float32)  # lasts 500 steps


def linear_push(genes: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """The bundled agent's policy in float32, its C order: v = b; v += g[i] * o[i]."""
    v = genes[:, 4].copy()
    for i in range(4):
        v = (v + genes[:, i] * obs[:, i]).astype(np.float32)
    return v > 0


def play_against_gymnasium(seeds: list[int], genes: np.ndarray | None, rng_seed: int) -> None:
    rng = np.random.default_rng(rng_seed)
    envs = [gymnasium.make("CartPole-v1") for _ in seeds]
    obs = np.array([env.reset(seed=s)[0] for env, s in zip(envs, seeds, strict=True)])
    twin = TorchCartPole(single_reset_states(seeds))
    np.testing.assert_array_equal(twin.obs.numpy(), obs)
    returns, twin_returns = np.zeros(len(seeds)), np.zeros(len(seeds))
    running = np.ones(len(seeds), dtype=bool)
    twin_obs = twin.obs.numpy()
    while running.any():
        coin = rng.random(len(seeds)) < 0.5
        push = linear_push(genes, obs) if genes is not None else coin
        twin_push = linear_push(genes, twin_obs) if genes is not None else coin
        reward, terminated, truncated = twin.step(torch.as_tensor(twin_push))
        twin_returns += reward.numpy()
        state, twin_obs = twin.state.numpy(), twin.obs.numpy()
        for k in np.flatnonzero(running):
            o, r, term, trunc, _ = envs[k].step(int(push[k]))
            returns[k] += r
            np.testing.assert_array_equal(state[k], envs[k].unwrapped.state)
            np.testing.assert_array_equal(twin_obs[k], o)
            assert (bool(terminated[k]), bool(truncated[k])) == (term, trunc), (seeds[k], twin.t)
            obs[k] = o
            running[k] = not (term or trunc)
        assert np.array_equal(running, twin.alive.numpy())
    np.testing.assert_array_equal(twin_returns, returns)


def test_random_actions_match_gymnasium_for_200_seeds():
    play_against_gymnasium(list(range(200)), None, rng_seed=1)


def test_linear_policies_match_gymnasium_to_truncation():
    """Long episodes: 24 balancers (500 steps, truncated) and 40 random linear policies."""
    rng = np.random.default_rng(2)
    genes = np.vstack(
        [
            BALANCER + rng.normal(0, 0.2, size=(24, 5)),
            rng.uniform(-10, 10, size=(40, 5)),
        ]
    ).astype(np.float32)
    seeds = [int(s) for s in rng.integers(0, 2**31, size=64)]
    play_against_gymnasium(seeds, genes, rng_seed=3)


def test_vector_reset_and_steps_match_the_suites_vector_env():
    """The suite steps CartPoleVectorEnv(num_envs=n).reset(seed): episode j is its column j."""
    n = 96
    env = CartPoleVectorEnv(num_envs=n, max_episode_steps=500)
    obs, _ = env.reset(seed=123_456)
    np.testing.assert_array_equal(vector_reset_states(123_456, n), env.state.T)
    twin = TorchCartPole(vector_reset_states(123_456, n))
    genes = np.repeat(BALANCER[None], n, axis=0) + np.random.default_rng(4).normal(0, 0.3, (n, 5))
    genes = genes.astype(np.float32)
    alive = np.ones(n, dtype=bool)
    returns, twin_returns = np.zeros(n), np.zeros(n)
    twin_obs = twin.obs.numpy()
    while alive.any():
        obs, reward, terminated, truncated, _ = env.step(linear_push(genes, obs).astype(np.int64))
        twin_reward, *_ = twin.step(torch.as_tensor(linear_push(genes, twin_obs)))
        twin_obs = twin.obs.numpy()
        returns += reward * alive
        twin_returns += twin_reward.numpy()
        np.testing.assert_array_equal(twin_reward.numpy(), alive.astype(np.float32))
        alive &= ~(terminated | truncated)
        np.testing.assert_array_equal(twin.alive.numpy(), alive)
        np.testing.assert_array_equal(twin.state.numpy()[alive], env.state.T[alive])
        np.testing.assert_array_equal(twin_obs[alive], obs[alive])
    env.close()
    np.testing.assert_array_equal(twin_returns, returns)
    assert returns.max() == 500  # some balanced to truncation


def test_bad_initial_states_name_the_argument():
    with pytest.raises(ValueError, match="initial"):
        TorchCartPole(np.zeros((3, 5)))
