"""Experiment statistics: pure Python + numpy + `math` (no scipy in the Lambda layer).

Arms are summarised by `Moments` (n, mean, M2 = sum of squared deviations), merged exactly
with Chan, Golub & LeVeque's parallel formula (Welford's update is its n = 1 case):
    n = na + nb,  delta = mb - ma,  mean = ma + delta * nb / n,
    M2 = M2a + M2b + delta^2 * na * nb / n.

Sequential test (always valid; Johari, Pekelis & Walsh, "Always valid inference", 2017/2022).
The estimate D = mean_t - mean_c is treated as Gaussian with a plug-in variance V (below), and
H0: delta == null is tested with the mixture likelihood ratio, the effect mixed over
N(null, tau^2):
    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 (D - null)^2 / (2 V (V + tau^2))).
Lambda is a (plug-in) nonnegative martingale under H0, so by Ville's inequality
P(sup Lambda >= 1/alpha) <= alpha: the p-value p_n = min(p_{n-1}, 1 / Lambda_n) is valid at
every look, however often one peeks. Inverting it gives the confidence sequence in closed form
    D -+ r,  r^2 = 2 V (V + tau^2) / tau^2 * (log(1/alpha) + log((V + tau^2) / V) / 2),
which is the normal-mixture boundary of Howard, Ramdas, McAuliffe & Sekhon (2021),
"Time-uniform, nonparametric, nonasymptotic confidence sequences" (the two-sided normal
mixture, with intrinsic time 1/V and rho = 1/tau^2). Its width shrinks like sqrt(log n / n); a fixed-horizon interval
(width ~ sqrt(1/n)) is narrower - the price of being allowed to look at every step.

Plug-in variance:
    kind "mean":        V = max(s_c^2 / n_c + s_t^2 / n_t, s_pooled^2 (1/n_c + 1/n_t))
    kind "proportion":  V = pbar (1 - pbar) (1/n_c + 1/n_t),  pbar the pooled proportion.
Equal proportions have equal variances, so the Bernoulli variance is pooled (unpooled, rare
events in a small arm shrink V: a 90/10 A/A at p = 0.02 rejected 9 % of the time). Equal means
need not have equal spreads, and there each form fails where the other holds: pooled, a 90/10
split whose treatment is twice as spread rejected 34 % of the time; Welch, a 90/10 split of
lognormal data rejected 11 % (a small skewed arm underestimates its variance just when its mean
is low). The larger of the two kept both under alpha; with equal arms the two coincide. A pbar
of 0 or 1 is replaced by (k + 1/2) / (n + 1) so that V never collapses to 0.

tau: the mixture is tightest where tau^2 / V = r*, r* = 2 log(1/alpha) + log(1 + r*) (~8.2 at
alpha = 0.05). When an experiment is planned for a minimum detectable effect, pass tau = mde
(Johari et al. recommend matching the mixture to the effects one expects): at the
fixed-horizon n for power 0.8, V = mde^2 / (z_{alpha/2} + z_beta)^2 ~ mde^2 / 7.85, so
tau^2 / V ~ 7.9, close to r*. bench/experiment_bench.py prints how the choice plays out. Left
None, tau = DEFAULT_TAU_SD * the pooled standard deviation (an effect of a quarter standard
deviation; tightest near n ~ 260 per arm, and wide at small n, where the plug-in variance is
least trustworthy).

Guardrails (non-inferiority) use the one-sided mixture (half-normal mixing density on the
side of the alternative), whose likelihood ratio is
    Lambda+ = 2 Phi(u) * sqrt(V / (V + tau^2)) * exp(u^2 / 2),  u = d tau / sqrt(V (V + tau^2)),
d the distance from the margin in the direction of "better"; its inversion gives each bound
of a one-sided (1 - alpha) confidence sequence.

Planned for one effect: Wald's SPRT of delta == null against delta == alternative (e.g. the
MDE) on the same Gaussian D, log LR = (alternative - null)(D - (null + alternative)/2) / V. It
rejects at LR >= 1/alpha (Ville, so valid at every look) and accepts H0 at
LR <= (1 - power)/(1 - alpha) (Wald). No test with the same size and power at the alternative
can average fewer observations there than d(power || alpha) / KL (binary KL over the KL per
observation); at alpha 0.05 and power 0.8 that is 0.616x the one-sided fixed-horizon n
(least_average_n), which is why a sequential test cannot halve the fixed n at the MDE itself:
its savings come from effects away from the MDE, above all from the nulls it drops early.

Fixed horizon: Welch's t test (Welch 1947) with Welch-Satterthwaite degrees of freedom,
    t = D / sqrt(W),  df = W^2 / ((s_c^2/n_c)^2 / (n_c - 1) + (s_t^2/n_t)^2 / (n_t - 1)),
    W = s_c^2 / n_c + s_t^2 / n_t,
the Student t CDF from the regularized incomplete beta function, I_x(df/2, 1/2) with
x = df / (df + t^2), evaluated by Lentz's continued fraction (Numerical Recipes 6.4).

The hold-out gate pairs candidate and incumbent on the same items (episodes, samples): a
one-sided paired t test of the mean difference against -margin, df = n - 1.

Sample-ratio mismatch: Pearson's chi-square on the arms' counts against the planned weights,
k - 1 degrees of freedom, the survival function being the regularized upper incomplete gamma
Q((k-1)/2, x/2) (series below a + 1, Lentz's continued fraction above).

Sample sizes (per arm, fixed horizon): the normal approximation of the two-sample test, both
tails counted as statsmodels' NormalIndPower does, with effect size mde / sd; for proportions
Fleiss' form with the pooled variance under H0 and the unpooled one under H1,
    n = (z_{alpha/2} sqrt(2 pbar (1 - pbar)) + z_beta sqrt(p1 q1 + p2 q2))^2 / mde^2,
which is statsmodels' samplesize_proportions_2indep_onetail (its NormalIndPower with Cohen's
arcsine effect size h answers within a few percent: a variance-stabilising transform instead
of the variances themselves).

Every function refuses bad input with ValidationFailedError naming the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Literal, cast

import numpy as np

from chimera.domain import checks
from chimera.domain.errors import ValidationFailedError

Kind = Literal["mean", "proportion"]
KINDS: tuple[str, ...] = ("mean", "proportion")
DEFAULT_TAU_SD = 0.25  # tau, when not given, as a multiple of the pooled standard deviation
_N = NormalDist()
_EPS = 1e-15
_TINY = 1e-300
_MAX_ITER = 10_000


# -- validation -------------------------------------------------------------------------------
_finite, _open_unit, _positive = checks.finite, checks.open_unit, checks.positive


def _kind(value: Any) -> Kind:
    if value not in KINDS:
        raise ValidationFailedError("kind", f"must be one of {KINDS}, got {value!r}")
    return cast(Kind, value)


def _p(field: str, value: Any) -> float:
    x = _finite(field, value)
    if not 0.0 <= x <= 1.0:
        raise ValidationFailedError(field, f"must be in [0, 1], got {x}")
    return x


def _arm(field: str, arm: Any, kind: Kind) -> Moments:
    if not isinstance(arm, Moments):
        raise ValidationFailedError(field, f"must be Moments, got {type(arm).__name__}")
    if kind == "proportion" and not 0.0 <= arm.mean <= 1.0:
        raise ValidationFailedError(
            f"{field}.mean", f"a proportion must be in [0, 1], got {arm.mean}"
        )
    return arm


# -- sufficient statistics --------------------------------------------------------------------
@dataclass(frozen=True)
class Moments:
    """Mergeable sufficient statistics of one arm (Welford / Chan et al.)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int | np.integer):
            raise ValidationFailedError("n", f"must be an integer, got {self.n!r}")
        if self.n < 0:
            raise ValidationFailedError("n", f"must be >= 0, got {self.n}")
        mean, m2 = _finite("mean", self.mean), _finite("m2", self.m2)
        if m2 < 0.0:
            raise ValidationFailedError("m2", f"must be >= 0, got {m2}")
        if self.n == 0 and (mean != 0.0 or m2 != 0.0):
            raise ValidationFailedError("n", "an empty arm has mean 0 and m2 0")
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "m2", m2)

    @property
    def variance(self) -> float:
        """Sample variance (n - 1); 0.0 when n < 2."""
        return self.m2 / (self.n - 1) if self.n >= 2 else 0.0

    def merge(self, other: Moments) -> Moments:
        """Exact merge of two disjoint samples (Chan, Golub & LeVeque)."""
        if not isinstance(other, Moments):
            raise ValidationFailedError("other", f"must be Moments, got {type(other).__name__}")
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * other.n / n
        m2 = self.m2 + other.m2 + delta * delta * self.n * other.n / n
        return Moments(n, mean, m2)

    def add(self, x: float) -> Moments:
        return self.merge(Moments(1, _finite("x", x), 0.0))

    @classmethod
    def of(cls, values: Iterable[float]) -> Moments:
        try:
            arr = np.asarray(list(values), dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValidationFailedError("values", f"must be numbers ({exc})") from None
        if arr.ndim != 1:
            raise ValidationFailedError("values", "must be a flat sequence of numbers")
        if not np.isfinite(arr).all():
            raise ValidationFailedError("values", "must all be finite")
        if arr.size == 0:
            return cls()
        mean = float(arr.mean())
        return cls(int(arr.size), mean, float(((arr - mean) ** 2).sum()))

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean, "m2": self.m2}

    @classmethod
    def from_json(cls, d: Any) -> Moments:
        if not isinstance(d, dict):
            raise ValidationFailedError("moments", f"must be an object, got {type(d).__name__}")
        missing = [k for k in ("n", "mean", "m2") if k not in d]
        if missing:
            raise ValidationFailedError(missing[0], "is required")
        return cls(d["n"], d["mean"], d["m2"])


