"""The experiment statistics against scipy / statsmodels on the same data, and the sequential
test's promises (validity at every look, monotone p, the price of peeking) by simulation."""

from __future__ import annotations

import math
from functools import reduce

import numpy as np
import pytest
from chimera.domain import statistics as st
from chimera.domain.errors import ValidationFailedError
from chimera.domain.statistics import (
    FixedResult,
    Moments,
    SequentialResult,
    harmful,
    least_average_n,
    non_inferiority,
    paired_test,
    proportion_sample_size,
    sample_size,
    sequential_test,
    sprt,
    sprt_average_n,
    sprt_bounds,
    sprt_log_lr,
    srm_test,
    welch_test,
)
from hypothesis import given, settings
from hypothesis import strategies as hs
from scipy import integrate, stats
from statsmodels.stats.power import NormalIndPower, tt_ind_solve_power
from statsmodels.stats.proportion import (
    proportion_effectsize,
    samplesize_proportions_2indep_onetail,
)
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW
from statsmodels.stats.weightstats import ttest_ind as sm_ttest_ind

ALPHA = 0.05


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


# -- Moments ----------------------------------------------------------------------------------
floats = hs.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(hs.lists(floats, max_size=40), hs.lists(floats, max_size=40))
def test_merge_equals_the_moments_of_the_concatenation(a, b):
    merged = Moments.of(a).merge(Moments.of(b))
    whole = Moments.of(a + b)
    assert merged.n == whole.n == len(a) + len(b)
    scale = max([1.0] + [abs(x) for x in a + b])
    assert merged.mean == pytest.approx(whole.mean, rel=1e-9, abs=1e-9 * scale)
    assert merged.m2 == pytest.approx(whole.m2, rel=1e-7, abs=1e-7 * scale * scale)
    one_by_one = reduce(Moments.add, a + b, Moments())
    assert one_by_one.n == whole.n
    assert one_by_one.m2 == pytest.approx(whole.m2, rel=1e-7, abs=1e-7 * scale * scale)
    if len(a + b) >= 2:
        assert merged.variance == pytest.approx(
            float(np.var(a + b, ddof=1)), rel=1e-7, abs=1e-7 * scale * scale
        )
    else:
        assert merged.variance == 0.0
    assert Moments.from_json(merged.to_json()) == merged


def test_merge_keeps_precision_far_from_zero():
    """Chan's update, not sums of squares: a large offset does not swamp the spread."""
    rng = np.random.default_rng(0)
    x = 1e9 + rng.normal(0, 1, 10_000)
    merged = reduce(Moments.merge, (Moments.of(c) for c in np.array_split(x, 37)))
    assert merged.variance == pytest.approx(float(np.var(x, ddof=1)), rel=1e-9)


# -- special functions against scipy over a grid ------------------------------------------------
DFS = [0.3, 1, 2, 3.5, 7, 30, 120, 1e3, 1e4]
XS = [-60, -8, -2.5, -1, -0.2, 0, 0.1, 1, 1.96, 4, 12, 100]


def test_t_distribution_matches_scipy_over_a_grid():
    for df in DFS:
        for x in XS:
            assert rel(st.t_cdf(x, df), stats.t.cdf(x, df)) < 1e-9, (df, x)
            assert rel(st.t_sf(x, df), stats.t.sf(x, df)) < 1e-9, (df, x)
        for q in [0.4, 0.1, 0.025, 1e-3, 1e-8]:
            assert rel(st.t_isf(q, df), stats.t.isf(q, df)) < 1e-9, (df, q)


def test_chi_square_tail_matches_scipy_over_a_grid():
    for dof in [1, 2, 3, 4, 7, 20, 99]:
        for x in [1e-4, 0.3, 1, 2.5, 6, 15, 40, 150, 600]:
            assert rel(st.chi2_sf(x, dof), stats.chi2.sf(x, dof)) < 1e-9, (dof, x)


# -- Welch ------------------------------------------------------------------------------------
def _datasets():
    rng = np.random.default_rng(42)
    return {
        "normal, equal n": (rng.normal(10, 2, 50), rng.normal(10.5, 2, 50)),
        "unequal n and spread": (rng.normal(0, 1, 30), rng.normal(0.4, 3, 200)),
        "tiny": (np.array([1.0, 2.0]), np.array([2.0, 4.5, 3.1])),
        "lognormal": (rng.lognormal(0, 1, 80), rng.lognormal(0.2, 1.2, 45)),
        "large offset, large n": (1e6 + rng.normal(0, 1, 5000), 1e6 + rng.normal(0.05, 1, 4000)),
        "far apart": (rng.normal(0, 1, 40), rng.normal(5, 1, 40)),
    }


