"""What the performance predictor saves: evaluations to the same final quality, with and without
pre-screening, on a bundled agent's real suite.

Like for like. The agent's own search as Layer 6 chooses it (CMA-ES, population λ from
`meta.choose`'s rule, started from the manifest's default genome, as a first run starts from
the live genome), the same seeds, the same evaluation (the suite's training split through the
agent's torch twin, checked against its WASM module first; a generation's evaluation seed is
`execution.generation_seed(run seed, generation)`, as the Lambda path's), and the same stop:
the first generation whose best evaluated fitness reaches the target (CartPole: 500, the
suite's own target; breast-cancer: a log-likelihood the plain search reaches), or the
generation cap. Only evaluated candidates count, and only an evaluated fitness can meet the
target.

1. History: `--history` runs of the plain search (seeds unlike the compared ones) play the
   stored history; their evaluated candidates are the data set.
2. Training: `gpu_jobs.predictor.train.train` on that data set (held-out runs): R², within 10 %.
3. Compared, per seed: `plain` (λ asked, λ evaluated); `pool` (the optimizer asks 2λ, the
   predictor keeps the λ best predicted, 10 % of them drawn at random from the rest, the others
   told as not evaluated: pre-selection); `fewer` (λ asked, λ/2 evaluated, the same policy);
   and, as controls, `pool-random` and `fewer-random` (the same shapes, the kept candidates
   drawn at random): what the predictor adds beyond evaluating fewer candidates a generation.
   Printed: evaluations to the target (median, and the sum over seeds, a seed that missed it
   counting its evaluations up to the cap), seeds that reached it, and each arm's ratio to plain.

Run: .venv/bin/python bench/predictor_bench.py [--quick] [--suite cartpole-v1|breast-cancer]
(--quick: CartPole only, 4 seeds, 3 history runs, about a minute; the full run: CartPole with
12 seeds and 8 history runs, breast-cancer with 4 and 4, several minutes on 2 cores.)
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from chimera.adapters.sandbox import Sandbox
from chimera.domain.models import AgentManifest
from chimera.domain.optimizers import CmaEs
from chimera.domain.predictor import PredictorModel, parse_model, screen_trials
from chimera.domain.suites import BreastCancer, CartPole, Suite
from chimera.services.execution import generation_seed
from chimera.settings import BUNDLED_AGENTS

from gpu_jobs.predictor.dataset import write_rows
from gpu_jobs.predictor.train import MODEL_FILE, train
from gpu_jobs.twins import check_twin, evaluate_population_torch

AGENTS = {"cartpole-v1": "cartpole-linear", "breast-cancer": "breast-cancer-linear"}
# Breast-cancer has no target of its own (fitness: training log-likelihood minus an L2 term).
# This one is what the plain search reaches in most seeds within the cap.
TARGETS = {"cartpole-v1": 500.0, "breast-cancer": -0.075}
CAPS = {"cartpole-v1": 40, "breast-cancer": 200}

# plain: no screen; pool, fewer: the predictor's screen; *-random: the same shapes, the kept
# candidates drawn at random (what the predictor adds beyond evaluating fewer a generation).
ARMS = ("plain", "pool", "pool-random", "fewer", "fewer-random")
Evaluate = Callable[[np.ndarray, int], np.ndarray]


@dataclass
class RunOutcome:
    evaluations: int
    generations: int
    reached: bool
    best: float
    rows: list[dict[str, object]] = field(default_factory=list)


def population_size(dim: int) -> int:
    """Layer 6's rule for continuous genomes (services/meta.choose)."""
    return max(24, 2 * int(4 + 3 * math.log(dim)))


def evaluator(suite_name: str) -> tuple[AgentManifest, Suite, Evaluate]:
    agent = BUNDLED_AGENTS / AGENTS[suite_name]
    manifest = AgentManifest.model_validate_json((agent / "manifest.json").read_text())
    module = Sandbox().instantiate((agent / "agent.wasm").read_bytes(), manifest.limits)
    checked = check_twin(manifest, module)  # refused on any mismatch with the WASM module
    suite: Suite = CartPole() if suite_name == "cartpole-v1" else BreastCancer()

    def evaluate(genomes: np.ndarray, seed: int) -> np.ndarray:
        result = evaluate_population_torch(checked, suite, genomes, seed=seed)
        return np.where(np.isfinite(result.fitness), result.fitness, np.nan)

    return manifest, suite, evaluate