# -- special functions ------------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITER):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta did not converge (a={a}, b={b}, x={x})")


def betainc(a: float, b: float, x: float, y: float | None = None) -> float:
    """Regularized incomplete beta I_x(a, b); `y` = 1 - x when known more precisely."""
    y = 1.0 - x if y is None else y
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, y) / b


def t_sf(t: float, df: float) -> float:
    """Survival function of Student's t with `df` degrees of freedom."""
    df = _positive("df", df)
    t = float(t)
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t), t * t / (df + t * t))
    return tail if t > 0 else 1.0 - tail


def t_cdf(t: float, df: float) -> float:
    return t_sf(-float(t), df)


def _t_pdf(t: float, df: float) -> float:
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(t * t / df))


def t_isf(q: float, df: float) -> float:
    """The t with t_sf(t, df) == q: Newton from the Cornish-Fisher guess, kept in a bracket."""
    q = _open_unit("q", q)
    df = _positive("df", df)
    if q > 0.5:
        return -t_isf(1.0 - q, df)
    z = _N.inv_cdf(1.0 - q)
    t = max(z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df * df), 1e-3)
    lo, hi = 0.0, math.inf
    for _ in range(400):
        f = t_sf(t, df) - q
        if f > 0:
            lo = t
        else:
            hi = t
        nxt = t + f / _t_pdf(t, df)
        if not lo < nxt < hi:
            nxt = 0.5 * (lo + hi) if math.isfinite(hi) else 2.0 * t
        if abs(nxt - t) <= 1e-15 * max(1.0, abs(t)):
            return nxt
        t = nxt
    return t


