"""Task suites: real benchmarks nobody here wrote, evaluated for a whole population at once.

A suite scores a population through any `BatchPolicy` (the sandboxed agent, in practice): one
guest call per environment step for every agent together. Training and hold-out data never mix:
CartPole training seeds are drawn below HOLDOUT_SEED_BASE, hold-out seeds at or above it;
breast-cancer evolves on a stratified 80 % split and is judged on the other 20 %.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

Split = Literal["train", "holdout"]
HOLDOUT_SEED_BASE = 1_000_000_000


class BatchPolicy(Protocol):
    def prepare(self, genomes: np.ndarray, n_obs: int, shared: bool) -> None: ...
    def act(self, obs: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class SuiteResult:
    fitness: np.ndarray  # what evolution maximizes, per genome (NaN: that genome failed)
    score: np.ndarray  # the KPI a person reads (mean return, accuracy), per genome
    steps: int  # environment steps or samples scored, all agents together
    failures: dict[int, str] = field(default_factory=dict)  # genome index -> why it failed


def _failed(finite: np.ndarray, what: str) -> dict[int, str]:
    """Agents (rows of `finite`) that output a NaN or an infinity: that is no answer at all."""
    bad = ~finite.all(axis=1)
    return {int(i): f"non-finite {what} (NaN or infinity)" for i in np.flatnonzero(bad)}


def _without(values: np.ndarray, failures: dict[int, str]) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64).copy()
    out[list(failures)] = np.nan
    return out


class Suite(Protocol):
    name: str
    score_name: str
    target_fitness: float | None  # evolution may stop once reached
    max_generations: int
    seconds_per_evaluation: float  # one genome, on one Lambda (layer 8's estimate)

    def evaluate(
        self, policy: BatchPolicy, genomes: np.ndarray, seed: int, split: Split = "train"
    ) -> SuiteResult: ...


class CartPole:
    """CartPole-v1 with gymnasium's own vectorized physics (CartPoleVectorEnv)."""

    name = "cartpole-v1"
    score_name = "mean return"
    target_fitness: float | None = 500.0
    max_generations = 40
    seconds_per_evaluation = 0.002

    def __init__(self, train_episodes: int = 20, holdout_episodes: int = 100) -> None:
        self.train_episodes = train_episodes
        self.holdout_episodes = holdout_episodes

    def evaluate(
        self, policy: BatchPolicy, genomes: np.ndarray, seed: int, split: Split = "train"
    ) -> SuiteResult:
        from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

        episodes = self.train_episodes if split == "train" else self.holdout_episodes
        env_seed = seed % HOLDOUT_SEED_BASE + (HOLDOUT_SEED_BASE if split == "holdout" else 0)
        n_agents = genomes.shape[0]
        n = n_agents * episodes
        env = CartPoleVectorEnv(num_envs=n, max_episode_steps=500)
        try:
            obs, _ = env.reset(seed=env_seed)
            policy.prepare(np.repeat(genomes, episodes, axis=0), n_obs=1, shared=False)
            returns = np.zeros(n)
            alive = np.ones(n, dtype=bool)
            finite = np.ones(n, dtype=bool)  # every action of this episode was a number
            steps = 0
            while alive.any():
                action = policy.act(obs).reshape(n)
                finite &= np.isfinite(action) | ~alive
                obs, reward, terminated, truncated, _ = env.step((action > 0.5).astype(np.int64))
                steps += int(alive.sum())
                returns += reward * alive
                alive &= ~(terminated | truncated)
        finally:
            env.close()
        failures = _failed(finite.reshape(n_agents, episodes), "action")
        per_agent = _without(returns.reshape(n_agents, episodes).mean(axis=1), failures)
        return SuiteResult(fitness=per_agent, score=per_agent, steps=steps, failures=failures)


PACKAGED_SPLIT = Path(__file__).resolve().parents[1] / "data" / "breast_cancer_split.npz"
_SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")


@functools.cache
def _breast_cancer_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The split, from scikit-learn, or from the copy the Lambda layer build wrote with it."""
    if PACKAGED_SPLIT.exists():
        with np.load(PACKAGED_SPLIT) as data:
            x_train, y_train, x_test, y_test = (data[k] for k in _SPLIT_KEYS)
            return x_train, y_train, x_test, y_test
    return _split_with_sklearn()


def write_breast_cancer_split(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **dict(zip(_SPLIT_KEYS, _split_with_sklearn(), strict=True)))  # type: ignore[arg-type]


def _split_with_sklearn() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    data = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.2, stratify=data.target, random_state=0
    )
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    return (
        ((x_train - mean) / std).astype(np.float32),
        y_train.astype(np.float64),
        ((x_test - mean) / std).astype(np.float32),
        y_test.astype(np.float64),
    )


class BreastCancer:
    """scikit-learn's bundled Wisconsin breast-cancer data; agents output a logit per sample."""

    name = "breast-cancer"
    score_name = "accuracy"
    target_fitness: float | None = None
    max_generations = 200
    seconds_per_evaluation = 0.0002

    def __init__(self, l2: float = 1e-3) -> None:
        self.l2 = l2

    def evaluate(
        self, policy: BatchPolicy, genomes: np.ndarray, seed: int, split: Split = "train"
    ) -> SuiteResult:
        x_train, y_train, x_test, y_test = _breast_cancer_split()
        x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
        policy.prepare(genomes, n_obs=x.shape[0], shared=True)
        logits = policy.act(x).astype(np.float64)  # (n_agents, n_samples)
        failures = _failed(np.isfinite(logits), "logit")
        logits[list(failures)] = 0.0  # scored below as failed, whatever they compute to
        # Mean log-likelihood: smooth for the optimizer, unlike accuracy.
        loglik = -(np.logaddexp(0.0, -logits) * y + np.logaddexp(0.0, logits) * (1 - y)).mean(
            axis=1
        )
        weights = np.asarray(genomes, dtype=np.float64)[:, :-1]
        fitness = loglik - self.l2 * (weights**2).sum(axis=1)
        accuracy = ((logits > 0) == (y > 0.5)).mean(axis=1)
        return SuiteResult(
            fitness=_without(fitness, failures),
            score=_without(accuracy, failures),
            steps=int(x.shape[0] * len(genomes)),
            failures=failures,
        )


SUITES: dict[str, Suite] = {s.name: s for s in (CartPole(), BreastCancer())}


def get_suite(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        raise KeyError(f"suite: unknown suite {name!r} (known: {', '.join(SUITES)})") from None
