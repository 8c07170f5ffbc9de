"""What the sandbox costs: the batched WASM path against the same policy in plain numpy.

Both sides step their own gymnasium CartPoleVectorEnv (same seed, same genomes, same number
of steps) with the linear CartPole policy (push right when w . obs + b > 0): one side through
the sandboxed agent (one guest call per step for the whole population, fuel and wall-clock
limits on), the other computing it with numpy. The two runs are interleaved in chunks so that
noise from other work on the machine falls on both. Goal: WASM/numpy slowdown under 1.3x at
population 200.

Run: .venv/bin/python bench/sandbox_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from chimera.adapters.sandbox import Sandbox
from chimera.domain.models import AgentManifest
from chimera.settings import BUNDLED_AGENTS
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

AGENT = BUNDLED_AGENTS / "cartpole-linear"
GOAL = 1.3  # WASM/numpy slowdown at population 200


@dataclass(frozen=True)
class SandboxCost:
    population: int
    steps: int  # env steps per side, all agents together
    wasm_rate: float  # env steps per second, batched WASM path
    numpy_rate: float  # env steps per second, numpy policy
    act_us: float  # one batched guest call (AgentInstance.act), µs
    numpy_us: float  # the numpy policy for the whole population, µs
    same_trajectories: bool  # both sides saw the same observations throughout

    @property
    def slowdown(self) -> float:
        return self.numpy_rate / self.wasm_rate


def numpy_policy(genomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The agent's policy in numpy: float32 weights and biases, one row per agent."""
    g = np.asarray(genomes, dtype=np.float32)
    return np.ascontiguousarray(g[:, :4]), np.ascontiguousarray(g[:, 4])


def sandbox_cost(population: int, steps: int, chunks: int = 20, seed: int = 0) -> SandboxCost:
    manifest = AgentManifest.model_validate_json((AGENT / "manifest.json").read_text())
    instance = Sandbox().instantiate((AGENT / "agent.wasm").read_bytes(), manifest.limits)
    genomes = np.random.default_rng(seed).normal(size=(population, 5)).astype(np.float32)
    instance.prepare(genomes, n_obs=1, shared=False)
    w, b = numpy_policy(genomes)

    wasm_env = CartPoleVectorEnv(num_envs=population)
    numpy_env = CartPoleVectorEnv(num_envs=population)
    wasm_obs, _ = wasm_env.reset(seed=seed)
    numpy_obs, _ = numpy_env.reset(seed=seed)
    same = True
    wasm_s = numpy_s = act_s = policy_s = 0.0
    chunks = max(1, min(chunks, steps))
    per_chunk = steps // chunks
    for _ in range(chunks):
        started = time.perf_counter()
        for _ in range(per_chunk):
            t = time.perf_counter()
            out = instance.act(wasm_obs)
            act_s += time.perf_counter() - t
            wasm_obs, *_ = wasm_env.step((out.reshape(population) > 0.5).astype(np.int64))
        wasm_s += time.perf_counter() - started

        started = time.perf_counter()
        for _ in range(per_chunk):
            t = time.perf_counter()
            action = (np.einsum("ij,ij->i", numpy_obs, w) + b > 0).astype(np.int64)
            policy_s += time.perf_counter() - t
            numpy_obs, *_ = numpy_env.step(action)
        numpy_s += time.perf_counter() - started
        same = same and bool(np.array_equal(wasm_obs, numpy_obs))
    wasm_env.close()
    numpy_env.close()
    done = per_chunk * chunks
    return SandboxCost(
        population=population,
        steps=population * done,
        wasm_rate=population * done / wasm_s,
        numpy_rate=population * done / numpy_s,
        act_us=act_s / done * 1e6,
        numpy_us=policy_s / done * 1e6,
        same_trajectories=same,
    )


def report(populations: tuple[int, ...], steps: int) -> list[SandboxCost]:
    print("3) sandbox cost: batched WASM path against the same policy in numpy,")
    print("   each on its own CartPoleVectorEnv (same seed, same genomes), env steps/s")
    print(
        f"{'population':>10} {'env steps':>10} {'WASM':>11} {'numpy':>11} {'slowdown':>9} "
        f"{'act µs':>7} {'numpy µs':>9} {'same obs':>9}"
    )
    rows = []
    for pop in populations:
        r = sandbox_cost(pop, steps)
        rows.append(r)
        print(
            f"{pop:>10} {r.steps:>10,} {r.wasm_rate:>11,.0f} {r.numpy_rate:>11,.0f} "
            f"{r.slowdown:>8.2f}x {r.act_us:>7.1f} {r.numpy_us:>9.1f} "
            f"{'yes' if r.same_trajectories else 'NO':>9}"
        )
    at_200 = [r.slowdown for r in rows if r.population == 200]
    if at_200:
        verdict = "met" if at_200[0] < GOAL else "NOT met"
        print(f"   goal WASM/numpy < {GOAL}x at population 200: {verdict} ({at_200[0]:.2f}x)")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    parser.add_argument(
        "--check", action="store_true", help=f"exit 1 if population 200 misses {GOAL}x"
    )
    args = parser.parse_args()
    rows = report((50, 200, 1000), 500 if args.quick else 3000)
    met = all(r.slowdown < GOAL for r in rows if r.population == 200)
    # A shared machine is noisy: the goal gates only when asked (--check), never `make bench`.
    return 0 if met or not args.check else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