@pytest.mark.parametrize("name", list(_datasets()))
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_welch_matches_scipy_and_statsmodels(name, alpha):
    control, treatment = _datasets()[name]
    ours = welch_test(Moments.of(control), Moments.of(treatment), alpha=alpha)
    ref = stats.ttest_ind(treatment, control, equal_var=False)
    ci = ref.confidence_interval(1 - alpha)
    assert rel(ours.statistic, ref.statistic) < 1e-9
    assert rel(ours.df, ref.df) < 1e-9
    assert rel(ours.p_value, ref.pvalue) < 1e-9
    assert ours.difference == pytest.approx(float(treatment.mean() - control.mean()), rel=1e-9)
    assert ours.lower == pytest.approx(ci.low, rel=1e-9, abs=1e-9)
    assert ours.upper == pytest.approx(ci.high, rel=1e-9, abs=1e-9)
    t, p, df = sm_ttest_ind(treatment, control, usevar="unequal")
    assert (rel(ours.statistic, t), rel(ours.p_value, p), rel(ours.df, df)) < (1e-9,) * 3
    low, high = CompareMeans(DescrStatsW(treatment), DescrStatsW(control)).tconfint_diff(
        alpha=alpha, usevar="unequal"
    )
    assert ours.lower == pytest.approx(low, rel=1e-9, abs=1e-9)
    assert ours.upper == pytest.approx(high, rel=1e-9, abs=1e-9)
    assert isinstance(ours, FixedResult) and ours.to_json()["df"] == ours.df


# -- SRM --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("observed", "weights"),
    [
        ([5000, 5100], [1, 1]),
        ([950, 50], [0.95, 0.05]),
        ([300, 280, 330], [1, 1, 1]),
        ([120, 240, 610, 20, 10], [0.1, 0.2, 0.6, 0.05, 0.05]),
        ([1000, 0, 10, 5, 5], [0.2, 0.2, 0.2, 0.2, 0.2]),
    ],
)
def test_srm_matches_scipy_chisquare(observed, weights):
    expected = np.array(weights) / sum(weights) * sum(observed)
    ref = stats.chisquare(observed, expected)
    ours = srm_test(observed, weights)
    assert rel(ours.statistic, ref.statistic) < 1e-12
    assert rel(ours.p_value, ref.pvalue) < 1e-9 or ours.p_value == ref.pvalue == 0.0
    assert ours.mismatch == (ref.pvalue < 0.001)


def test_srm_flags_a_skewed_split_and_not_a_fair_one():
    assert srm_test([5000, 5400], [0.5, 0.5]).mismatch  # p ~ 9e-5
    assert not srm_test([5000, 5030], [0.5, 0.5]).mismatch
    assert srm_test([9400, 600], [0.95, 0.05]).mismatch  # a 5 % canary got 6 %
    assert not srm_test([9510, 490], [0.95, 0.05]).mismatch
    loose = srm_test([5000, 5200], [0.5, 0.5], threshold=0.05)
    assert loose.mismatch and not srm_test([5000, 5200], [0.5, 0.5]).mismatch


# -- sample sizes -----------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
@pytest.mark.parametrize("power", [0.8, 0.9])
@pytest.mark.parametrize(("mde", "sd"), [(0.2, 1.0), (5.0, 40.0), (1.0, 1.0), (0.01, 0.3)])
@pytest.mark.parametrize("two_sided", [True, False])
def test_sample_size_matches_statsmodels(alpha, power, mde, sd, two_sided):
    alternative = "two-sided" if two_sided else "larger"
    normal = NormalIndPower().solve_power(
        effect_size=mde / sd, alpha=alpha, power=power, alternative=alternative
    )
    ours = sample_size(alpha=alpha, power=power, mde=mde, sd=sd, two_sided=two_sided)
    assert ours == max(2, math.ceil(normal))
    # The t test needs a little more: the normal form is its large-sample limit.
    t_based = tt_ind_solve_power(
        effect_size=mde / sd, alpha=alpha, power=power, alternative=alternative
    )
    assert 0 <= math.ceil(t_based) - ours <= 2


