"""A population's fitness through its checked twin: the suite's own episodes, in torch.

`evaluate_population_torch` gives what `Suite.evaluate` gives for the sandboxed module (the
WASM evaluation path, `execution.evaluate_shard`) for the same genomes, seed and split:

* CartPole-v1: every (genome, episode) pair is one torch CartPole, laid out as the suite lays
  out its CartPoleVectorEnv (genome-major, `episodes` rows each), started from the states
  that env's `reset(seed)` draws, stepped until every episode ended (500 steps at most), the
  action `output > 0.5` as the suite decides it. Returns, fitness (mean return) and step
  count are the suite's.
* Any other suite (breast-cancer): the suite's own `evaluate` with the twin as its
  `BatchPolicy` (the outputs computed in torch on the device, the scoring the suite's).

`blocks` lays the population out as the Lambda path shards it: consecutive blocks of those
sizes, each evaluated as its own suite call (its own CartPoleVectorEnv, reset with the same
seed), so a Batch job that evaluates a whole generation in one tensor still gives each
candidate the episodes its shard's `evaluate_shard` would have given it. Left out, the
population is one block.

A genome whose output is not finite fails as it does on the WASM path. The champion is
always re-scored on the WASM module by the hold-out: nothing here decides a promotion.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from chimera.domain.suites import HOLDOUT_SEED_BASE, CartPole, Split, Suite, SuiteResult

from gpu_jobs.twins.cartpole import MAX_EPISODE_STEPS, TorchCartPole, vector_reset_states
from gpu_jobs.twins.check import CheckedTwin
from gpu_jobs.twins.policies import Twin, TwinPolicy

ALIVE_CHECK_EVERY = 16  # steps between looks at "any episode still running" (a device sync)


def evaluate_population_torch(
    checked: CheckedTwin,
    suite: Suite,
    genomes: np.ndarray,
    seed: int,
    split: Split = "train",
    device: str | torch.device = "cpu",
    blocks: Sequence[int] | None = None,
) -> SuiteResult:
    """The suite's result for `genomes` (P, G) through the twin, on `device`."""
    if suite.name != checked.suite:
        raise ValueError(
            f"suite: the twin of {checked.twin.agent_id} was checked for {checked.suite}, "
            f"not {suite.name}"
        )
    genomes = np.asarray(genomes, dtype=np.float32)  # as the WASM path hands them over
    if genomes.ndim != 2 or genomes.shape[1] != checked.twin.genome_len:
        raise ValueError(
            f"genomes: expected shape (P, {checked.twin.genome_len}), got {genomes.shape}"
        )
    sizes = [genomes.shape[0]] if blocks is None else [int(b) for b in blocks]
    if any(b < 1 for b in sizes) or sum(sizes) != genomes.shape[0]:
        raise ValueError(
            f"blocks: sizes {sizes} must be positive and add up to the {genomes.shape[0]} genomes"
        )
    if isinstance(suite, CartPole):
        return _cartpole(checked.twin, suite, genomes, seed, split, torch.device(device), sizes)
    policy = TwinPolicy(checked.twin, device)
    starts = np.cumsum([0, *sizes])
    return _concatenated(
        [
            suite.evaluate(policy, genomes[lo:hi], seed, split)
            for lo, hi in zip(starts[:-1], starts[1:], strict=True)
        ],
        starts,
    )


def _concatenated(results: list[SuiteResult], starts: np.ndarray) -> SuiteResult:
    """Block results as one, genome indices counted from the first block's first genome."""
    if len(results) == 1:
        return results[0]
    items = [r.items for r in results if r.items is not None]
    return SuiteResult(
        fitness=np.concatenate([r.fitness for r in results]),
        score=np.concatenate([r.score for r in results]),
        steps=sum(r.steps for r in results),
        failures={
            int(start) + i: why
            for r, start in zip(results, starts, strict=False)
            for i, why in r.failures.items()
        },
        items=np.concatenate(items) if len(items) == len(results) else None,
    )


def _cartpole(
    twin: Twin,
    suite: CartPole,
    genomes: np.ndarray,
    seed: int,
    split: Split,
    device: torch.device,
    sizes: list[int],
) -> SuiteResult:
    episodes = suite.train_episodes if split == "train" else suite.holdout_episodes
    env_seed = seed % HOLDOUT_SEED_BASE + (HOLDOUT_SEED_BASE if split == "holdout" else 0)
    p = genomes.shape[0]
    n = p * episodes
    # Each block's episodes start where its own CartPoleVectorEnv(size * episodes) would.
    initial = np.concatenate([vector_reset_states(env_seed, b * episodes) for b in sizes])
    env = TorchCartPole(initial, device)
    genes = torch.as_tensor(genomes, device=device)
    returns = torch.zeros(n, dtype=torch.float64, device=device)
    bad = torch.zeros(n, dtype=torch.bool, device=device)
    can_fail = twin.family != "linear-step"  # a step's output is 0 or 1, never NaN
    with torch.inference_mode():
        for t in range(MAX_EPISODE_STEPS):
            if t % ALIVE_CHECK_EVERY == 0 and not bool(env.alive.any()):
                break
            columns = [c.view(p, episodes) for c in env.obs_columns()]
            out = twin.outputs_columns(genes, columns).reshape(n)
            if can_fail:
                bad |= ~torch.isfinite(out) & env.alive
            reward, _, _ = env.step(out > 0.5)
            returns += reward
    ret = returns.cpu().numpy().reshape(p, episodes)
    ok = ~bad.cpu().numpy().reshape(p, episodes).all(axis=1)
    failures = {int(i): "non-finite action (NaN or infinity)" for i in np.flatnonzero(~ok)}
    items = ret.copy()
    items[~ok] = np.nan
    per_agent = ret.mean(axis=1)
    per_agent[~ok] = np.nan
    return SuiteResult(
        fitness=per_agent,
        score=per_agent.copy(),
        steps=int(ret.sum()),
        failures=failures,
        items=items,
    )
