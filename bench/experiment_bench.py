"""Experiment statistics benchmark: what always-valid inference buys and what it costs.

Simulations only, vectorized with numpy: every experiment's two streams are drawn as arrays of
per-look batches, merged into running moments with Chan's formula, and the mixture SPRT is
evaluated at every look with chimera.domain.statistics' own array forms (msprt_terms,
msprt_log_lr) - the formulas sequential_test uses (tests/unit/test_statistics.py checks that
this vectorized path and the module's functions agree).
Normal streams are drawn as their batch sufficient statistics, which is exact in distribution
(batch mean ~ N(mu, sd^2 / b), batch M2 ~ sd^2 chi2(b - 1), independent); Bernoulli streams as
binomial batch counts (exact too); lognormal streams as raw draws.

1. A/A: >= 10,000 experiments per row, both arms from the same distribution (one row: the same
   mean, the treatment twice as spread), analysed at every look (a batch of observations per
   arm), counting those that ever reject H0 (equal means) at alpha 0.05.
   Beside it, the false-positive rate of a fixed-horizon Welch test applied at every look
   ("peeking"). Goal: sequential FPR <= alpha.
2. Sample size: at alpha 0.05 and power 0.8 for a true effect equal to the MDE, the
   fixed-horizon n per arm (sample_size) against the average n at which the sequential test
   stops, its horizon capped at the smallest number of looks that gives it power 0.8 at the MDE
   (so both tests have equal alpha and power there); the same cap for larger true effects.
   tau (the mixture's scale) is chosen from the MDE, tau = c * MDE, c from the table printed
   first (Johari et al.: match the mixture to the effects the experiment is planned for).
   Goal: average sequential n <= 0.6 x fixed n.
3. Planned for the MDE: Wald's SPRT (analysis "sprt") of "no effect" against "the MDE", one
   sided as a canary's question is, rejecting at LR >= 1/alpha (valid at every look) and
   accepting the null at LR <= (1 - power)/(1 - alpha). Against the one-sided fixed-horizon n
   at the same alpha and at the power the SPRT reaches at the MDE: its average n at true
   effects 0 to 2 MDEs, and over an even mix of null and MDE experiments. Beside it, the least
   average n any test with that alpha and power can have at the MDE (statistics.
   least_average_n): 0.62x of the fixed n at power 0.8, so no test meets the goal at the MDE
   itself; the SPRT meets it by stopping the null experiments early.

Run: .venv/bin/python bench/experiment_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
from chimera.domain.statistics import (
    Kind,
    least_average_n,
    msprt_log_lr,
    msprt_radius,
    msprt_terms,
    sample_size,
    sprt_bounds,
    sprt_log_lr,
)
from scipy import stats as scipy_stats  # bench only: the peeking Welch contrast, vectorized

ALPHA = 0.05
POWER = 0.8
GOAL_FPR = ALPHA
GOAL_RATIO = 0.6
MIN_N = 20  # section 3: observations per arm before the SPRT judges

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # (n, mean, m2), shape (experiments, looks)


# -- streams as per-look batches, merged into running moments ---------------------------------
def batch_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw draws (experiments, looks, batch) -> each batch's (mean, M2)."""
    mean = x.mean(axis=2)
    return mean, ((x - mean[..., None]) ** 2).sum(axis=2)


def cumulate(batch_n: int, mean: np.ndarray, m2: np.ndarray) -> Arrays:
    """Running (n, mean, M2) after each look: Chan's merge, vectorized over experiments."""
    experiments, looks = mean.shape
    n_out = np.empty((experiments, looks))
    mean_out, m2_out = np.empty_like(n_out), np.empty_like(n_out)
    n, mu, m = np.zeros(experiments), np.zeros(experiments), np.zeros(experiments)
    for j in range(looks):
        total = n + batch_n
        delta = mean[:, j] - mu
        mu = mu + delta * batch_n / total
        m = m + m2[:, j] + delta * delta * n * batch_n / total
        n = total
        n_out[:, j], mean_out[:, j], m2_out[:, j] = n, mu, m
    return n_out, mean_out, m2_out


def normal_arm(rng: np.random.Generator, experiments: int, looks: int, batch: int,
               mu: float = 0.0, sd: float = 1.0) -> Arrays:  # fmt: skip
    mean = rng.normal(mu, sd / math.sqrt(batch), (experiments, looks))
    m2 = sd * sd * rng.chisquare(batch - 1, (experiments, looks))
    return cumulate(batch, mean, m2)