def _gammainc_upper(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) (Numerical Recipes 6.2)."""
    if x <= 0.0:
        return 1.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1.0:  # series for P, then Q = 1 - P
        ap, total = a, 1.0 / a
        term = total
        for _ in range(_MAX_ITER):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * _EPS:
                return 1.0 - total * math.exp(log_front)
        raise ArithmeticError(f"incomplete gamma series did not converge (a={a}, x={x})")
    b = x + 1.0 - a  # continued fraction for Q (modified Lentz)
    c, d = 1.0 / _TINY, 1.0 / b
    h = d
    for i in range(1, _MAX_ITER):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = b + an / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return math.exp(log_front) * h
    raise ArithmeticError(f"incomplete gamma fraction did not converge (a={a}, x={x})")


def chi2_sf(x: float, dof: float) -> float:
    """Survival function of the chi-square distribution with `dof` degrees of freedom."""
    dof = _positive("dof", dof)
    return _gammainc_upper(dof / 2.0, float(x) / 2.0)


# -- the mixture SPRT, array-capable so that simulations use the very same formulas -------------
def msprt_terms(
    n_c: Any,
    mean_c: Any,
    m2_c: Any,
    n_t: Any,
    mean_t: Any,
    m2_t: Any,
    *,
    kind: Kind,
    tau: float | None = None,
) -> tuple[Any, Any, Any]:
    """(D, V, tau^2) from the arms' moments; floats or numpy arrays of equal shape (n >= 2)."""
    n_c, n_t = np.asarray(n_c, dtype=np.float64), np.asarray(n_t, dtype=np.float64)
    mean_c, mean_t = np.asarray(mean_c, dtype=np.float64), np.asarray(mean_t, dtype=np.float64)
    diff = mean_t - mean_c
    if kind == "proportion":  # equal proportions have equal variances: pool them
        pooled = _bernoulli_var(n_c + n_t, (n_c * mean_c + n_t * mean_t) / (n_c + n_t))
        v = pooled * (1.0 / n_c + 1.0 / n_t)
    else:  # the larger of the Welch and the pooled forms (see the module's docstring)
        m2_c, m2_t = np.asarray(m2_c, dtype=np.float64), np.asarray(m2_t, dtype=np.float64)
        pooled = (m2_c + m2_t) / (n_c + n_t - 2.0)
        welch = m2_c / (n_c - 1.0) / n_c + m2_t / (n_t - 1.0) / n_t
        v = np.maximum(welch, pooled * (1.0 / n_c + 1.0 / n_t))
    tau2 = DEFAULT_TAU_SD**2 * pooled if tau is None else np.float64(tau) ** 2
    return diff, v, tau2