@pytest.mark.parametrize("alpha", [0.01, 0.05])
@pytest.mark.parametrize("power", [0.8, 0.95])
@pytest.mark.parametrize(
    ("baseline", "mde"), [(0.1, 0.02), (0.5, -0.05), (0.02, 0.01), (0.9, 0.05)]
)
@pytest.mark.parametrize("two_sided", [True, False])
def test_proportion_sample_size_matches_statsmodels(alpha, power, baseline, mde, two_sided):
    """Fleiss' form (pooled variance under H0, unpooled under H1) is statsmodels'
    samplesize_proportions_2indep_onetail exactly; NormalIndPower with Cohen's arcsine h
    stabilises the variance instead of using it, and lands within a few percent."""
    alternative = "two-sided" if two_sided else ("larger" if mde > 0 else "smaller")
    ours = proportion_sample_size(
        alpha=alpha, power=power, baseline=baseline, mde=mde, two_sided=two_sided
    )
    fleiss = samplesize_proportions_2indep_onetail(
        diff=mde, prop2=baseline, power=power, alpha=alpha, alternative=alternative
    )
    assert ours == math.ceil(fleiss)
    h = proportion_effectsize(baseline + mde, baseline)
    arcsine = NormalIndPower().solve_power(
        effect_size=abs(h),
        alpha=alpha,
        power=power,
        alternative=alternative.replace("smaller", "larger"),
    )
    assert abs(ours - arcsine) / arcsine < 0.05


# -- the mixture SPRT -------------------------------------------------------------------------
def _arms(rng, n, delta=0.0, sd=1.0, n_t=None):
    return Moments.of(rng.normal(0, sd, n)), Moments.of(rng.normal(delta, sd, n_t or n))


def test_mixture_likelihood_ratio_is_the_integral_it_claims():
    """Lambda and Lambda+ against numerical integration of the Gaussian likelihood ratio."""
    for d, v, tau in [(0.3, 0.01, 0.2), (-0.1, 0.02, 0.5), (1.5, 0.4, 1.0), (0.05, 1e-3, 0.05)]:

        def lr(theta, d=d, v=v):
            return math.exp(theta * d / v - theta * theta / (2 * v))

        two = integrate.quad(lambda u, tau=tau: lr(u) * stats.norm.pdf(u, 0, tau), -40, 40)[0]
        assert rel(math.exp(float(st.msprt_log_lr(d, v, tau * tau))), two) < 1e-7
        one = integrate.quad(lambda u, tau=tau: lr(u) * 2 * stats.norm.pdf(u, 0, tau), 0, 40)[0]
        assert rel(math.exp(st._one_sided_log_lr(d, v, tau * tau)), one) < 1e-7


def test_far_from_null_it_rejects_even_with_a_huge_tau():
    rng = np.random.default_rng(1)
    control, treatment = _arms(rng, 400, delta=1.0)
    for tau in (None, 0.5, 1e6):
        r = sequential_test(control, treatment, alpha=ALPHA, kind="mean", tau=tau)
        assert r.p_value < 1e-6 and r.lower > 0.5 and r.upper < 1.5
    near = sequential_test(*_arms(rng, 400, delta=0.0), alpha=ALPHA, kind="mean")
    assert near.p_value > ALPHA and near.lower < 0 < near.upper


def test_p_value_and_interval_are_one_boundary():
    """The null at the edge of the confidence sequence has p exactly alpha."""
    rng = np.random.default_rng(2)
    control, treatment = _arms(rng, 300, delta=0.1, n_t=120)
    for kind, c, t in [
        ("mean", control, treatment),
        ("proportion", Moments.of([0, 1] * 40 + [0] * 20), Moments.of([1] * 60 + [0] * 40)),
    ]:
        r = sequential_test(c, t, alpha=ALPHA, kind=kind, tau=0.2)
        for edge in (r.lower, r.upper):
            at = sequential_test(c, t, alpha=ALPHA, kind=kind, tau=0.2, null=edge)
            assert at.p_value == pytest.approx(ALPHA, rel=1e-9)
    # Guardrail: the margin at the one-sided bound is the one non-inferiority just shows.
    g = non_inferiority(
        control, treatment, margin=0.0, alpha=ALPHA, kind="mean", higher_is_better=True
    )
    assert g.lower < 0
    at = non_inferiority(
        control, treatment, margin=-g.lower, alpha=ALPHA, kind="mean", higher_is_better=True
    )
    assert at.p_value == pytest.approx(ALPHA, rel=1e-9)


