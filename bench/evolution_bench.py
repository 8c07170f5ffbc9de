"""Evolution benchmark, baselines side by side in one process.

1. Agent steps per second on CartPole-v1 (gymnasium's CartPoleVectorEnv), the same wasm agent:
   the batched ABI (one guest call per step for the whole population) against one guest call
   per agent per step.
2. Generations, evaluations and wall time to a training mean return of 475 on CartPole-v1:
   Chimera's path (CMA-ES ask/tell, sandboxed agent, vectorized suite) against DEAP's own
   eaSimple (pop 50, tournament 3, blend crossover, Gaussian mutation) evaluating the same
   linear policy in gymnasium's env, one step at a time.

Run: make bench   (or: .venv/bin/python bench/evolution_bench.py [--quick])
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from chimera.adapters.sandbox import Sandbox
from chimera.domain.models import AgentManifest
from chimera.domain.optimizers import CmaEs
from chimera.domain.suites import CartPole
from chimera.settings import BUNDLED_AGENTS
from deap import algorithms, base, creator, tools
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

AGENT = BUNDLED_AGENTS / "cartpole-linear"
TARGET = 475.0
EPISODES = 5


def load() -> tuple[Sandbox, bytes, AgentManifest]:
    manifest = AgentManifest.model_validate_json((AGENT / "manifest.json").read_text())
    return Sandbox(), (AGENT / "agent.wasm").read_bytes(), manifest


def steps_per_second(pop: int, steps: int) -> tuple[float, float]:
    sandbox, wasm, manifest = load()
    genomes = np.random.default_rng(0).normal(size=(pop, 5)).astype(np.float32)
    env = CartPoleVectorEnv(num_envs=pop)
    obs, _ = env.reset(seed=0)

    batched = sandbox.instantiate(wasm, manifest.limits)
    batched.prepare(genomes, n_obs=1, shared=False)
    started = time.perf_counter()
    for _ in range(steps):
        obs, *_ = env.step((batched.act(obs).reshape(pop) > 0.5).astype(np.int64))
    batched_rate = pop * steps / (time.perf_counter() - started)

    singles = []
    for g in genomes:
        inst = sandbox.instantiate(wasm, manifest.limits)
        inst.prepare(g[None, :], n_obs=1, shared=False)
        singles.append(inst)
    obs, _ = env.reset(seed=0)
    started = time.perf_counter()
    for _ in range(steps):
        actions = np.array([int(s.act(obs[i : i + 1])[0, 0] > 0.5) for i, s in enumerate(singles)])
        obs, *_ = env.step(actions)
    single_rate = pop * steps / (time.perf_counter() - started)
    env.close()
    return batched_rate, single_rate


def chimera_to_target(seed: int, max_gens: int) -> tuple[int, int, float]:
    sandbox, wasm, manifest = load()
    suite = CartPole(train_episodes=EPISODES)
    opt = CmaEs.create(
        [(g.low, g.high) for g in manifest.genome], 50, seed, x0=manifest.default_genes()
    )
    started = time.perf_counter()
    for gen in range(1, max_gens + 1):
        cands = opt.ask()
        result = suite.evaluate(
            sandbox.instantiate(wasm, manifest.limits),
            np.array([c.genes for c in cands]),
            seed=seed * 1000 + gen,
        )
        opt.tell(result.fitness.tolist())
        if result.fitness.max() >= TARGET:
            break
    return gen, gen * 50, time.perf_counter() - started


def easimple_to_target(seed: int, max_gens: int) -> tuple[int, int, float]:
    if not hasattr(creator, "BenchFitness"):
        creator.create("BenchFitness", base.Fitness, weights=(1.0,))
        creator.create("BenchIndividual", list, fitness=creator.BenchFitness)
    random.seed(seed)
    env = gym.make("CartPole-v1")
    episode_seed = [seed * 10_000]

    def evaluate(ind: list[float]) -> tuple[float]:
        w = np.asarray(ind)
        total = 0.0
        for _ in range(EPISODES):
            episode_seed[0] += 1
            obs, _ = env.reset(seed=episode_seed[0])
            done = False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(int(w[:4] @ obs + w[4] > 0))
                total += reward
                done = terminated or truncated
        return (total / EPISODES,)

    tb = base.Toolbox()
    tb.register(
        "individual", tools.initRepeat, creator.BenchIndividual, lambda: random.uniform(-1, 1), 5
    )
    tb.register("population", tools.initRepeat, list, tb.individual)
    tb.register("evaluate", evaluate)
    tb.register("mate", tools.cxBlend, alpha=0.5)
    tb.register("mutate", tools.mutGaussian, mu=0, sigma=0.5, indpb=0.3)
    tb.register("select", tools.selTournament, tournsize=3)
    pop = tb.population(n=50)
    evaluations = 0
    started = time.perf_counter()
    for gen in range(1, max_gens + 1):  # noqa: B007 - gen is the answer
        pop, log = algorithms.eaSimple(
            pop, tb, cxpb=0.5, mutpb=0.3, ngen=1, stats=_stats(), verbose=False
        )
        evaluations += sum(rec["nevals"] for rec in log)
        if log[-1]["max"] >= TARGET:
            break
    env.close()
    return gen, evaluations, time.perf_counter() - started


def _stats() -> tools.Statistics:
    stats = tools.Statistics(lambda ind: ind.fitness.values[0])
    stats.register("max", np.max)
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and seeds")
    args = parser.parse_args()
    steps = 100 if args.quick else 300
    seeds = [1, 2] if args.quick else [1, 2, 3, 4, 5]

    print("1) agent steps per second, CartPole-v1, one wasm agent module")
    print(f"{'population':>10} {'batched ABI':>14} {'call per agent':>15} {'ratio':>7}")
    ratios = []
    for pop in (50, 200):
        batched, single = steps_per_second(pop, steps)
        ratios.append(batched / single)
        print(f"{pop:>10} {batched:>14,.0f} {single:>15,.0f} {batched / single:>6.1f}x")

    print("\n2) to a training mean return of 475 (5 episodes per genome), population 50")
    print(
        f"{'seed':>5} {'chimera gens':>13} {'evals':>6} {'time s':>7} | "
        f"{'eaSimple gens':>14} {'evals':>6} {'time s':>7}"
    )
    ours, theirs = [], []
    for seed in seeds:
        a, b = chimera_to_target(seed, 30), easimple_to_target(seed, 30)
        ours.append(a)
        theirs.append(b)
        print(f"{seed:>5} {a[0]:>13} {a[1]:>6} {a[2]:>7.2f} | {b[0]:>14} {b[1]:>6} {b[2]:>7.2f}")
    med = lambda rows, i: statistics.median(r[i] for r in rows)  # noqa: E731
    print(
        f"{'median':>5} {med(ours, 0):>13} {med(ours, 1):>6} {med(ours, 2):>7.2f} | "
        f"{med(theirs, 0):>14} {med(theirs, 1):>6} {med(theirs, 2):>7.2f}"
    )
    print(
        f"\nwall-time ratio eaSimple / chimera: {med(theirs, 2) / med(ours, 2):.1f}x; "
        f"batched ABI speed-up: {min(ratios):.1f}x (at least 20x required)"
    )
    return 0 if min(ratios) >= 20 else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