def _bernoulli_var(n: Any, p: Any) -> Any:
    """p (1 - p); at p 0 or 1, (k + 1/2) / (n + 1) stands in so that V never collapses to 0."""
    edge = (p <= 0.0) | (p >= 1.0)
    shrunk = (n * p + 0.5) / (n + 1.0)
    q = np.where(edge, shrunk, p)
    return q * (1.0 - q)


def msprt_log_lr(d: Any, v: Any, tau2: Any) -> Any:
    """log Lambda of the two-sided normal mixture at distance d = D - null."""
    return 0.5 * np.log(v / (v + tau2)) + tau2 * d * d / (2.0 * v * (v + tau2))


def msprt_radius(v: Any, tau2: Any, alpha: float) -> Any:
    """Half-width of the (1 - alpha) confidence sequence around D."""
    return np.sqrt(2.0 * v * (v + tau2) / tau2 * (-math.log(alpha) + 0.5 * np.log1p(tau2 / v)))


def _one_sided_log_lr(d: float, v: float, tau2: float) -> float:
    """log Lambda+ of the half-normal mixture, d > 0 being evidence for the alternative."""
    u = d * math.sqrt(tau2 / (v * (v + tau2)))
    phi = _N.cdf(u)
    if phi <= 0.0:
        return -math.inf
    return math.log(2.0 * phi) + 0.5 * math.log(v / (v + tau2)) + 0.5 * u * u


def _one_sided_radius(v: float, tau2: float, alpha: float) -> float:
    """The d at which Lambda+ reaches 1/alpha (Lambda+ increases with d): bisection."""
    c = -math.log(alpha) + 0.5 * math.log1p(tau2 / v)
    lo, hi = math.sqrt(max(2.0 * (c - math.log(2.0)), 0.0)), math.sqrt(2.0 * c)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid * mid / 2.0 + math.log(2.0 * _N.cdf(mid)) < c:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    return hi * math.sqrt(v * (v + tau2) / tau2)


@dataclass(frozen=True)
class SequentialResult:
    difference: float  # treatment mean - control mean
    lower: float  # always-valid (1 - alpha) confidence sequence on the difference
    upper: float
    p_value: float  # always-valid p-value, already min'd with previous_p (monotone)
    n_control: int
    n_treatment: int

    def to_json(self) -> dict[str, Any]:
        return {
            "difference": self.difference,
            "lower": self.lower if math.isfinite(self.lower) else None,
            "upper": self.upper if math.isfinite(self.upper) else None,
            "p_value": self.p_value,
            "n_control": self.n_control,
            "n_treatment": self.n_treatment,
        }

    @classmethod
    def from_json(cls, d: Any) -> SequentialResult:
        if not isinstance(d, dict):
            raise ValidationFailedError("result", f"must be an object, got {type(d).__name__}")
        for key in ("difference", "p_value", "n_control", "n_treatment"):
            if key not in d:
                raise ValidationFailedError(key, "is required")
        lower, upper = d.get("lower"), d.get("upper")
        return cls(
            difference=_finite("difference", d["difference"]),
            lower=-math.inf if lower is None else _finite("lower", lower),
            upper=math.inf if upper is None else _finite("upper", upper),
            p_value=_p("p_value", d["p_value"]),
            n_control=int(_finite("n_control", d["n_control"])),
            n_treatment=int(_finite("n_treatment", d["n_treatment"])),
        )


def _prepare(
    control: Any, treatment: Any, alpha: Any, kind: Any, tau: Any, previous_p: Any
) -> tuple[Moments, Moments, float, Kind, float | None, float]:
    kind = _kind(kind)
    control, treatment = _arm("control", control, kind), _arm("treatment", treatment, kind)
    alpha = _open_unit("alpha", alpha)
    tau = None if tau is None else _positive("tau", tau)
    previous_p = _p("previous_p", previous_p)
    return control, treatment, alpha, kind, tau, previous_p


