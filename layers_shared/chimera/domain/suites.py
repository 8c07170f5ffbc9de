"""Task suites: real benchmarks nobody here wrote, evaluated for a whole population at once.

A suite scores a population through any `BatchPolicy` (the sandboxed agent, in practice): one
guest call per environment step for every agent together. Each suite keeps three disjoint
sources of data: training (evolution sees it), hold-out (the promotion gate) and live jobs
(traffic that experiments and canaries judge). CartPole training seeds are drawn below
HOLDOUT_SEED_BASE, hold-out seeds in [HOLDOUT_SEED_BASE, LIVE_SEED_BASE), a live job's seed at
or above LIVE_SEED_BASE (from its job key: a retried job replays the same episode).
Breast-cancer is split, stratified, 60 % training / 20 % hold-out / 20 % live, standardized
with the training part's mean and deviation only.

A live job's outcome is known at once (a CartPole episode's return) or later (a classified
sample is judged when its label arrives: `label_score`). `LiveFault` is what the local traffic
generator does to a job to exercise detection and rollback (never reachable from the API).
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np

from chimera.domain.errors import GuestError, ValidationFailedError

Split = Literal["train", "holdout"]
HOLDOUT_SEED_BASE = 1_000_000_000
LIVE_SEED_BASE = 2 * HOLDOUT_SEED_BASE  # live seeds: [LIVE_SEED_BASE, LIVE_SEED_BASE + 1e9)


def job_key(job_id: str) -> int:
    """A job key's stable hash (crc32, as alias routing uses): the same key, the same work."""
    return zlib.crc32(job_id.encode())


