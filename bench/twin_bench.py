"""What the torch twin buys: CartPole-v1 env steps per second, torch path against WASM path.

Both sides evaluate the same population (random genomes within cartpole-linear's bounds, half
of them near a balancer so that episodes run long) on the same suite episodes (CartPole's
train split, the same seed): the WASM side is the evaluation path itself (the suite over
gymnasium's CartPoleVectorEnv with the sandboxed module, one guest call per step for the
whole population), the torch side `evaluate_population_torch` with the checked twin. The two
alternate, `rounds` times each, so that noise from other work on the machine falls on both;
every round counts the episodes whose returns differ between the two. On the CPU that count
is 0 (the full run at population 1,000: 0 of 60,000 episodes): the CPU twin takes CartPole's sin and cos from
numpy, as gymnasium does, and is bit for bit the WASM path (gpu_jobs/twins/cartpole.py). On
CUDA the twin keeps torch's sin and cos, which differ from numpy's in the last bit for some
arguments; an upright pole amplifies that, so there a long episode may end a few steps apart
and the count may be above 0 (the champion is re-scored in the WASM sandbox in any case).
On CPU torch runs on one thread, as the WASM side does. Goal on one H100 (--device cuda):
>= 2e7 env steps/s.

Run: .venv/bin/python bench/twin_bench.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from chimera.adapters.sandbox import Sandbox
from chimera.domain.models import AgentManifest
from chimera.domain.suites import CartPole
from chimera.settings import BUNDLED_AGENTS

from gpu_jobs.twins import check_twin, evaluate_population_torch

AGENT = BUNDLED_AGENTS / "cartpole-linear"
GPU_GOAL = 2e7  # env steps/s on one H100
BALANCER = np.array([0.1, 0.5, 10.0, 2.0, 0.0])


@dataclass(frozen=True)
class TwinSpeed:
    population: int
    episodes: int
    steps: int  # env steps per evaluation, all episodes together (equal on both sides)
    wasm_rate: float | None  # env steps/s, WASM path (None: not run at this size)
    torch_rate: float  # env steps/s, torch path
    device: str
    episodes_differing: int | None  # returns that differ, all rounds (None: no WASM side)
    episodes_compared: int

    @property
    def ratio(self) -> float | None:
        return None if self.wasm_rate is None else self.torch_rate / self.wasm_rate


def population(n: int, seed: int) -> np.ndarray:
    manifest = AgentManifest.model_validate_json((AGENT / "manifest.json").read_text())
    low, high = (np.array([getattr(g, k) for g in manifest.genome]) for k in ("low", "high"))
    rng = np.random.default_rng(seed)
    g = rng.uniform(low, high, size=(n, 5))
    g[: n // 2] = BALANCER + rng.normal(0, 0.3, size=(n // 2, 5))
    return g.astype(np.float32)


def twin_speed(
    pop: int, episodes: int, device: str, rounds: int = 3, wasm: bool = True, seed: int = 0
) -> TwinSpeed:
    manifest = AgentManifest.model_validate_json((AGENT / "manifest.json").read_text())
    wasm_bytes = (AGENT / "agent.wasm").read_bytes()
    sandbox = Sandbox()
    checked = check_twin(manifest, sandbox.instantiate(wasm_bytes, manifest.limits))
    suite = CartPole(train_episodes=episodes)
    genomes = population(pop, seed)
    evaluate_population_torch(checked, suite, genomes[:2], seed=seed, device=device)  # warm-up
    wasm_s = torch_s = 0.0
    steps, differing = 0, None if not wasm else 0
    for r in range(rounds):
        if wasm:
            started = time.perf_counter()
            module = sandbox.instantiate(wasm_bytes, manifest.limits)
            ref = suite.evaluate(module, genomes, seed=seed + r)
            wasm_s += time.perf_counter() - started
        started = time.perf_counter()
        got = evaluate_population_torch(checked, suite, genomes, seed=seed + r, device=device)
        torch_s += time.perf_counter() - started
        steps += got.steps
        if wasm and differing is not None:
            assert ref.items is not None and got.items is not None
            differing += int((ref.items != got.items).sum())
    return TwinSpeed(
        population=pop,
        episodes=episodes,
        steps=steps // rounds,
        wasm_rate=steps / wasm_s if wasm else None,
        torch_rate=steps / torch_s,
        device=device,
        episodes_differing=differing,
        episodes_compared=pop * episodes * rounds,
    )


def report(
    sizes: tuple[int, ...], episodes: int, device: str, rounds: int, wasm_up_to: int
) -> list[TwinSpeed]:
    print(f"twin: CartPole-v1 env steps/s, torch twin ({device}) against the batched WASM path")
    print(f"   ({episodes} episodes per genome, {rounds} rounds alternating, same seeds)")
    print(
        f"{'population':>10} {'envs':>8} {'steps/eval':>11} {'WASM':>12} {'torch':>13} "
        f"{'torch/WASM':>10} {'returns differing':>18}"
    )
    rows = []
    for pop in sizes:
        r = twin_speed(pop, episodes, device, rounds, wasm=pop <= wasm_up_to)
        rows.append(r)
        wasm = f"{r.wasm_rate:>12,.0f}" if r.wasm_rate is not None else f"{'-':>12}"
        ratio = f"{r.ratio:>9.2f}x" if r.ratio is not None else f"{'-':>10}"
        same = (
            f"{r.episodes_differing} of {r.episodes_compared:,}"
            if r.episodes_differing is not None
            else "-"
        )
        print(
            f"{pop:>10} {pop * episodes:>8,} {r.steps:>11,} {wasm} {r.torch_rate:>13,.0f} "
            f"{ratio} {same:>18}"
        )
    if device.startswith("cuda"):
        best = max(r.torch_rate for r in rows)
        verdict = "met" if best >= GPU_GOAL else "NOT met"
        print(f"   goal >= {GPU_GOAL:.0e} env steps/s on one GPU: {verdict} ({best:,.0f})")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller populations, one round")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rounds = 1 if args.quick else 3
    sizes: tuple[int, ...]
    if args.device.startswith("cuda"):
        sizes = (200, 1000, 10_000, 50_000) if not args.quick else (200, 10_000)
        rows = report(sizes, 20, args.device, rounds, wasm_up_to=1000)
    else:
        sizes = (50, 200, 1000) if not args.quick else (50, 200)
        rows = report(sizes, 20, args.device, rounds, wasm_up_to=10**9)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