def _terms(
    control: Moments, treatment: Moments, kind: Kind, tau: float | None
) -> tuple[float, float, float] | None:
    """(D, V, tau^2), or None while the data cannot yet judge (n < 2, or no spread at all)."""
    if control.n < 2 or treatment.n < 2:
        return None
    diff, v, tau2 = msprt_terms(
        control.n,
        control.mean,
        control.m2,
        treatment.n,
        treatment.mean,
        treatment.m2,
        kind=kind,
        tau=tau,
    )
    d, v, tau2 = float(diff), float(v), float(tau2)
    if v <= 0.0 or tau2 <= 0.0:  # both arms constant: no scale to judge a difference against
        return None
    return d, v, tau2


def sequential_test(
    control: Moments,
    treatment: Moments,
    *,
    alpha: float,
    kind: Kind,
    tau: float | None = None,
    previous_p: float = 1.0,
    null: float = 0.0,
) -> SequentialResult:
    """Two-sided mSPRT of H0: treatment mean - control mean == `null`, valid at every look.

    tau: the mixture's scale, in the metric's units (pass the planned MDE); None takes
    DEFAULT_TAU_SD times the pooled standard deviation. previous_p: the p-value this returned
    at the previous look (1.0 at the first), so that the p-value never rises. lower/upper: the
    (1 - alpha) confidence sequence at this look (not intersected with earlier ones). Until both
    arms hold 2 observations, or while both arms are constant (kind "mean"), the data carry no
    evidence: p stays previous_p and the interval is (-inf, inf).
    """
    control, treatment, alpha, kind, tau, previous_p = _prepare(
        control, treatment, alpha, kind, tau, previous_p
    )
    null = _finite("null", null)
    terms = _terms(control, treatment, kind, tau)
    diff = treatment.mean - control.mean
    if terms is None:
        return SequentialResult(diff, -math.inf, math.inf, previous_p, control.n, treatment.n)
    d, v, tau2 = terms
    log_lr = float(msprt_log_lr(d - null, v, tau2))
    p = min(previous_p, math.exp(-log_lr) if log_lr > 0 else 1.0)
    r = float(msprt_radius(v, tau2, alpha))
    return SequentialResult(d, d - r, d + r, p, control.n, treatment.n)


def non_inferiority(
    control: Moments,
    treatment: Moments,
    *,
    margin: float,
    alpha: float,
    kind: Kind,
    higher_is_better: bool,
    previous_p: float = 1.0,
    tau: float | None = None,
) -> SequentialResult:
    """Guardrail: sequential one-sided test that the treatment is not worse by `margin` or more.

    p_value is the always-valid p of H0 "treatment worse by >= margin" (delta <= -margin when
    higher is better, delta >= margin when lower is better), from the one-sided (half-normal)
    mixture; p < alpha shows non-inferiority. lower and upper are each a one-sided (1 - alpha)
    always-valid bound on delta = treatment - control (together a 1 - 2 alpha sequence).
    Harm is shown when the bound on the "better" side lies beyond the margin: `upper < -margin`
    when higher is better, `lower > margin` when lower is better - `harmful()` says so.
    """
    control, treatment, alpha, kind, tau, previous_p = _prepare(
        control, treatment, alpha, kind, tau, previous_p
    )
    margin = _finite("margin", margin)
    if margin < 0.0:
        raise ValidationFailedError("margin", f"must be >= 0, got {margin}")
    if not isinstance(higher_is_better, bool):
        raise ValidationFailedError("higher_is_better", f"must be a bool, got {higher_is_better!r}")
    terms = _terms(control, treatment, kind, tau)
    diff = treatment.mean - control.mean
    if terms is None:
        return SequentialResult(diff, -math.inf, math.inf, previous_p, control.n, treatment.n)
    d, v, tau2 = terms
    toward_better = d + margin if higher_is_better else margin - d
    log_lr = _one_sided_log_lr(toward_better, v, tau2)
    p = min(previous_p, math.exp(-log_lr) if log_lr > 0 else 1.0)
    r = _one_sided_radius(v, tau2, alpha)
    return SequentialResult(d, d - r, d + r, p, control.n, treatment.n)