class BatchPolicy(Protocol):
    def prepare(self, genomes: np.ndarray, n_obs: int, shared: bool) -> None: ...
    def act(self, obs: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class SuiteResult:
    fitness: np.ndarray  # what evolution maximizes, per genome (NaN: that genome failed)
    score: np.ndarray  # the KPI a person reads (mean return, accuracy), per genome
    steps: int  # environment steps or samples scored, all agents together
    failures: dict[int, str] = field(default_factory=dict)  # genome index -> why it failed
    # Per-item outcomes, shape (n_genomes, n_items): CartPole's return of each episode,
    # breast-cancer's correctness of each sample (1.0 / 0.0); a failed genome's row is NaN.
    items: np.ndarray | None = None


@dataclass(frozen=True)
class LiveFault:
    """What the host does to one live job, on top of what the agent answers (the local traffic
    generator's fault and drift injection; never reachable from the API).

    randomize: the probability that each answer the agent gives is replaced by a wrong or
        random one (CartPole: every action of the episode, independently, by a fair coin;
        breast-cancer: the predicted class is flipped).
    drift: how far the environment has changed (0: not at all). CartPole: Gaussian sensor
        noise of that standard deviation on every observation the agent sees (the physics is
        unchanged); breast-cancer: every feature the agent sees shifted by that many training
        standard deviations (the label is unchanged).
    seed: the job's own random stream (from its job key: a retried job is perturbed alike).
    """

    randomize: float = 0.0
    drift: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.randomize <= 1.0:
            raise ValueError(f"randomize: {self.randomize} is not a probability")
        if not np.isfinite(self.drift):
            raise ValueError(f"drift: {self.drift} is not a finite number")


@dataclass(frozen=True)
class LiveOutcome:
    output: float  # the answer served: CartPole's episode return, breast-cancer's logit
    score: float | None  # known at once (CartPole: the return); None: awaits a label
    steps: int  # environment steps or samples


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
    # How a change to this suite's agents is judged: the live outcome's kind (the canary's
    # primary metric), the smallest difference of score that matters (the non-inferiority
    # margin, in the score's units), and the latency guardrail's relative margin where the
    # deployment's default does not fit (None: the default).
    live_metric: Literal["mean", "proportion"]
    margin: float
    latency_p95_margin: float | None
    # Pre-screening by the performance predictor (chimera.domain.predictor): the share of the
    # optimizer's λ candidates that Layer 7's ask keeps for evaluation, in (0, 1], when a
    # predictor is installed for the agent and the deployment allows it (CHIMERA_PRESCREEN);
    # None: every candidate is evaluated. Opt-in per suite, from what bench/predictor_bench.py
    # measured on it: a screen can cost more evaluations than it saves.
    prescreen_keep: float | None

    def evaluate(
        self, policy: BatchPolicy, genomes: np.ndarray, seed: int, split: Split = "train"
    ) -> SuiteResult: ...

    def live_input(self, job_id: str, observation: Sequence[float] | None = None) -> dict[str, Any]:
        """What a live job works on, from live data only: drawn from its job key, or the
        client's own observation where the suite takes one (ValidationFailedError otherwise)."""
        ...

    def run_live(
        self,
        policy: BatchPolicy,
        genes: Sequence[float],
        job_input: dict[str, Any],
        fault: LiveFault | None = None,
    ) -> LiveOutcome:
        """Run one live job with one genome; a non-finite answer is a GuestError (bad-output)."""
        ...

    def label_score(self, output: float, label: int) -> float:
        """The score of an answer once its label is known (ValidationFailedError for a suite
        whose jobs take no label)."""
        ...

    def live_label(self, job_input: dict[str, Any]) -> int | None:
        """The true label of a live job drawn from live data (for the traffic generator);
        None when the suite has none to give (no labels, or a client's own observation)."""
        ...


def _live_rng(fault: LiveFault | None) -> np.random.Generator:
    return np.random.default_rng(fault.seed if fault is not None else 0)


class CartPole:
    """CartPole-v1 with gymnasium's own vectorized physics (CartPoleVectorEnv)."""

    name = "cartpole-v1"
    score_name = "mean return"
    target_fitness: float | None = 500.0
    max_generations = 40
    seconds_per_evaluation = 0.002
    live_metric: Literal["mean", "proportion"] = "mean"
    margin = 5.0  # 1 % of the best return
    # A job is a whole episode, so a policy that balances longer takes longer (up to 500
    # steps against ~9): the latency of a better candidate is expected to grow with its score.
    latency_p95_margin: float | None = 100.0
    # bench/predictor_bench.py (CMA-ES at λ 24, 12 seeds, target 500): asking λ and evaluating
    # the best-predicted half reached the target in 12/12 seeds with 0.41x the evaluations of
    # the plain search (asking 2λ and evaluating λ: 0.60x); the same shape kept at random
    # reached it in 10/12 with more evaluations than plain. So CartPole opts in at one half.
    prescreen_keep: float | None = 0.5

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
        items = _without(returns.reshape(n_agents, episodes), failures)
        per_agent = _without(returns.reshape(n_agents, episodes).mean(axis=1), failures)
        return SuiteResult(
            fitness=per_agent, score=per_agent, steps=steps, failures=failures, items=items
        )

    # -- live jobs: one episode on a fresh seed; the outcome (its return) is known at once --
    def live_input(self, job_id: str, observation: Sequence[float] | None = None) -> dict[str, Any]:
        if observation is not None:
            raise ValidationFailedError(
                "observation",
                f"a {self.name} job is an episode on a fresh seed: it takes no observation",
            )
        return {"seed": LIVE_SEED_BASE + job_key(job_id) % HOLDOUT_SEED_BASE}

    def run_live(
        self,
        policy: BatchPolicy,
        genes: Sequence[float],
        job_input: dict[str, Any],
        fault: LiveFault | None = None,
    ) -> LiveOutcome:
        # gymnasium's single CartPole-v1 (the same physics as the vector env training uses,
        # ~7x faster a step for one episode); 500 steps is CartPole-v1's time limit.
        from gymnasium.envs.classic_control.cartpole import CartPoleEnv

        seed = job_input.get("seed")
        if not isinstance(seed, int) or not (
            LIVE_SEED_BASE <= seed < LIVE_SEED_BASE + HOLDOUT_SEED_BASE
        ):
            raise ValidationFailedError("input.seed", f"{seed!r} is not a live seed")
        rng = _live_rng(fault)
        randomize = fault.randomize if fault is not None else 0.0
        noise = abs(fault.drift) if fault is not None else 0.0
        env = CartPoleEnv()
        try:
            state, _ = env.reset(seed=seed)
            obs = np.asarray(state, dtype=np.float32).reshape(1, 4)
            policy.prepare(np.asarray([genes], dtype=np.float32), n_obs=1, shared=False)
            total, steps, terminated = 0.0, 0, False
            while not terminated and steps < 500:
                seen = obs
                if noise:
                    seen = (obs + rng.normal(0.0, noise, obs.shape)).astype(np.float32)
                action = float(np.asarray(policy.act(seen), dtype=np.float64).reshape(-1)[0])
                if not np.isfinite(action):
                    raise GuestError("bad-output", "non-finite action (NaN or infinity)")
                push = int(action > 0.5)
                if randomize and rng.random() < randomize:
                    push = int(rng.integers(0, 2))
                state, reward, terminated, _, _ = env.step(push)
                obs = np.asarray(state, dtype=np.float32).reshape(1, 4)
                total += float(reward)
                steps += 1
        finally:
            env.close()
        return LiveOutcome(output=total, score=total, steps=steps)

    def label_score(self, output: float, label: int) -> float:
        raise ValidationFailedError(
            "label", f"{self.name} jobs are scored when they run: they take no label"
        )

    def live_label(self, job_input: dict[str, Any]) -> int | None:
        return None


PACKAGED_SPLIT = Path(__file__).resolve().parents[1] / "data" / "breast_cancer_split.npz"


class BreastCancerSplit(NamedTuple):
    """Standardized features and labels of the three parts, and each part's row indices into
    scikit-learn's data set (so that anyone can check the parts are disjoint)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_holdout: np.ndarray
    y_holdout: np.ndarray
    x_live: np.ndarray
    y_live: np.ndarray
    i_train: np.ndarray
    i_holdout: np.ndarray
    i_live: np.ndarray


_SPLIT_KEYS = BreastCancerSplit._fields


@functools.cache
def _breast_cancer_split() -> BreastCancerSplit:
    """The split, from scikit-learn, or from the copy the Lambda layer build wrote with it."""
    if PACKAGED_SPLIT.exists():
        with np.load(PACKAGED_SPLIT) as data:
            missing = [k for k in _SPLIT_KEYS if k not in data.files]
            if missing:
                raise ValueError(
                    f"{PACKAGED_SPLIT}: no {', '.join(missing)}: written by an older build "
                    "(rebuild the layer: infra_cdk/layer_build.py)"
                )
            return BreastCancerSplit(*(data[k] for k in _SPLIT_KEYS))
    return _split_with_sklearn()


def write_breast_cancer_split(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **_split_with_sklearn()._asdict())


def _split_with_sklearn() -> BreastCancerSplit:
    """Stratified 60 / 20 / 20 (live first, then hold-out from the rest), random_state=0;
    the standardization is fitted on the training part only."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    data = load_breast_cancer()
    rows = np.arange(len(data.target))
    rest, i_live = train_test_split(rows, test_size=0.2, stratify=data.target, random_state=0)
    i_train, i_holdout = train_test_split(
        rest, test_size=0.25, stratify=data.target[rest], random_state=0
    )
    x_train = data.data[i_train]
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)

    def part(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (
            ((data.data[rows] - mean) / std).astype(np.float32),
            data.target[rows].astype(np.float64),
        )

    return BreastCancerSplit(
        *part(i_train), *part(i_holdout), *part(i_live), i_train, i_holdout, i_live
    )


def _flip(logit: float) -> float:
    """The other class: class 1 is a positive logit, so a logit of 0 (class 0) becomes 1."""
    return -logit if logit != 0.0 else 1.0


class BreastCancer:
    """scikit-learn's bundled Wisconsin breast-cancer data; agents output a logit per sample."""

    name = "breast-cancer"
    score_name = "accuracy"
    target_fitness: float | None = None
    max_generations = 200
    seconds_per_evaluation = 0.0002
    live_metric: Literal["mean", "proportion"] = "proportion"  # correct or not
    margin = 0.01  # one point of accuracy
    latency_p95_margin: float | None = None
    # Off: bench/predictor_bench.py measured the screen hurting here (4 seeds, target
    # log-likelihood -0.075; model R² 0.94): asking 2λ and evaluating λ reached the target in
    # 1/4 seeds, 2.19x the plain evaluations with misses counted at the cap; evaluating λ/2 in
    # 0/4, while the random controls reached it in 4/4. A good R² over the whole history does
    # not rank the near-optimal candidates of a converging run.
    prescreen_keep: float | None = None

    def __init__(self, l2: float = 1e-3) -> None:
        self.l2 = l2

    def evaluate(
        self, policy: BatchPolicy, genomes: np.ndarray, seed: int, split: Split = "train"
    ) -> SuiteResult:
        data = _breast_cancer_split()
        x, y = (
            (data.x_train, data.y_train) if split == "train" else (data.x_holdout, data.y_holdout)
        )
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
        correct = ((logits > 0) == (y > 0.5)).astype(np.float64)
        return SuiteResult(
            fitness=_without(fitness, failures),
            score=_without(correct.mean(axis=1), failures),
            steps=int(x.shape[0] * len(genomes)),
            failures=failures,
            items=_without(correct, failures),
        )

    # -- live jobs: classify one sample; the outcome arrives later, as its label ------------
    def live_input(self, job_id: str, observation: Sequence[float] | None = None) -> dict[str, Any]:
        if observation is None:
            return {"sample": job_key(job_id) % len(_breast_cancer_split().y_live)}
        n_features = _breast_cancer_split().x_live.shape[1]
        if len(observation) != n_features:
            raise ValidationFailedError(
                "observation", f"expected {n_features} values, got {len(observation)}"
            )
        return {"observation": [float(v) for v in observation]}

    def run_live(
        self,
        policy: BatchPolicy,
        genes: Sequence[float],
        job_input: dict[str, Any],
        fault: LiveFault | None = None,
    ) -> LiveOutcome:
        data = _breast_cancer_split()
        if "sample" in job_input:
            sample = job_input["sample"]
            if not isinstance(sample, int) or not 0 <= sample < len(data.y_live):
                raise ValidationFailedError("input.sample", f"{sample!r} is not a live sample")
            x = data.x_live[sample]
        else:
            x = np.asarray(job_input["observation"], dtype=np.float32)
        if fault is not None and fault.drift:
            x = (x + fault.drift).astype(np.float32)
        policy.prepare(np.asarray([genes], dtype=np.float32), n_obs=1, shared=True)
        logit = float(np.asarray(policy.act(x[None, :]), dtype=np.float64).reshape(-1)[0])
        if not np.isfinite(logit):
            raise GuestError("bad-output", "non-finite logit (NaN or infinity)")
        if fault is not None and fault.randomize and _live_rng(fault).random() < fault.randomize:
            logit = _flip(logit)
        return LiveOutcome(output=logit, score=None, steps=1)

    def label_score(self, output: float, label: int) -> float:
        if label not in (0, 1):
            raise ValidationFailedError("label", f"{label!r} is not a class (0 or 1)")
        return 1.0 if (output > 0) == (label == 1) else 0.0

    def live_label(self, job_input: dict[str, Any]) -> int | None:
        sample = job_input.get("sample")
        if not isinstance(sample, int):
            return None  # a client's own observation: the client knows its label
        return int(_breast_cancer_split().y_live[sample])


SUITES: dict[str, Suite] = {s.name: s for s in (CartPole(), BreastCancer())}


def get_suite(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        raise KeyError(f"suite: unknown suite {name!r} (known: {', '.join(SUITES)})") from None