def _coverage(kind, experiments, looks, batch, delta, make, seed, tau=None):
    """Share of experiments whose interval ever misses the truth: the sequence's, and a
    fixed-horizon Welch interval's recomputed at every look."""
    rng = np.random.default_rng(seed)
    seq_miss = fixed_miss = 0
    for _ in range(experiments):
        c = t = Moments()
        seq_bad = fixed_bad = False
        for _ in range(looks):
            c = c.merge(Moments.of(make(rng, 0.0, batch)))
            t = t.merge(Moments.of(make(rng, delta, batch)))
            r = sequential_test(c, t, alpha=ALPHA, kind=kind, tau=tau)
            seq_bad |= not r.lower <= delta <= r.upper
            w = welch_test(c, t, alpha=ALPHA)
            fixed_bad |= not w.lower <= delta <= w.upper
        seq_miss += seq_bad
        fixed_miss += fixed_bad
    return seq_miss / experiments, fixed_miss / experiments


@pytest.mark.parametrize(
    ("kind", "make", "delta"),
    [
        ("mean", lambda rng, shift, n: rng.normal(3.0 + shift, 2.0, n), 0.4),
        ("proportion", lambda rng, shift, n: rng.random(n) < 0.3 + shift, 0.05),
    ],
)
def test_confidence_sequence_covers_at_every_look(kind, make, delta):
    experiments = 300
    seq, fixed = _coverage(kind, experiments, looks=20, batch=25, delta=delta, make=make, seed=5)
    se = math.sqrt(ALPHA * (1 - ALPHA) / experiments)
    assert seq <= ALPHA + 2 * se  # always valid: misses the truth at most alpha of the time
    assert fixed > 2 * ALPHA  # peeking at a fixed-horizon interval does not


def test_p_value_never_rises_when_passed_back():
    rng = np.random.default_rng(3)
    c = t = Moments()
    p, raw, trail = 1.0, [], []
    for look in range(30):
        shift = 0.6 if look < 10 else -0.3  # early lead that fades: the raw p rises again
        c = c.merge(Moments.of(rng.normal(0, 1, 20)))
        t = t.merge(Moments.of(rng.normal(shift, 1, 20)))
        raw.append(sequential_test(c, t, alpha=ALPHA, kind="mean").p_value)
        p = sequential_test(c, t, alpha=ALPHA, kind="mean", previous_p=p).p_value
        trail.append(p)
    assert any(b > a for a, b in zip(raw, raw[1:], strict=False))  # raw p does rise...
    assert all(b <= a for a, b in zip(trail, trail[1:], strict=False))  # ...the passed-on p not
    assert trail[-1] == min(raw)


def test_width_shrinks_like_sqrt_log_n_over_n():
    sd, tau = 1.0, 0.5
    ns = [10**k for k in range(2, 9)]
    widths = []
    for n in ns:
        arm = Moments(n, 0.0, sd * sd * (n - 1))
        r = sequential_test(
            arm, Moments(n, 0.0, sd * sd * (n - 1)), alpha=ALPHA, kind="mean", tau=tau
        )
        widths.append(r.upper - r.lower)
    root_n = [w * math.sqrt(n) for w, n in zip(widths, ns, strict=True)]
    assert all(b > a for a, b in zip(root_n, root_n[1:], strict=False))  # slower than 1/sqrt(n)
    log_rate = [w / math.sqrt(math.log(n) / n) for w, n in zip(widths, ns, strict=True)]
    assert max(log_rate[1:]) / min(log_rate[1:]) < 1.25  # ...at the sqrt(log n / n) rate


def test_fixed_horizon_interval_is_narrower_than_the_sequence():
    rng = np.random.default_rng(4)
    for _ in range(200):
        n_c, n_t = rng.integers(20, 2000, 2)
        control = Moments.of(rng.normal(0, rng.uniform(0.5, 3), n_c))
        treatment = Moments.of(rng.normal(rng.normal(0, 1), rng.uniform(0.5, 3), n_t))
        fixed = welch_test(control, treatment, alpha=ALPHA)
        for tau in (None, 0.1, 1.0, 10.0):
            seq = sequential_test(control, treatment, alpha=ALPHA, kind="mean", tau=tau)
            assert fixed.upper - fixed.lower < seq.upper - seq.lower


def test_no_evidence_before_two_observations_per_arm():
    for c, t in [(Moments(), Moments.of([1.0, 2.0])), (Moments.of([1.0]), Moments.of([3.0, 5.0]))]:
        r = sequential_test(c, t, alpha=ALPHA, kind="mean", previous_p=0.7)
        assert (r.p_value, r.lower, r.upper) == (0.7, -math.inf, math.inf)
        doc = r.to_json()
        assert doc["lower"] is None and doc["upper"] is None and doc["p_value"] == 0.7
        assert SequentialResult.from_json(doc) == r
    r = sequential_test(Moments.of([1.0, 2.0]), Moments.of([2.0, 4.0]), alpha=ALPHA, kind="mean")
    assert math.isfinite(r.lower) and SequentialResult.from_json(r.to_json()) == r