def harmful(result: SequentialResult, *, margin: float, higher_is_better: bool) -> bool:
    """True when the confidence sequence shows the treatment worse by more than `margin`."""
    if not isinstance(result, SequentialResult):
        raise ValidationFailedError("result", f"must be SequentialResult, got {type(result)}")
    margin = _finite("margin", margin)
    if margin < 0.0:
        raise ValidationFailedError("margin", f"must be >= 0, got {margin}")
    if higher_is_better:
        return result.upper < -margin
    return result.lower > margin


# -- Wald's SPRT, planned for one effect --------------------------------------------------------
Decision = Literal["reject", "accept", "continue"]


def sprt_log_lr(d: Any, v: Any, null: Any, alternative: Any) -> Any:
    """log LR of delta == alternative against delta == null, D ~ N(delta, V); arrays allowed."""
    step = np.asarray(alternative, dtype=np.float64) - null
    return step * (np.asarray(d, dtype=np.float64) - (null + alternative) / 2.0) / v


def sprt_bounds(alpha: float, power: float) -> tuple[float, float]:
    """(log B, log A): accept H0 at or below log B = log((1 - power) / (1 - alpha)), reject it
    at or above log A = log(1 / alpha) (Ville's bound, not Wald's (power / alpha))."""
    return math.log((1.0 - power) / (1.0 - alpha)), -math.log(alpha)


def sprt_average_n(*, alpha: float, power: float, information: float) -> tuple[float, float]:
    """Wald's approximate average sample numbers (under H0, under H1) of `sprt`, overshoot
    ignored; `information` is the KL divergence between the hypotheses per unit of n, e.g.
    mde^2 / (4 sd^2) per observation in each of two arms."""
    alpha, power = _open_unit("alpha", alpha), _open_unit("power", power)
    information = _positive("information", information)
    log_b, log_a = sprt_bounds(alpha, power)
    under_h0 = ((1.0 - alpha) * log_b + alpha * log_a) / -information
    under_h1 = (power * log_a + (1.0 - power) * log_b) / information
    return under_h0, under_h1


def least_average_n(*, alpha: float, power: float, information: float) -> float:
    """The fewest observations, on average under H1, that any test (sequential or not) with
    size alpha and this power can use: E1[N] * KL >= d(power || alpha), the binary KL
    divergence (Wald's identity and the data-processing inequality)."""
    alpha, power = _open_unit("alpha", alpha), _open_unit("power", power)
    information = _positive("information", information)
    kl = power * math.log(power / alpha) + (1.0 - power) * math.log((1.0 - power) / (1.0 - alpha))
    return kl / information


@dataclass(frozen=True)
class SprtResult:
    difference: float  # treatment mean - control mean
    log_lr: float  # log likelihood ratio of the alternative against the null
    p_value: float  # always valid: min(previous_p, 1 / LR)
    decision: Decision  # reject H0, accept H0 (the planned effect is not there), or continue
    n_control: int
    n_treatment: int

    def to_json(self) -> dict[str, Any]:
        return {
            "difference": self.difference,
            "log_lr": self.log_lr if math.isfinite(self.log_lr) else None,
            "p_value": self.p_value,
            "decision": self.decision,
            "n_control": self.n_control,
            "n_treatment": self.n_treatment,
        }


def sprt(
    control: Moments,
    treatment: Moments,
    *,
    alpha: float,
    power: float,
    kind: Kind,
    null: float,
    alternative: float,
    previous_p: float = 1.0,
) -> SprtResult:
    """Wald's sequential probability ratio test of delta == null against delta == alternative
    (delta = treatment mean - control mean), for an experiment planned around one effect.

    D ~ N(delta, V) with the plug-in V of `sequential_test`; the log likelihood ratio is
        log LR = (alternative - null) (D - (null + alternative) / 2) / V.
    LR is a martingale under H0, so rejecting at LR >= 1 / alpha keeps the size <= alpha at
    every look (Ville), and p = min(previous_p, 1 / LR) is always valid. It also accepts H0 at
    LR <= (1 - power) / (1 - alpha) (Wald), so an experiment without the planned effect ends
    early too. Among all tests with the same error rates at `null` and `alternative`, the SPRT
    uses the fewest observations on average at both (Wald & Wolfowitz 1948); on a continuum of
    effects the mixture test (`sequential_test`) does not need the effect to be planned.
    Arms that are both constant know the difference exactly: it decides by the nearer
    hypothesis.
    """
    control, treatment, alpha, kind, _, previous_p = _prepare(
        control, treatment, alpha, kind, None, previous_p
    )
    power = _open_unit("power", power)
    if power <= alpha:
        raise ValidationFailedError("power", f"must exceed alpha ({alpha}), got {power}")
    null, alternative = _finite("null", null), _finite("alternative", alternative)
    if alternative == null:
        raise ValidationFailedError("alternative", f"must differ from null ({null})")
    diff = treatment.mean - control.mean
    log_lr = 0.0
    if control.n >= 2 and treatment.n >= 2:
        d, v, _ = (
            float(x)
            for x in msprt_terms(
                control.n, control.mean, control.m2, treatment.n, treatment.mean,
                treatment.m2, kind=kind, tau=1.0,
            )
        )  # fmt: skip
        if v > 0.0:
            log_lr = float(sprt_log_lr(d, v, null, alternative))
        else:  # both arms constant: the sign of the evidence is certain
            toward = (alternative - null) * (d - (null + alternative) / 2.0)
            log_lr = math.inf if toward > 0 else -math.inf if toward < 0 else 0.0
    p = min(previous_p, math.exp(-log_lr) if log_lr > 0 else 1.0)
    log_b, log_a = sprt_bounds(alpha, power)
    decision: Decision = (
        "reject" if log_lr >= log_a else "accept" if log_lr <= log_b else "continue"
    )
    return SprtResult(diff, log_lr, p, decision, control.n, treatment.n)


