"""The twin check: a twin is used only after it has answered like the WASM module.

Before a GPU job evaluates with a twin, the agent's own module (loaded the way the evaluation
path loads it: `execution.load_runtime`, the validated live version under its limits) and the
twin are given the same sampled inputs: random genomes within the genome's bounds (and the
default genome), observations from the suite's observation range, through both layouts of
`chimera_act` (observations shared by every agent, and each agent its own). They must agree:

* the same outputs are NaN;
* "linear-step" (an action, 0 or 1): outputs equal exactly;
* "linear" (a raw value): |twin - wasm| <= RTOL * max(1, |wasm|), RTOL = 1e-5, and the same
  sign (the class a logit decides).

Any disagreement raises TwinMismatchError naming the agent and the first mismatching input
(genome and observation); the twin is refused. What passes is a `CheckedTwin`, the only thing
`evaluate_population_torch` takes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from chimera.domain.models import Agent, AgentManifest
from chimera.domain.suites import BatchPolicy, _breast_cancer_split
from chimera.services import execution
from chimera.services.deps import Deps

from gpu_jobs.twins.policies import Twin, TwinPolicy, twin_for

RTOL = 1e-5
# CartPole: the states an episode can reach before it ends (cart within 2.4, pole within 12
# degrees; the velocities the bundled policies reach stay well inside +-3 and +-3.5), twice
# as wide, so that inputs past the failure thresholds are covered too.
CARTPOLE_OBS_HIGH = np.array([4.8, 6.0, 0.42, 7.0], dtype=np.float32)


class TwinMismatchError(Exception):
    """The twin and the module disagree on an input: the twin is refused."""

    def __init__(
        self,
        agent_id: str,
        layout: str,
        genome: np.ndarray,
        observation: np.ndarray,
        wasm: float,
        twin: float,
        why: str,
    ) -> None:
        self.agent_id, self.layout = agent_id, layout
        self.genome, self.observation = genome, observation
        self.wasm, self.twin = wasm, twin
        super().__init__(
            f"agent {agent_id}: twin refused, {why} ({layout} observations): "
            f"module {wasm!r}, twin {twin!r} for genome {genome.tolist()} and observation "
            f"{observation.tolist()}"
        )


@dataclass(frozen=True)
class CheckedTwin:
    """A twin that answered like its module on `samples` inputs (max |difference| seen)."""

    twin: Twin
    suite: str
    samples: int
    max_abs_diff: float


def sample_observations(suite: str, obs_len: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n observations from the suite's observation range, float32 (n, obs_len)."""
    if suite == "cartpole-v1" and obs_len == 4:
        return rng.uniform(-CARTPOLE_OBS_HIGH, CARTPOLE_OBS_HIGH, size=(n, 4)).astype(np.float32)
    if suite == "breast-cancer":
        x = _breast_cancer_split().x_train  # standardized rows; half real, half N(0, 1.5)
        rows = x[rng.integers(0, len(x), size=n - n // 2)]
        noise = rng.normal(0.0, 1.5, size=(n // 2, x.shape[1]))
        return np.concatenate([rows, noise]).astype(np.float32)
    # Any other suite: a wide standard range.
    return rng.normal(0.0, 2.0, size=(n, obs_len)).astype(np.float32)


def sample_genomes(manifest: AgentManifest, n: int, rng: np.random.Generator) -> np.ndarray:
    """The default genome, then n - 1 uniform within each gene's bounds, float32 (n, G)."""
    low = np.array([g.low for g in manifest.genome])
    high = np.array([g.high for g in manifest.genome])
    drawn = rng.uniform(low, high, size=(max(0, n - 1), len(low)))
    return np.vstack([np.asarray(manifest.default_genes())[None], drawn]).astype(np.float32)


def _compare(
    twin: Twin, layout: str, genomes: np.ndarray, obs: np.ndarray, w: np.ndarray, t: np.ndarray
) -> float:
    """Raise TwinMismatchError at the first disagreement; the largest |difference| otherwise.

    genomes (P, G); obs (N, O) shared or (P, N, O); w and t (P, N).
    """
    nan_w, nan_t = np.isnan(w), np.isnan(t)
    scale = np.maximum(1.0, np.abs(w.astype(np.float64)))
    diff = np.abs(w.astype(np.float64) - t.astype(np.float64))
    if twin.family == "linear-step":
        bad = (nan_w != nan_t) | (~nan_w & ~nan_t & (w != t))
        why_close = "actions differ"
    else:
        bad = (nan_w != nan_t) | (~nan_w & ~nan_t & ((diff > RTOL * scale) | ((w > 0) != (t > 0))))
        why_close = f"outputs differ by more than {RTOL:g} relative (or in sign)"
    if bad.any():
        a, j = (int(i) for i in np.argwhere(bad)[0])
        o = obs[j] if obs.ndim == 2 else obs[a, j]
        why = "one output is NaN, the other not" if nan_w[a, j] != nan_t[a, j] else why_close
        raise TwinMismatchError(
            twin.agent_id, layout, genomes[a], o, float(w[a, j]), float(t[a, j]), why
        )
    finite = ~nan_w & ~nan_t
    return float(diff[finite].max()) if finite.any() else 0.0


def check_twin(
    manifest: AgentManifest,
    module: BatchPolicy,
    *,
    genomes: int = 64,
    observations: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> CheckedTwin:
    """Compare the manifest's twin with `module` (the sandboxed agent) on sampled inputs.

    NoTwinError when the manifest declares no twin; TwinMismatchError on any disagreement.
    """
    twin = twin_for(manifest)
    rng = np.random.default_rng(seed)
    g = sample_genomes(manifest, genomes, rng)
    policy = TwinPolicy(twin, device)
    worst = 0.0
    # Shared: every genome against the same observations (how breast-cancer evaluates).
    shared = sample_observations(manifest.suite, manifest.obs_len, observations, rng)
    module.prepare(g, n_obs=observations, shared=True)
    policy.prepare(g, n_obs=observations, shared=True)
    w, t = module.act(shared), policy.act(shared)
    worst = max(worst, _compare(twin, "shared", g, shared, w, t))
    # Each agent its own observations (how CartPole evaluates: one episode per row).
    own = sample_observations(manifest.suite, manifest.obs_len, genomes * 4, rng)
    own = own.reshape(genomes, 4, manifest.obs_len)
    module.prepare(g, n_obs=4, shared=False)
    policy.prepare(g, n_obs=4, shared=False)
    w, t = module.act(own), policy.act(own)
    worst = max(worst, _compare(twin, "per-agent", g, own, w, t))
    return CheckedTwin(
        twin=twin,
        suite=manifest.suite,
        samples=genomes * observations + genomes * 4,
        max_abs_diff=worst,
    )


def check_agent(
    deps: Deps,
    agent: Agent,
    *,
    genomes: int = 64,
    observations: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> CheckedTwin:
    """The twin check against the agent's validated live module, loaded as evaluation loads it
    (`execution.load_runtime`: the bytes from the blob store by digest, the live limits)."""
    module = execution.load_runtime(deps, agent)
    return check_twin(
        agent.manifest,
        module,
        genomes=genomes,
        observations=observations,
        seed=seed,
        device=device,
    )