def test_proportions_detect_a_lift_and_not_equality():
    c = Moments.of([1] * 100 + [0] * 900)
    assert (
        sequential_test(
            c, Moments.of([1] * 160 + [0] * 840), alpha=ALPHA, kind="proportion"
        ).p_value
        < ALPHA
    )
    same = sequential_test(c, Moments.of([1] * 103 + [0] * 897), alpha=ALPHA, kind="proportion")
    assert same.p_value > ALPHA
    # Both arms at zero: a pooled Bernoulli variance that never collapses, no false certainty.
    zero = sequential_test(
        Moments.of([0] * 50), Moments.of([0] * 50), alpha=ALPHA, kind="proportion"
    )
    assert zero.p_value == 1.0 and zero.lower < 0 < zero.upper


# -- guardrails ---------------------------------------------------------------------------------
def test_a_clearly_worse_treatment_is_harmful_and_an_equal_one_is_not():
    rng = np.random.default_rng(6)
    # success rate, higher is better: 10 % against 5 %, margin one point
    ctl = Moments.of(rng.random(4000) < 0.10)
    worse = non_inferiority(
        ctl,
        Moments.of(rng.random(4000) < 0.05),
        margin=0.01,
        alpha=ALPHA,
        kind="proportion",
        higher_is_better=True,
    )
    assert harmful(worse, margin=0.01, higher_is_better=True) and worse.p_value == 1.0
    equal = non_inferiority(
        ctl,
        Moments.of(rng.random(4000) < 0.10),
        margin=0.02,
        alpha=ALPHA,
        kind="proportion",
        higher_is_better=True,
    )
    assert not harmful(equal, margin=0.02, higher_is_better=True) and equal.p_value < ALPHA
    # latency, lower is better: +40 ms against a 10 ms margin, then the same latency
    lat = Moments.of(rng.normal(200, 30, 500))
    slow = non_inferiority(
        lat,
        Moments.of(rng.normal(240, 30, 100)),
        margin=10.0,
        alpha=ALPHA,
        kind="mean",
        higher_is_better=False,
    )
    assert harmful(slow, margin=10.0, higher_is_better=False)
    assert slow.lower > 10.0 and slow.p_value > 0.5
    same = non_inferiority(
        lat,
        Moments.of(rng.normal(200, 30, 100)),
        margin=10.0,
        alpha=ALPHA,
        kind="mean",
        higher_is_better=False,
    )
    assert not harmful(same, margin=10.0, higher_is_better=False)
    # the direction matters: the slow treatment is not harmful if higher were better
    assert not harmful(slow, margin=10.0, higher_is_better=True)


def test_equal_arms_are_rarely_called_harmful_at_any_look():
    rng = np.random.default_rng(8)
    experiments, flagged = 300, 0
    for _ in range(experiments):
        c = t = Moments()
        hit = False
        for _ in range(20):
            c = c.merge(Moments.of(rng.exponential(100, 30)))  # skewed, like latency
            t = t.merge(Moments.of(rng.exponential(100, 30)))
            r = non_inferiority(c, t, margin=0.0, alpha=ALPHA, kind="mean", higher_is_better=False)
            hit |= harmful(r, margin=0.0, higher_is_better=False)
        flagged += hit
    assert flagged / experiments <= ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / experiments)