# -- sample-ratio mismatch --------------------------------------------------------------------
@dataclass(frozen=True)
class SrmResult:
    statistic: float
    p_value: float
    mismatch: bool  # p_value < threshold

    def to_json(self) -> dict[str, Any]:
        return {"statistic": self.statistic, "p_value": self.p_value, "mismatch": self.mismatch}


def srm_test(
    observed: Sequence[int], expected_weights: Sequence[float], threshold: float = 0.001
) -> SrmResult:
    """Pearson's chi-square of the arms' counts against the planned split, k - 1 dof."""
    threshold = _open_unit("threshold", threshold)
    if isinstance(observed, str | bytes) or not isinstance(observed, Sequence):
        raise ValidationFailedError("observed", "must be a sequence of counts")
    if isinstance(expected_weights, str | bytes) or not isinstance(expected_weights, Sequence):
        raise ValidationFailedError("expected_weights", "must be a sequence of weights")
    if len(observed) < 2:
        raise ValidationFailedError("observed", f"needs at least 2 arms, got {len(observed)}")
    if len(expected_weights) != len(observed):
        raise ValidationFailedError(
            "expected_weights", f"needs {len(observed)} weights, got {len(expected_weights)}"
        )
    counts = []
    for i, o in enumerate(observed):
        if isinstance(o, bool) or not isinstance(o, int | np.integer) or o < 0:
            raise ValidationFailedError(f"observed[{i}]", f"must be a count >= 0, got {o!r}")
        counts.append(int(o))
    weights = [_positive(f"expected_weights[{i}]", w) for i, w in enumerate(expected_weights)]
    total = sum(counts)
    if total == 0:
        raise ValidationFailedError("observed", "holds no observations")
    w_sum = sum(weights)
    stat = 0.0
    for o, w in zip(counts, weights, strict=True):
        e = total * w / w_sum
        stat += (o - e) ** 2 / e
    p = chi2_sf(stat, len(counts) - 1)
    return SrmResult(stat, p, p < threshold)


# -- fixed horizon ----------------------------------------------------------------------------
@dataclass(frozen=True)
class FixedResult:
    difference: float
    statistic: float
    df: float
    p_value: float
    lower: float
    upper: float

    def to_json(self) -> dict[str, Any]:
        return {
            "difference": self.difference,
            "statistic": self.statistic,
            "df": self.df,
            "p_value": self.p_value,
            "lower": self.lower,
            "upper": self.upper,
        }


def welch_test(control: Moments, treatment: Moments, *, alpha: float) -> FixedResult:
    """Two-sided Welch t test of treatment - control, with its (1 - alpha) interval."""
    control, treatment = _arm("control", control, "mean"), _arm("treatment", treatment, "mean")
    alpha = _open_unit("alpha", alpha)
    for field, arm in (("control", control), ("treatment", treatment)):
        if arm.n < 2:
            raise ValidationFailedError(f"{field}.n", f"needs at least 2 observations, got {arm.n}")
    a, b = control.variance / control.n, treatment.variance / treatment.n
    v = a + b
    if v <= 0.0:
        raise ValidationFailedError("control.m2", "both arms have zero variance: t is undefined")
    diff = treatment.mean - control.mean
    se = math.sqrt(v)
    t = diff / se
    df = v * v / (a * a / (control.n - 1) + b * b / (treatment.n - 1))
    p = min(1.0, 2.0 * t_sf(abs(t), df))
    half = t_isf(alpha / 2.0, df) * se
    return FixedResult(diff, t, df, p, diff - half, diff + half)