def search(
    manifest: AgentManifest,
    evaluate: Evaluate,
    seed: int,
    target: float,
    cap: int,
    mode: str = "plain",
    model: PredictorModel | None = None,
) -> RunOutcome:
    lam = population_size(manifest.genome_len)
    pool = 2 * lam if mode.startswith("pool") else lam
    keep = lam // 2 if mode.startswith("fewer") else lam
    opt = CmaEs.create(manifest.genome, pool, seed, x0=manifest.default_genes())
    screen_rng = np.random.default_rng([seed, 7])
    out = RunOutcome(evaluations=0, generations=0, reached=False, best=-math.inf)
    for gen in range(cap):
        trials = opt.ask_trials()
        if mode in ("pool", "fewer"):
            assert model is not None
            trials = screen_trials(opt, trials, model, keep, screen_rng)
        elif mode != "plain":  # the control: the same shapes, the kept chosen at random
            kept = sorted(screen_rng.choice(len(trials), size=keep, replace=False).tolist())
            opt.tell_trials({t.id: math.nan for i, t in enumerate(trials) if i not in kept})
            trials = [trials[i] for i in kept]
        genomes = np.array([t.genes for t in trials], dtype=np.float32)
        fitness = evaluate(genomes, generation_seed(seed, gen))
        opt.tell_trials({t.id: float(f) for t, f in zip(trials, fitness, strict=True)})
        out.evaluations += len(trials)
        out.generations = gen + 1
        for t, f in zip(trials, fitness, strict=True):
            if math.isfinite(f):
                out.rows.append(
                    {
                        "suite": manifest.suite,
                        "agent_id": manifest.agent_id,
                        "run_id": f"history-{seed}",
                        "generation": gen,
                        "genes": list(t.genes),
                        "fitness": float(f),
                    }
                )
        finite = fitness[np.isfinite(fitness)]
        if finite.size:
            out.best = max(out.best, float(finite.max()))
        if out.best >= target:
            out.reached = True
            break
    return out


def _median(values: list[int]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def bench(
    suite_name: str,
    seeds: int,
    history: int,
    epochs: int,
    cap: int | None = None,
    target: float | None = None,
) -> dict[str, object]:
    torch.set_num_threads(1)
    manifest, _, evaluate = evaluator(suite_name)
    target = TARGETS[suite_name] if target is None else target
    cap = CAPS[suite_name] if cap is None else cap
    lam = population_size(manifest.genome_len)
    print(
        f"predictor: {manifest.agent_id} on {suite_name}, CMA-ES λ={lam} from the default genome, "
        f"target {target:g}, cap {cap} generations"
    )
    rows: list[dict[str, object]] = []
    for h in range(history):
        rows += search(manifest, evaluate, 10_000 + h, target, cap).rows
    with tempfile.TemporaryDirectory() as tmp:
        write_rows(rows, Path(tmp) / "data")
        metrics = train(Path(tmp) / "data", Path(tmp) / "model", {"epochs": epochs})
        model = parse_model((Path(tmp) / "model" / MODEL_FILE).read_text())
    r2, within = metrics["r2"][0], metrics["within_10pct"][0]  # type: ignore[index]
    print(
        f"   history: {history} plain runs, {len(rows):,} evaluated candidates; held out "
        f"{metrics['n_test']:,} rows of whole runs: R² {r2:.3f}, within 10 % {within:.1%}"
    )
    arms: dict[str, list[RunOutcome]] = {m: [] for m in ARMS}
    for s in range(seeds):
        for mode, outcomes in arms.items():
            outcomes.append(search(manifest, evaluate, s, target, cap, mode, model))
    print(
        f"{'arm':>12} {'asked/evaluated':>16} {'median evals':>13} {'sum evals':>10} "
        f"{'reached':>8} {'vs plain (sum)':>15}"
    )
    base = sum(o.evaluations for o in arms["plain"])
    shapes = {"plain": f"{lam}/{lam}", "pool": f"{2 * lam}/{lam}", "fewer": f"{lam}/{lam // 2}"}
    shapes |= {"pool-random": shapes["pool"], "fewer-random": shapes["fewer"]}
    result: dict[str, object] = {"r2": r2, "within_10pct": within, "arms": {}}
    for mode, outcomes in arms.items():
        total = sum(o.evaluations for o in outcomes)
        reached = sum(o.reached for o in outcomes)
        med = _median([o.evaluations for o in outcomes])
        ratio = total / base if base else float("nan")
        print(
            f"{mode:>12} {shapes[mode]:>16} {med:>13,.0f} {total:>10,} "
            f"{reached:>4}/{len(outcomes):<3} {ratio:>14.2f}x"
        )
        result["arms"][mode] = {  # type: ignore[index]
            "evaluations": [o.evaluations for o in outcomes],
            "reached": reached,
            "ratio": ratio,
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds and history runs")
    parser.add_argument("--suite", choices=sorted(AGENTS), action="append")
    parser.add_argument("--seeds", type=int)
    args = parser.parse_args()
    # --quick: CartPole only. Breast-cancer's runs take up to 200 generations: fewer seeds.
    suites = args.suite or (["cartpole-v1"] if args.quick else ["cartpole-v1", "breast-cancer"])
    for name in suites:
        small = args.quick or name == "breast-cancer"
        seeds = args.seeds or (4 if small else 12)
        history = 3 if args.quick else (4 if small else 8)
        bench(name, seeds=seeds, history=history, epochs=100 if args.quick else 300)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