# -- bad input ----------------------------------------------------------------------------------
A, B = Moments.of([1.0, 2.0, 3.0]), Moments.of([2.0, 3.0, 5.0])
P = Moments.of([0, 1, 1])
BAD = [
    (lambda: Moments(-1, 0.0, 0.0), "n"),
    (lambda: Moments(2, math.nan, 0.0), "mean"),
    (lambda: Moments(2, 1.0, -0.5), "m2"),
    (lambda: Moments(1.5, 1.0, 0.0), "n"),  # type: ignore[arg-type]
    (lambda: Moments(0, 3.0, 0.0), "n"),
    (lambda: Moments.of([1.0, math.inf]), "values"),
    (lambda: Moments.of(["a"]), "values"),  # type: ignore[list-item]
    (lambda: Moments.from_json({"n": 2, "mean": 1.0}), "m2"),
    (lambda: Moments.from_json([1, 2, 3]), "moments"),
    (lambda: A.add(math.nan), "x"),
    (lambda: sequential_test(A, B, alpha=1.0, kind="mean"), "alpha"),
    (lambda: sequential_test(A, B, alpha=0.0, kind="mean"), "alpha"),
    (lambda: sequential_test(A, B, alpha=ALPHA, kind="median"), "kind"),  # type: ignore[arg-type]
    (lambda: sequential_test(A, B, alpha=ALPHA, kind="mean", tau=0.0), "tau"),
    (lambda: sequential_test(A, B, alpha=ALPHA, kind="mean", tau=math.inf), "tau"),
    (lambda: sequential_test(A, B, alpha=ALPHA, kind="mean", previous_p=1.5), "previous_p"),
    (lambda: sequential_test(A, B, alpha=ALPHA, kind="mean", null=math.nan), "null"),
    (lambda: sequential_test(P, B, alpha=ALPHA, kind="proportion"), "treatment.mean"),
    (lambda: sequential_test([1, 2], B, alpha=ALPHA, kind="mean"), "control"),  # type: ignore[arg-type]
    (
        lambda: non_inferiority(
            P, P, margin=-0.1, alpha=ALPHA, kind="proportion", higher_is_better=True
        ),
        "margin",
    ),
    (
        lambda: non_inferiority(
            P, P, margin=0.1, alpha=2, kind="proportion", higher_is_better=True
        ),
        "alpha",
    ),
    (
        lambda: non_inferiority(
            P,
            P,
            margin=0.1,
            alpha=ALPHA,
            kind="proportion",
            higher_is_better="yes",  # type: ignore[arg-type]
        ),
        "higher_is_better",
    ),
    (
        lambda: harmful(SequentialResult(0, -1, 1, 1, 2, 2), margin=-1, higher_is_better=True),
        "margin",
    ),
    (lambda: harmful({"lower": 0}, margin=1, higher_is_better=True), "result"),  # type: ignore[arg-type]
    (lambda: srm_test([10], [1]), "observed"),
    (lambda: srm_test([10, -1], [1, 1]), "observed[1]"),
    (lambda: srm_test([10, 2.5], [1, 1]), "observed[1]"),  # type: ignore[list-item]
    (lambda: srm_test([10, 20], [1, 1, 1]), "expected_weights"),
    (lambda: srm_test([10, 20], [1, 0]), "expected_weights[1]"),
    (lambda: srm_test([0, 0], [1, 1]), "observed"),
    (lambda: srm_test([10, 20], [1, 1], threshold=0), "threshold"),
    (lambda: welch_test(Moments.of([1.0]), B, alpha=ALPHA), "control.n"),
    (lambda: welch_test(Moments.of([1.0, 1.0]), Moments.of([2.0, 2.0]), alpha=ALPHA), "control.m2"),
    (lambda: welch_test(A, B, alpha=-0.1), "alpha"),
    (lambda: sprt(A, B, alpha=ALPHA, power=0.04, kind="mean", null=0, alternative=1), "power"),
    (lambda: sprt(A, B, alpha=ALPHA, power=0.8, kind="mean", null=1, alternative=1), "alternative"),
    (lambda: sprt(A, B, alpha=ALPHA, power=0.8, kind="mean", null=math.nan, alternative=1), "null"),
    (lambda: sprt(A, B, alpha=0, power=0.8, kind="mean", null=0, alternative=1), "alpha"),
    (lambda: sprt(A, B, alpha=ALPHA, power=0.8, kind="median", null=0, alternative=1), "kind"),  # type: ignore[arg-type]
    (lambda: least_average_n(alpha=ALPHA, power=0.8, information=0), "information"),
    (lambda: sprt_average_n(alpha=ALPHA, power=1.0, information=1), "power"),
    (lambda: sample_size(alpha=ALPHA, power=1.0, mde=1, sd=1), "power"),
    (lambda: sample_size(alpha=ALPHA, power=0.8, mde=0, sd=1), "mde"),
    (lambda: sample_size(alpha=ALPHA, power=0.8, mde=1, sd=-1), "sd"),
    (lambda: sample_size(alpha=ALPHA, power=0.8, mde=math.inf, sd=1), "mde"),
    (lambda: sample_size(alpha=ALPHA, power=0.8, mde=1, sd=1, two_sided=1), "two_sided"),  # type: ignore[arg-type]
    (lambda: proportion_sample_size(alpha=ALPHA, power=0.8, baseline=1.2, mde=0.1), "baseline"),
    (lambda: proportion_sample_size(alpha=ALPHA, power=0.8, baseline=0.95, mde=0.1), "mde"),
    (lambda: proportion_sample_size(alpha=ALPHA, power=0.01, baseline=0.5, mde=0.1), "power"),
    (
        lambda: SequentialResult.from_json(
            {"difference": 0, "p_value": 2, "n_control": 1, "n_treatment": 1}
        ),
        "p_value",
    ),
]