def lognormal_arm(rng: np.random.Generator, experiments: int, looks: int, batch: int,
                  sigma: float = 1.0) -> Arrays:  # fmt: skip
    parts = []
    for start in range(0, experiments, 500):  # chunks keep the raw draws small
        x = rng.lognormal(0.0, sigma, (min(500, experiments - start), looks, batch))
        parts.append(batch_moments(x))
    mean = np.concatenate([p[0] for p in parts])
    m2 = np.concatenate([p[1] for p in parts])
    return cumulate(batch, mean, m2)


def bernoulli_arm(rng: np.random.Generator, experiments: int, looks: int, batch: int,
                  p: float) -> Arrays:  # fmt: skip
    k = rng.binomial(batch, p, (experiments, looks)).astype(np.float64)
    return cumulate(batch, k / batch, k * (1.0 - k / batch))


# -- the tests at every look ------------------------------------------------------------------
def msprt_at_looks(control: Arrays, treatment: Arrays, *, alpha: float, kind: Kind,
                   tau: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Per experiment and look: (rejects H0: difference == 0, CS lower, CS upper)."""
    diff, v, tau2 = msprt_terms(*control, *treatment, kind=kind, tau=tau)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_lr = msprt_log_lr(diff, v, tau2)
        r = msprt_radius(v, tau2, alpha)
    judged = (v > 0) & (tau2 > 0)  # both arms constant: no evidence (as sequential_test)
    reject = judged & (log_lr >= -math.log(alpha))
    r = np.where(judged, r, np.inf)
    return reject, diff - r, diff + r


def welch_p_at_looks(control: Arrays, treatment: Arrays) -> np.ndarray:
    (n_c, mean_c, m2_c), (n_t, mean_t, m2_t) = control, treatment
    a, b = m2_c / (n_c - 1) / n_c, m2_t / (n_t - 1) / n_t
    v = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (mean_t - mean_c) / np.sqrt(v)
        df = v * v / (a * a / (n_c - 1) + b * b / (n_t - 1))
        p = 2.0 * scipy_stats.t.sf(np.abs(t), df)
    return np.where(v > 0, p, 1.0)


# -- 1. A/A -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AaRow:
    data: str
    kind: str
    split: str
    tau: str
    experiments: int
    looks: int
    horizon: int  # observations per arm (the control's when uneven) at the last look
    fpr: float  # sequential: share that ever rejected
    se: float  # its Monte-Carlo standard error
    peeking_fpr: float  # Welch at every look

    @property
    def within_goal(self) -> bool:
        return self.fpr <= GOAL_FPR


@dataclass(frozen=True)
class AaCase:
    data: str
    kind: Kind
    arm: Callable[[np.random.Generator, int, int, int], Arrays]
    batch_c: int = 50
    batch_t: int = 50
    tau: float | None = None
    arm_t: Callable[[np.random.Generator, int, int, int], Arrays] | None = None  # None: `arm`


def aa_cases() -> list[AaCase]:
    def normal(rng: np.random.Generator, e: int, looks: int, b: int) -> Arrays:
        return normal_arm(rng, e, looks, b)

    def spread(rng: np.random.Generator, e: int, looks: int, b: int) -> Arrays:
        return normal_arm(rng, e, looks, b, sd=2.0)  # same mean, twice the spread

    def lognormal(rng: np.random.Generator, e: int, looks: int, b: int) -> Arrays:
        return lognormal_arm(rng, e, looks, b)

    def bern(p: float) -> Callable[[np.random.Generator, int, int, int], Arrays]:
        return lambda rng, e, looks, b: bernoulli_arm(rng, e, looks, b, p)

    return [
        AaCase("normal(0, 1)", "mean", normal),
        AaCase("normal(0, 1)", "mean", normal, tau=0.2),
        AaCase("normal(0, 1)", "mean", normal, batch_c=90, batch_t=10),
        AaCase("normal, sd 1 vs 2", "mean", normal, 90, 10, arm_t=spread),
        AaCase("lognormal(0, 1)", "mean", lognormal),
        AaCase("lognormal(0, 1)", "mean", lognormal, batch_c=90, batch_t=10),
        AaCase("bernoulli(0.1)", "proportion", bern(0.1)),
        AaCase("bernoulli(0.1)", "proportion", bern(0.1), tau=0.03),
        AaCase("bernoulli(0.02)", "proportion", bern(0.02), batch_c=90, batch_t=10),
    ]


def aa_rows(experiments: int, looks: int, seed: int = 7,
            cases: Sequence[AaCase] | None = None) -> list[AaRow]:  # fmt: skip
    rows = []
    for i, case in enumerate(cases or aa_cases()):
        rng = np.random.default_rng([seed, i])
        control = case.arm(rng, experiments, looks, case.batch_c)
        treatment = (case.arm_t or case.arm)(rng, experiments, looks, case.batch_t)
        reject, _, _ = msprt_at_looks(control, treatment, alpha=ALPHA, kind=case.kind, tau=case.tau)
        fpr = float(reject.any(axis=1).mean())
        peeking = float((welch_p_at_looks(control, treatment) < ALPHA).any(axis=1).mean())
        total = case.batch_c + case.batch_t
        rows.append(
            AaRow(
                data=case.data,
                kind=case.kind,
                split=f"{100 * case.batch_c // total}/{100 * case.batch_t // total}",
                tau="default" if case.tau is None else f"{case.tau:g}",
                experiments=experiments,
                looks=looks,
                horizon=looks * case.batch_c,
                fpr=fpr,
                se=math.sqrt(fpr * (1 - fpr) / experiments),
                peeking_fpr=peeking,
            )
        )
    return rows


def report_aa(experiments: int, looks: int) -> list[AaRow]:
    print(
        f"1) A/A: {experiments:,} experiments per row, a look after every batch "
        f"(50 per arm, or 90/10 when uneven), {looks} looks, alpha {ALPHA}"
    )
    print(
        f"{'data':<17} {'kind':<10} {'split':>5} {'tau':>7} {'n/arm max':>9} "
        f"{'mSPRT FPR':>9} {'± s.e.':>7} {'<= alpha':>8} {'Welch at every look':>19}"
    )
    rows = aa_rows(experiments, looks)
    for r in rows:
        print(
            f"{r.data:<17} {r.kind:<10} {r.split:>5} {r.tau:>7} {r.horizon:>9,} "
            f"{r.fpr:>9.4f} {r.se:>7.4f} {'yes' if r.within_goal else 'NO':>8} "
            f"{r.peeking_fpr:>19.4f}"
        )
    return rows


# -- 2. sample size -----------------------------------------------------------------------------
@dataclass(frozen=True)
class StopRun:
    """For one tau and true effect: each experiment's first rejecting look (`looks`: never)
    and whether it rejected on the right side (a wrong-sign stop ends it without power)."""

    tau_c: float
    effect: float  # true effect, in MDEs
    first: np.ndarray
    right: np.ndarray
    batch: int

    def power(self, cap: int) -> float:
        return float((self.right & (self.first < cap)).mean())

    def avg_n(self, cap: int) -> float:
        return float((np.minimum(self.first + 1, cap) * self.batch).mean())

    def cap_for_power(self, looks: int) -> int:
        """Smallest number of looks at which power reaches POWER (`looks` if it never does)."""
        hits = np.sort(self.first[self.right])
        need = math.ceil(POWER * len(self.first))
        return looks if len(hits) < need else int(hits[need - 1]) + 1


def stop_runs(experiments: int, looks: int, batch: int, mde: float, tau_cs: Sequence[float],
              effects: Sequence[float], seed: int = 11) -> list[StopRun]:  # fmt: skip
    runs = []
    for i, effect in enumerate(effects):
        rng = np.random.default_rng([seed, i])
        control = normal_arm(rng, experiments, looks, batch)
        treatment = normal_arm(rng, experiments, looks, batch, mu=effect * mde)
        for c in tau_cs:
            reject, lower, _ = msprt_at_looks(
                control, treatment, alpha=ALPHA, kind="mean", tau=c * mde
            )
            stopped = reject.any(axis=1)
            first = np.where(stopped, reject.argmax(axis=1), looks)
            at = np.minimum(first, looks - 1)
            right = stopped & (lower[np.arange(experiments), at] > 0)
            runs.append(StopRun(c, effect, first, right, batch))
    return runs


@dataclass(frozen=True)
class SizeRow:
    tau_c: float
    effect: float
    fixed_n: int
    fixed_power: float
    cap_n: int
    seq_power: float
    avg_n: float

    @property
    def ratio(self) -> float:
        return self.avg_n / self.fixed_n


def size_rows(experiments: int, batch: int, mde: float, tau_cs: Sequence[float],
              effects: Sequence[float], max_multiple: float = 4.0) -> list[SizeRow]:  # fmt: skip
    fixed_n = sample_size(alpha=ALPHA, power=POWER, mde=mde, sd=1.0)
    looks = math.ceil(max_multiple * fixed_n / batch)
    runs = stop_runs(experiments, looks, batch, mde, tau_cs, effects)
    caps = {r.tau_c: r.cap_for_power(looks) for r in runs if r.effect == effects[0]}
    crit = NormalDist().inv_cdf(1 - ALPHA / 2)
    rows = []
    for r in runs:
        cap = caps[r.tau_c]
        shift = r.effect * mde * math.sqrt(fixed_n / 2.0)
        fixed_power = NormalDist().cdf(shift - crit) + NormalDist().cdf(-shift - crit)
        rows.append(
            SizeRow(
                r.tau_c, r.effect, fixed_n, fixed_power, cap * batch, r.power(cap), r.avg_n(cap)
            )
        )
    return rows


def report_size(experiments: int, batch: int, mde: float = 0.2,
                tau_cs: Sequence[float] = (0.5, 0.75, 1.0, 1.5, 2.0),
                effects: Sequence[float] = (1.0, 1.5, 2.0)) -> list[SizeRow]:  # fmt: skip
    print(
        f"\n2) sample size: normal data (sd 1), MDE {mde} sd, alpha {ALPHA}, power {POWER}; "
        f"{experiments:,} experiments per cell, a look every {batch} per arm;\n"
        f"   the sequential horizon capped at the smallest n/arm giving power {POWER} at the MDE"
    )
    rows = size_rows(experiments, batch, mde, tau_cs, effects)
    at_mde = [r for r in rows if r.effect == effects[0]]
    best = min(at_mde, key=lambda r: r.avg_n).tau_c
    print(f"{'tau = c x MDE':>13} {'cap n/arm':>9} {'power':>6} {'avg n/arm':>9} {'vs fixed':>8}")
    for r in at_mde:
        mark = "  <- chosen" if r.tau_c == best else ""
        print(
            f"{r.tau_c:>13g} {r.cap_n:>9,} {r.seq_power:>6.3f} {r.avg_n:>9,.0f} "
            f"{r.ratio:>7.2f}x{mark}"
        )
    print(
        f"{'true effect':>11} {'fixed n/arm':>11} {'fixed power':>11} | {'tau':>5} "
        f"{'cap n/arm':>9} {'seq power':>9} {'avg seq n':>9} {'avg/fixed':>9} {'<= 0.6':>6}"
    )
    for r in rows:
        if r.tau_c != best:
            continue
        print(
            f"{r.effect:>9g}x {r.fixed_n:>11,} {r.fixed_power:>11.3f} | {r.tau_c * mde:>5.2f} "
            f"{r.cap_n:>9,} {r.seq_power:>9.3f} {r.avg_n:>9,.0f} {r.ratio:>8.2f}x "
            f"{'yes' if r.ratio <= GOAL_RATIO else 'NO':>6}"
        )
    first = next(r for r in rows if r.tau_c == best and r.effect == effects[0])
    if first.ratio > GOAL_RATIO:
        print(
            f"   goal not met at a true effect equal to the MDE: {first.ratio:.2f}x > "
            f"{GOAL_RATIO}x (at equal power the always-valid test pays for peeking there; "
            f"it saves samples when the effect exceeds the MDE)"
        )
    else:
        print(f"   goal met at the MDE: {first.ratio:.2f}x <= {GOAL_RATIO}x")
    return rows


# -- 3. the SPRT, planned for the MDE ----------------------------------------------------------
@dataclass(frozen=True)
class SprtRow:
    effect: float  # true effect, in MDEs
    rejected: float  # share that rejected "no effect" (at effect 0: the size)
    avg_n: float  # average n per arm when it stopped (undecided: the horizon)
    undecided: float  # share still undecided at the horizon


def sprt_rows(experiments: int, batch: int, mde: float, effects: Sequence[float],
              horizon: int, seed: int = 13) -> list[SprtRow]:  # fmt: skip
    """Each experiment stops at its first look past either boundary (or at the horizon),
    judged once both arms hold MIN_N (as a canary waits for min_samples)."""
    looks = math.ceil(horizon / batch)
    log_b, log_a = sprt_bounds(ALPHA, POWER)
    rows = []
    for i, effect in enumerate(effects):
        rng = np.random.default_rng([seed, i])
        control = normal_arm(rng, experiments, looks, batch)
        treatment = normal_arm(rng, experiments, looks, batch, mu=effect * mde)
        diff, v, _ = msprt_terms(*control, *treatment, kind="mean", tau=mde)
        log_lr = sprt_log_lr(diff, v, 0.0, mde)
        decided = ((log_lr >= log_a) | (log_lr <= log_b)) & (control[0] >= MIN_N)
        stopped = decided.any(axis=1)
        first = np.where(stopped, decided.argmax(axis=1), looks - 1)
        rejected = log_lr[np.arange(experiments), first] >= log_a
        rows.append(
            SprtRow(
                effect,
                float(rejected.mean()),
                float(((first + 1) * batch).mean()),
                float(1.0 - stopped.mean()),
            )
        )
    return rows


@dataclass(frozen=True)
class SprtSummary:
    batch: int  # a look every `batch` per arm
    rows: list[SprtRow]
    power: float  # the SPRT's at the MDE
    fixed_n: int  # one-sided fixed horizon at alpha and that power
    bound_n: float  # the least average n of any test with that alpha and power, at the MDE

    def row(self, effect: float) -> SprtRow:
        return next(r for r in self.rows if r.effect == effect)

    @property
    def at_mde(self) -> float:
        return self.row(1.0).avg_n / self.fixed_n

    @property
    def even_mix(self) -> float:
        return (self.row(0.0).avg_n + self.row(1.0).avg_n) / 2.0 / self.fixed_n


def sprt_summary(experiments: int, batch: int, mde: float,
                 effects: Sequence[float] = (0.0, 0.5, 1.0, 1.5, 2.0)) -> SprtSummary:  # fmt: skip
    horizon = 4 * sample_size(alpha=ALPHA, power=POWER, mde=mde, sd=1.0, two_sided=False)
    rows = sprt_rows(experiments, batch, mde, effects, horizon)
    power = next(r.rejected for r in rows if r.effect == 1.0)
    fixed_n = sample_size(alpha=ALPHA, power=power, mde=mde, sd=1.0, two_sided=False)
    bound = least_average_n(alpha=ALPHA, power=power, information=mde * mde / 4.0)
    return SprtSummary(batch, rows, power, fixed_n, bound)


def report_sprt(experiments: int, batches: Sequence[int] = (10, 2),
                mde: float = 0.2) -> list[SprtSummary]:  # fmt: skip
    log_b, log_a = sprt_bounds(ALPHA, POWER)
    print(
        f'\n3) planned for the MDE: Wald\'s SPRT of 0 against {mde} sd (analysis "sprt"), '
        f"one-sided, alpha {ALPHA}, planned power {POWER}: reject at LR >= {math.exp(log_a):g}, "
        f"accept at LR <= {math.exp(log_b):.3f},\n   judged from {MIN_N} per arm on; "
        f"{experiments:,} experiments per row; against the one-sided fixed-horizon n at alpha "
        f"{ALPHA} and the power the SPRT reaches at the MDE"
    )
    out = []
    for batch in batches:
        s = sprt_summary(experiments, batch, mde)
        print(
            f"   a look every {batch} per arm: power {s.power:.3f} at the MDE, so the fixed n/arm "
            f"is {s.fixed_n:,}; no test with this alpha and power averages under "
            f"{s.bound_n:,.0f} ({s.bound_n / s.fixed_n:.3f}x) there"
        )
        print(
            f"{'true effect':>11} {'rejects':>8} {'undecided':>9} {'avg n/arm':>9} {'vs fixed':>8}"
        )
        for r in s.rows:
            print(
                f"{r.effect:>9g}x {r.rejected:>8.4f} {r.undecided:>9.4f} {r.avg_n:>9,.1f} "
                f"{r.avg_n / s.fixed_n:>7.3f}x"
            )
        print(
            f"   at the MDE: {s.at_mde:.3f}x (bound {s.bound_n / s.fixed_n:.3f}x); half null, "
            f"half MDE experiments: {s.even_mix:.3f}x - goal "
            f"{'met' if s.even_mix <= GOAL_RATIO else 'NOT met'} (<= {GOAL_RATIO}x)"
        )
        out.append(s)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer experiments")
    args = parser.parse_args(argv)
    experiments = 1_000 if args.quick else 10_000
    report_aa(experiments, looks=40)
    report_size(experiments, batch=10)
    report_sprt(2 * experiments)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