def paired_test(differences: Moments, *, alpha: float, margin: float = 0.0) -> FixedResult:
    """One-sided paired t test that the mean difference (treatment - control on the same
    items) exceeds -margin: evidence of improvement at margin 0, of non-inferiority above it.

    H0: mean <= -margin; the p-value is P(T >= t), T ~ Student(n - 1). The interval is the
    two-sided (1 - 2 alpha) one, whose lower bound is the one-sided (1 - alpha) bound. Items
    that all differ by the same amount (zero variance) decide by the sign alone: a tie, every
    item equal, is never evidence of improvement.
    """
    differences = _arm("differences", differences, "mean")
    alpha = _open_unit("alpha", alpha)
    margin = _finite("margin", margin)
    if margin < 0.0:
        raise ValidationFailedError("margin", f"must be >= 0, got {margin}")
    if differences.n < 2:
        raise ValidationFailedError(
            "differences.n", f"needs at least 2 paired items, got {differences.n}"
        )
    diff, df = differences.mean, float(differences.n - 1)
    excess = diff + margin
    se = math.sqrt(differences.variance / differences.n)
    if se == 0.0:
        p = 0.0 if excess > 0.0 else 1.0
        return FixedResult(diff, 0.0, df, p, diff, diff)
    t = excess / se
    half = t_isf(alpha, df) * se
    return FixedResult(diff, t, df, min(1.0, t_sf(t, df)), diff - half, diff + half)


# -- planning ---------------------------------------------------------------------------------
def _planning(alpha: Any, power: Any, two_sided: Any) -> tuple[float, float, bool]:
    alpha, power = _open_unit("alpha", alpha), _open_unit("power", power)
    if not isinstance(two_sided, bool):
        raise ValidationFailedError("two_sided", f"must be a bool, got {two_sided!r}")
    if power <= (alpha / 2 if two_sided else alpha):
        raise ValidationFailedError("power", f"must exceed the test's size, got {power}")
    return alpha, power, two_sided


def sample_size(
    *, alpha: float, power: float, mde: float, sd: float, two_sided: bool = True
) -> int:
    """Per-arm n for a two-sample test of means to detect `mde` (normal approximation)."""
    alpha, power, two_sided = _planning(alpha, power, two_sided)
    mde, sd = abs(_finite("mde", mde)), _positive("sd", sd)
    if mde == 0.0:
        raise ValidationFailedError("mde", "must be non-zero")
    effect = mde / sd
    if not two_sided:
        z = _N.inv_cdf(1 - alpha) + _N.inv_cdf(power)
        return max(2, math.ceil(2.0 * (z / effect) ** 2 - 1e-9))
    crit = _N.inv_cdf(1 - alpha / 2)

    def achieved(n: float) -> float:  # both tails, as NormalIndPower counts them
        shift = effect * math.sqrt(n / 2.0)
        return _N.cdf(shift - crit) + _N.cdf(-shift - crit)

    lo, hi = 0.0, 2.0 * ((crit + _N.inv_cdf(power)) / effect) ** 2 + 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if achieved(mid) < power:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return max(2, math.ceil(hi - 1e-9))


def proportion_sample_size(
    *, alpha: float, power: float, baseline: float, mde: float, two_sided: bool = True
) -> int:
    """Per-arm n to detect baseline -> baseline + mde (Fleiss: pooled H0, unpooled H1 variance)."""
    alpha, power, two_sided = _planning(alpha, power, two_sided)
    p2 = _open_unit("baseline", baseline)
    mde = _finite("mde", mde)
    if mde == 0.0:
        raise ValidationFailedError("mde", "must be non-zero")
    p1 = p2 + mde
    if not 0.0 < p1 < 1.0:
        raise ValidationFailedError("mde", f"baseline + mde must be in (0, 1), got {p1}")
    pbar = (p1 + p2) / 2.0
    sd_null = math.sqrt(2.0 * pbar * (1.0 - pbar))
    sd_alt = math.sqrt(p1 * (1.0 - p1) + p2 * (1.0 - p2))
    crit = _N.inv_cdf(1 - (alpha / 2 if two_sided else alpha))
    n = ((crit * sd_null + _N.inv_cdf(power) * sd_alt) / mde) ** 2
    return max(2, math.ceil(n - 1e-9))