@pytest.mark.parametrize(("call", "field"), BAD, ids=[f"{i}-{f}" for i, (_, f) in enumerate(BAD)])
def test_bad_input_is_refused_naming_the_field(call, field):
    with pytest.raises(ValidationFailedError) as info:
        call()
    assert info.value.field == field


# -- the hold-out gate's paired test ----------------------------------------------------------
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("margin", [0.0, 0.3])
def test_paired_test_matches_scipy_ttest_rel(seed: int, margin: float) -> None:
    rng = np.random.default_rng(seed)
    control = rng.normal(10.0, 2.0, size=40 + seed)
    treatment = control + rng.normal(0.2 * (seed - 3), 1.0, size=control.size)
    got = paired_test(Moments.of(treatment - control), alpha=ALPHA, margin=margin)
    want = stats.ttest_rel(treatment + margin, control, alternative="greater")
    assert got.p_value == pytest.approx(want.pvalue, rel=1e-9, abs=1e-12)
    assert got.statistic == pytest.approx(want.statistic, rel=1e-9)
    assert got.df == want.df
    lower = stats.ttest_rel(treatment, control, alternative="greater").confidence_interval(
        1 - ALPHA
    )
    assert got.lower == pytest.approx(lower.low, rel=1e-9)


def test_paired_ties_are_no_evidence_and_constant_gains_are() -> None:
    tie = paired_test(Moments.of([0.0] * 100), alpha=ALPHA)
    assert tie.p_value == 1.0 and tie.difference == 0.0
    gain = paired_test(Moments.of([1.0] * 30), alpha=ALPHA)
    assert gain.p_value == 0.0
    within = paired_test(Moments.of([-0.5] * 30), alpha=ALPHA, margin=1.0)
    assert within.p_value == 0.0  # worse by less than the margin: non-inferior


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"differences": Moments.of([1.0]), "alpha": ALPHA}, "differences.n"),
        ({"differences": Moments.of([1.0, 2.0]), "alpha": 1.5}, "alpha"),
        ({"differences": Moments.of([1.0, 2.0]), "alpha": ALPHA, "margin": -1.0}, "margin"),
        ({"differences": [1.0, 2.0], "alpha": ALPHA}, "differences"),
    ],
)
def test_paired_test_names_the_bad_argument(kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationFailedError) as err:
        paired_test(**kwargs)
    assert err.value.field == field


# -- Wald's SPRT ------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_sprt_log_lr_is_the_gaussian_likelihood_ratio(seed: int) -> None:
    """log LR = log N(D; alternative, V) - log N(D; null, V), with sequential_test's plug-in V."""
    rng = np.random.default_rng(seed)
    c, t = rng.normal(1.0, 2.0, 50 + seed), rng.normal(1.3, 1.5, 70)
    control, treatment = Moments.of(c), Moments.of(t)
    null, alternative = -0.2 * seed, 0.5
    got = sprt(
        control, treatment, alpha=ALPHA, power=0.8, kind="mean", null=null, alternative=alternative
    )
    d = t.mean() - c.mean()
    v = max(
        c.var(ddof=1) / len(c) + t.var(ddof=1) / len(t),
        (((len(c) - 1) * c.var(ddof=1) + (len(t) - 1) * t.var(ddof=1)) / (len(c) + len(t) - 2))
        * (1 / len(c) + 1 / len(t)),
    )
    want = stats.norm.logpdf(d, alternative, math.sqrt(v)) - stats.norm.logpdf(
        d, null, math.sqrt(v)
    )
    assert rel(got.log_lr, want) < 1e-9
    assert got.p_value == pytest.approx(min(1.0, math.exp(-want)))


