"""Evolution benchmark: each comparison changes one thing, the baseline runs side by side.

1. Engine, same search: Chimera's CMA-ES (same seed, x0 = the manifest's defaults, same
   population, episodes per genome and number of generations) evaluated on
   a) the batched WASM path: the CartPole suite over gymnasium's CartPoleVectorEnv, one guest
      call per step for the whole population (what production runs);
   b) the scalar engine with the policy in numpy: gymnasium's CartPole-v1 (gym.make), one
      episode at a time;
   c) the scalar engine with the policy in WASM: the same, one guest call per agent per step.
   Every engine plays the same episodes: the scalar ones start each episode from the state the
   vectorized env gives that genome and episode, so fitnesses (and the CMA-ES runs) agree
   unless a float32 sum rounds differently; the table says whether they did. The engines take
   turns generation by generation so that load on the machine falls on all of them.
2. Search, same engine: Chimera's GeneticAlgorithm (ask/tell, JSON state) against DEAP's own
   algorithms.eaSimple with the same operators and parameters (tournament 3, blend crossover,
   Gaussian mutation, no elitism, bounds clipped), the same uniform initial population and the
   same episodes, both evaluating through the batched WASM path (eaSimple via a batched
   toolbox.map). eaSimple re-evaluates only changed individuals, the GA every candidate.

The sandbox's own cost (WASM against numpy on the same vectorized env) is bench/sandbox_bench.py.
Run: make bench   (or: .venv/bin/python bench/evolution_bench.py [--quick])
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from chimera.adapters.sandbox import Sandbox
from chimera.domain.models import AgentManifest
from chimera.domain.optimizers import CmaEs, GeneticAlgorithm, Optimizer
from chimera.domain.suites import CartPole
from chimera.settings import BUNDLED_AGENTS
from deap import algorithms, base, tools
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

AGENT = BUNDLED_AGENTS / "cartpole-linear"
TARGET = 475.0  # a genome's mean return over its training episodes
# eaSimple's operators and rates; Chimera's GA takes the same (elite 0: eaSimple keeps none).
GA_PARAMS: dict[str, Any] = {
    "tournsize": 3,
    "cxpb": 0.5,
    "mutpb": 0.3,
    "indpb": 0.3,
    "alpha": 0.5,
    "sigma_frac": 0.1,
    "elite": 0,
}


def load_agent() -> tuple[bytes, AgentManifest]:
    manifest = AgentManifest.model_validate_json((AGENT / "manifest.json").read_text())
    return (AGENT / "agent.wasm").read_bytes(), manifest


def episode_starts(n: int, seed: int) -> np.ndarray:
    """The (n, 4) start states CartPoleVectorEnv(num_envs=n).reset(seed=seed) gives."""
    env = CartPoleVectorEnv(num_envs=n)
    env.reset(seed=seed)
    assert env.state is not None
    starts = np.array(env.state.T, dtype=np.float64)
    env.close()
    return starts


# -- engines: genomes and a seed in, mean training return per genome and env steps out ---------
class Engine(Protocol):
    name: str

    def evaluate(self, genomes: np.ndarray, seed: int) -> tuple[np.ndarray, int]: ...


class BatchedWasm:
    """Production's path: the CartPole suite, one guest call per step for the population."""

    name = "batched WASM, vector env"

    def __init__(self, episodes: int, sandbox: Sandbox | None = None) -> None:
        self.sandbox = sandbox or Sandbox()
        self.wasm, self.manifest = load_agent()
        self.suite = CartPole(train_episodes=episodes)

    def evaluate(self, genomes: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
        instance = self.sandbox.instantiate(self.wasm, self.manifest.limits)
        result = self.suite.evaluate(instance, genomes, seed=seed)
        return result.fitness, result.steps


class Scalar:
    """gymnasium's CartPole-v1, one episode at a time, the same episodes as the suite plays."""

    def __init__(self, episodes: int, policy: str, sandbox: Sandbox | None = None) -> None:
        if policy not in ("numpy", "wasm"):
            raise ValueError(f"policy: 'numpy' or 'wasm', got {policy!r}")
        self.episodes = episodes
        self.policy = policy
        self.name = f"scalar env, {'numpy policy' if policy == 'numpy' else 'WASM call/agent/step'}"
        self.sandbox = sandbox or Sandbox()
        self.wasm, self.manifest = load_agent()
        self.env = gym.make("CartPole-v1")
        self.env.reset(seed=0)

    def evaluate(self, genomes: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
        genomes = np.asarray(genomes, dtype=np.float32)
        starts = episode_starts(len(genomes) * self.episodes, seed)
        instance = (
            self.sandbox.instantiate(self.wasm, self.manifest.limits)
            if self.policy == "wasm"
            else None
        )
        env, inner = self.env, self.env.unwrapped
        fitness = np.zeros(len(genomes))
        steps = 0
        for i, g in enumerate(genomes):
            act = _wasm_policy(instance, g) if instance is not None else _numpy_policy(g)
            total = 0.0
            for e in range(self.episodes):
                env.reset()
                inner.state = starts[i * self.episodes + e].copy()  # type: ignore[attr-defined]
                obs = np.array(inner.state, dtype=np.float32)  # type: ignore[attr-defined]
                done = False
                while not done:
                    obs, reward, terminated, truncated, _ = env.step(act(obs))
                    total += float(reward)
                    steps += 1
                    done = terminated or truncated
            fitness[i] = total / self.episodes
        return fitness, steps


def _numpy_policy(g: np.ndarray) -> Callable[[np.ndarray], int]:
    w, b = g[:4], g[4]
    return lambda obs: int(obs @ w + b > 0)


def _wasm_policy(instance: Any, g: np.ndarray) -> Callable[[np.ndarray], int]:
    instance.prepare(g[None, :], n_obs=1, shared=False)
    return lambda obs: int(instance.act(obs)[0, 0] > 0.5)


# -- 1. engines under the same CMA-ES ----------------------------------------------------------
@dataclass
class EngineRun:
    engine: str
    generations: int = 0
    evaluations: int = 0
    steps: int = 0
    wall_s: float = 0.0
    first_at_target: int | None = None  # generation (1-based) whose best reached TARGET
    fitness: list[np.ndarray] = field(default_factory=list)

    @property
    def evals_per_s(self) -> float:
        return self.evaluations / self.wall_s

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.wall_s


def compare_engines(
    engines: Sequence[Engine], seed: int, population: int, generations: int
) -> list[EngineRun]:
    """One CMA-ES per engine, same seed and x0, a fixed number of generations, taking turns."""
    _, manifest = load_agent()
    bounds = [(g.low, g.high) for g in manifest.genome]
    x0 = manifest.default_genes()
    opts = [CmaEs.create(bounds, population, seed, x0=x0) for _ in engines]
    runs = [EngineRun(e.name) for e in engines]
    for gen in range(1, generations + 1):
        for engine, opt, run in zip(engines, opts, runs, strict=True):
            started = time.perf_counter()
            genomes = np.array([c.genes for c in opt.ask()])
            fitness, steps = engine.evaluate(genomes, seed * 1000 + gen)
            opt.tell(fitness.tolist())
            run.wall_s += time.perf_counter() - started
            run.generations += 1
            run.evaluations += len(genomes)
            run.steps += steps
            run.fitness.append(fitness)
            if run.first_at_target is None and fitness.max() >= TARGET:
                run.first_at_target = gen
    return runs


def same_fitness(a: EngineRun, b: EngineRun) -> str:
    for gen, (x, y) in enumerate(zip(a.fitness, b.fitness, strict=True), start=1):
        if not np.array_equal(x, y):
            return f"differ from gen {gen}"
    return "identical"


def report_engines(seed: int, population: int, generations: int, episodes: int) -> list[EngineRun]:
    sandbox = Sandbox()
    engines: list[Engine] = [
        BatchedWasm(episodes, sandbox),
        Scalar(episodes, "numpy", sandbox),
        Scalar(episodes, "wasm", sandbox),
    ]
    print(
        f"1) engines under the same CMA-ES (seed {seed}, x0 = manifest defaults, population "
        f"{population}, {episodes} episodes/genome, {generations} generations each)"
    )
    print(
        f"{'engine':<32} {'evals':>6} {'env steps':>10} {'wall s':>7} {'evals/s':>8} "
        f"{'steps/s':>10} {'gen@475':>7} {'fitness vs a)':>16}"
    )
    runs = compare_engines(engines, seed, population, generations)
    base_run = runs[0]
    for label, run in zip("abc", runs, strict=True):
        at = str(run.first_at_target) if run.first_at_target else f">{run.generations}"
        print(
            f"{label}) {run.engine:<29} {run.evaluations:>6} {run.steps:>10,} {run.wall_s:>7.2f} "
            f"{run.evals_per_s:>8,.0f} {run.steps_per_s:>10,.0f} {at:>7} "
            f"{'-' if run is base_run else same_fitness(base_run, run):>16}"
        )
    for label, run in zip("bc", runs[1:], strict=True):
        print(
            f"   ratio {label}) wall / a) wall, same {run.evaluations} evaluations and "
            f"{run.steps:,} env steps: {run.wall_s / base_run.wall_s:.2f}x (above 1: a) faster)"
        )
    return runs


# -- 2. Chimera's GA against DEAP's eaSimple on the same engine ---------------------------------
@dataclass(frozen=True)
class SearchRun:
    generations: int  # populations evaluated, the initial one included
    evaluations: int
    wall_s: float
    eval_s: float  # of wall_s, inside the engine
    reached: bool

    @property
    def search_ms_per_gen(self) -> float:
        return (self.wall_s - self.eval_s) / self.generations * 1e3


class _Fitness(base.Fitness):
    weights = (1.0,)


class _Individual(list):  # type: ignore[type-arg]
    def __init__(self, genes: Sequence[float]) -> None:
        super().__init__(genes)
        self.fitness = _Fitness()


def ga_to_target(engine: Engine, seed: int, population: int, max_gens: int) -> SearchRun:
    _, manifest = load_agent()
    opt = _ga(manifest, population, seed)
    evals, eval_s, started = 0, 0.0, time.perf_counter()
    for gen in range(max_gens):
        genomes = np.array([c.genes for c in opt.ask()])
        t = time.perf_counter()
        fitness, _ = engine.evaluate(genomes, seed * 1000 + gen)
        eval_s += time.perf_counter() - t
        opt.tell(fitness.tolist())
        evals += len(genomes)
        if fitness.max() >= TARGET:
            return SearchRun(gen + 1, evals, time.perf_counter() - started, eval_s, True)
    return SearchRun(max_gens, evals, time.perf_counter() - started, eval_s, False)


def _ga(manifest: AgentManifest, population: int, seed: int) -> Optimizer:
    bounds = [(g.low, g.high) for g in manifest.genome]
    return GeneticAlgorithm.create(bounds, population, seed, **GA_PARAMS)


def easimple_to_target(engine: Engine, seed: int, population: int, max_gens: int) -> SearchRun:
    _, manifest = load_agent()
    bounds = np.array([(g.low, g.high) for g in manifest.genome])
    initial = [list(c.genes) for c in _ga(manifest, population, seed).ask()]  # the GA's own
    random.seed(seed)
    np.random.seed(seed)
    calls, eval_s = [0], [0.0]

    def batched_map(_evaluate: Any, individuals: Any) -> list[tuple[float]]:
        """DEAP's pluggable map: one engine call for every individual eaSimple evaluates."""
        inds = list(individuals)
        if not inds:
            return []
        t = time.perf_counter()
        fitness, _ = engine.evaluate(np.array(inds), seed * 1000 + calls[0])
        eval_s[0] += time.perf_counter() - t
        calls[0] += 1
        return [(float(f),) for f in fitness]

    def clipped(operator: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            children = operator(*args, **kwargs)
            for child in children:
                child[:] = np.clip(child, bounds[:, 0], bounds[:, 1]).tolist()
            return children

        return wrapper

    tb = base.Toolbox()
    tb.register("map", batched_map)
    tb.register("evaluate", lambda ind: None)  # the batched map evaluates
    tb.register("mate", clipped(tools.cxBlend), alpha=GA_PARAMS["alpha"])
    sigma = (GA_PARAMS["sigma_frac"] * (bounds[:, 1] - bounds[:, 0])).tolist()
    tb.register("mutate", clipped(tools.mutGaussian), mu=0.0, sigma=sigma, indpb=GA_PARAMS["indpb"])
    tb.register("select", tools.selTournament, tournsize=GA_PARAMS["tournsize"])
    stats = tools.Statistics(lambda ind: ind.fitness.values[0])
    stats.register("max", np.max)

    pop = [_Individual(g) for g in initial]
    started = time.perf_counter()
    evals, gens = 0, 0
    for ngen in [0] + [1] * (max_gens - 1):  # gen 0 evaluates the initial population
        pop, log = algorithms.eaSimple(
            pop,
            tb,
            cxpb=GA_PARAMS["cxpb"],
            mutpb=GA_PARAMS["mutpb"],
            ngen=ngen,
            stats=stats,
            verbose=False,
        )
        evals += sum(rec["nevals"] for rec in log)
        gens += 1
        if log[-1]["max"] >= TARGET:
            return SearchRun(gens, evals, time.perf_counter() - started, eval_s[0], True)
    return SearchRun(gens, evals, time.perf_counter() - started, eval_s[0], False)


def report_search(
    seeds: Sequence[int], population: int, max_gens: int, episodes: int
) -> tuple[list[SearchRun], list[SearchRun]]:
    engine = BatchedWasm(episodes)
    print(
        f"\n2) Chimera's GA against DEAP's eaSimple, same engine (batched WASM), same uniform start,"
        f"\n   population {population}, {episodes} episodes/genome, at most {max_gens} generations,"
        f" to a best training mean >= {TARGET:.0f}"
    )
    print(
        f"{'seed':>6} | {'GA gens':>7} {'evals':>6} {'wall s':>7} {'search ms/gen':>13} | "
        f"{'eaSimple gens':>13} {'evals':>6} {'wall s':>7} {'search ms/gen':>13}"
    )
    ours, theirs = [], []
    for seed in seeds:
        a, b = (
            ga_to_target(engine, seed, population, max_gens),
            easimple_to_target(engine, seed, population, max_gens),
        )
        ours.append(a)
        theirs.append(b)
        print(
            f"{seed:>6} | {_gens(a):>7} {a.evaluations:>6} {a.wall_s:>7.2f} "
            f"{a.search_ms_per_gen:>13.2f} | {_gens(b):>13} {b.evaluations:>6} "
            f"{b.wall_s:>7.2f} {b.search_ms_per_gen:>13.2f}"
        )

    def med(rows: list[SearchRun], attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in rows))

    print(
        f"{'median':>6} | {med(ours, 'generations'):>7.1f} {med(ours, 'evaluations'):>6.0f} "
        f"{med(ours, 'wall_s'):>7.2f} {med(ours, 'search_ms_per_gen'):>13.2f} | "
        f"{med(theirs, 'generations'):>13.1f} {med(theirs, 'evaluations'):>6.0f} "
        f"{med(theirs, 'wall_s'):>7.2f} {med(theirs, 'search_ms_per_gen'):>13.2f}"
    )
    reached = sum(r.reached for r in ours), sum(r.reached for r in theirs)
    print(
        f"   reached {TARGET:.0f}: GA {reached[0]}/{len(seeds)}, eaSimple {reached[1]}/{len(seeds)};"
        f" median ratios eaSimple/GA: wall {med(theirs, 'wall_s') / med(ours, 'wall_s'):.2f}x, "
        f"evaluations {med(theirs, 'evaluations') / med(ours, 'evaluations'):.2f}x, "
        f"search time per generation "
        f"{med(theirs, 'search_ms_per_gen') / med(ours, 'search_ms_per_gen'):.2f}x"
    )
    return ours, theirs


def _gens(run: SearchRun) -> str:
    return str(run.generations) if run.reached else f">{run.generations}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller populations, fewer seeds")
    args = parser.parse_args()
    if args.quick:
        report_engines(seed=1, population=20, generations=3, episodes=3)
        report_search(seeds=[1, 2, 3], population=30, max_gens=10, episodes=3)
    else:
        report_engines(seed=1, population=50, generations=8, episodes=5)
        report_search(seeds=range(1, 12), population=50, max_gens=30, episodes=5)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