def test_sprt_decides_at_walds_boundaries() -> None:
    log_b, log_a = sprt_bounds(ALPHA, 0.8)
    assert (log_b, log_a) == pytest.approx((math.log(0.2 / 0.95), math.log(20)))
    rng = np.random.default_rng(3)
    base = Moments.of(rng.normal(0, 1, 400))
    better = Moments.of(rng.normal(0.5, 1, 400))
    same = Moments.of(rng.normal(0, 1, 400))
    kw = {"alpha": ALPHA, "power": 0.8, "kind": "mean", "null": 0.0, "alternative": 0.3}
    assert sprt(base, better, **kw).decision == "reject"  # type: ignore[arg-type]
    assert sprt(base, same, **kw).decision == "accept"  # type: ignore[arg-type]
    few = sprt(Moments.of([0.1, -0.2, 0.3]), Moments.of([0.0, 0.4, 0.1]), **kw)  # type: ignore[arg-type]
    assert few.decision == "continue" and few.p_value == 1.0
    # p never rises once passed back
    again = sprt(base, same, previous_p=0.3, **kw)  # type: ignore[arg-type]
    assert again.p_value == 0.3


def test_sprt_on_constant_arms_decides_by_the_nearer_hypothesis() -> None:
    kw = {"alpha": ALPHA, "power": 0.8, "kind": "mean", "null": -5.0, "alternative": 0.0}
    same = sprt(Moments.of([500.0] * 4), Moments.of([500.0] * 4), **kw)  # type: ignore[arg-type]
    worse = sprt(Moments.of([500.0] * 4), Moments.of([490.0] * 4), **kw)  # type: ignore[arg-type]
    assert (same.decision, same.p_value) == ("reject", 0.0)
    assert (worse.decision, worse.p_value) == ("accept", 1.0)
    assert worse.to_json()["log_lr"] is None  # JSON has no infinity


def test_sprt_on_proportions_uses_the_pooled_bernoulli_variance() -> None:
    control, treatment = Moments.of([1.0] * 30 + [0.0] * 70), Moments.of([1.0] * 45 + [0.0] * 55)
    got = sprt(
        control, treatment, alpha=ALPHA, power=0.8, kind="proportion", null=0.0, alternative=0.1
    )
    pbar = 0.375
    v = pbar * (1 - pbar) * (2 / 100)
    assert got.log_lr == pytest.approx(0.1 * (0.15 - 0.05) / v)


def _sprt_streams(effect: float, experiments: int = 4000, n: int = 1200, seed: int = 0):
    """Each experiment's first decisive n (n: none) and decision, a look every 5 per arm."""
    rng = np.random.default_rng(seed)
    looks = np.arange(5, n + 1, 5)
    c = rng.normal(0.0, 1.0, (experiments, n)).cumsum(axis=1)[:, looks - 1] / looks
    t = rng.normal(effect, 1.0, (experiments, n)).cumsum(axis=1)[:, looks - 1] / looks
    log_lr = sprt_log_lr(t - c, 2.0 / looks, 0.0, 0.2)  # sd known: V = 2 / n
    log_b, log_a = sprt_bounds(ALPHA, 0.8)
    decided = (log_lr >= log_a) | (log_lr <= log_b)
    first = np.where(decided.any(axis=1), decided.argmax(axis=1), len(looks) - 1)
    rejected = log_lr[np.arange(experiments), first] >= log_a
    return looks[first], rejected


def test_sprt_size_power_and_average_n_agree_with_walds_theory() -> None:
    """Size <= alpha; power near (above, by overshoot) the plan; the average n lies between
    the information bound and Wald's approximation plus the overshoot of a 5-per-arm look."""
    info = 0.2**2 / 4.0
    wald_h0, wald_h1 = sprt_average_n(alpha=ALPHA, power=0.8, information=info)
    n0, rejected0 = _sprt_streams(0.0)
    n1, rejected1 = _sprt_streams(0.2, seed=1)
    assert rejected0.mean() <= ALPHA
    assert 0.78 <= rejected1.mean() <= 0.9
    assert least_average_n(alpha=ALPHA, power=0.8, information=info) < n1.mean()
    assert wald_h1 * 0.95 < n1.mean() < wald_h1 * 1.3
    assert wald_h0 * 0.95 < n0.mean() < wald_h0 * 1.3


def test_no_test_can_average_below_0_6_of_the_fixed_n_at_the_mde_at_power_0_8() -> None:
    """The information bound against the one-sided fixed-horizon n: 0.616x at alpha 0.05."""
    mde = 0.2
    fixed = sample_size(alpha=ALPHA, power=0.8, mde=mde, sd=1.0, two_sided=False)
    bound = least_average_n(alpha=ALPHA, power=0.8, information=mde**2 / 4.0)
    assert bound / fixed == pytest.approx(0.616, abs=0.002)
