"""Layer 5's detectors driven as ingestion drives them: one window value at a time, with the
state stored as JSON between invocations (chimera/domain/patterns.py)."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pytest
from chimera.domain.errors import ValidationFailedError
from chimera.domain.patterns import (
    Bocpd,
    Cusum,
    Detection,
    Detectors,
    Ewma,
    RobustZ,
    cusum_arl0,
    t_to_normal,
)
from hypothesis import given, settings
from hypothesis import strategies as st

CHANGE_POINT = {"cusum": Cusum, "bocpd": Bocpd}


def series(seed: int, n: int, steps: dict[int, float] | None = None) -> list[float]:
    """Gaussian noise at a seeded offset and scale; `steps` shifts the mean (in sigmas)
    from an index on."""
    rng = np.random.default_rng(seed)
    offset, scale = rng.uniform(-50, 50), 10 ** rng.uniform(-2, 2)
    mean = np.zeros(n)
    for at, shift in (steps or {}).items():
        mean[at:] += shift
    return (offset + scale * (mean + rng.standard_normal(n))).tolist()


def change_points(found: list[Detection]) -> list[Detection]:
    return [d for d in found if d.kind == "change-point"]


# -- change points ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", CHANGE_POINT)
@pytest.mark.parametrize("shift", [2.0, -2.0])
def test_a_step_in_the_mean_is_found_soon_after_in_its_direction(kind, shift):
    """30 seeds, a 2-sigma step at window 120: a change point whose regime starts from 110
    to 125 follows within 20 windows (median <= 12) in at least 28 of them (a false alarm
    just before the step may make the baseline learn the wrong values), and every change
    point located there points the right way."""
    direction = "up" if shift > 0 else "down"
    delays = []
    for seed in range(30):
        found = Detectors(change=CHANGE_POINT[kind]()).scan(series(seed, 250, {120: shift}))
        near = [d for d in change_points(found) if d.start is not None and 110 <= d.start <= 125]
        assert all(d.direction == direction for d in near), f"seed {seed}: {near}"
        if near and near[0].index >= 120:
            delays.append(near[0].index - 120)
    # A 2-sigma step: CUSUM (k=0.75, h=6) adds about 1.25 a window, so ~5 windows; BOCPD
    # waits for `confirm` (8) values of the new run.
    assert len(delays) >= 28, delays
    assert max(delays) <= 20 and np.median(delays) <= 12, delays


@pytest.mark.parametrize("kind", CHANGE_POINT)
def test_after_a_change_the_detector_learns_the_new_regime_and_finds_the_next(kind):
    for seed in range(10):
        found = Detectors(change=CHANGE_POINT[kind]()).scan(
            series(seed, 400, {130: 3.0, 260: -3.0})
        )
        cps = [(d.direction, d.start) for d in change_points(found)]
        first = {d for d, start in cps if start is not None and 120 <= start <= 140}
        second = {d for d, start in cps if start is not None and 250 <= start <= 270}
        assert (first, second) == ({"up"}, {"down"}), f"seed {seed}: {cps}"


def test_cusum_false_alarms_match_the_known_baseline_rate():
    """The self-starting scores are N(0, 1) in control, so a CUSUM with k=0.5, h=4 alarms about
    once per ARL0 = 169 scored windows (Siegmund; Montgomery's table: 168) although its
    baseline is learned from 8 values. Over 50,000 values that is about 296 alarms (a Poisson
    count strays by some 17); we see 331 (each alarm re-seeds from the excursion that fired
    it) and allow 0.75x to 1.3x. Scoring the raw residual (no t-to-normal) gives 416 (1.4x)."""
    values, alarms = 0, 0
    for seed in range(100):
        detector = Cusum(k=0.5, h=4.0)
        alarms += sum(detector.update(v) is not None for v in series(seed, 500))
        values += 500
    expected = values / cusum_arl0(0.5, 4.0)
    assert 0.75 * expected <= alarms <= 1.3 * expected, (alarms, expected)


def test_a_stationary_series_gives_few_false_alarms():
    """100 seeds x 500 windows of Gaussian noise through the default bundle. Bounds derived
    from the thresholds: change points at most 3x values / ARL0(k=0.75, h=6) + 3 (ARL0 about
    20,700, so about 2.4 expected); anomalies at most 10x the two-sided normal tail beyond
    3.5 (4.65e-4: the median and MAD of 50 values are themselves noisy, measured about 5x);
    trend signals (two windows in a row beyond 3 EWMA sigmas on one side) at most 1 in 2,000."""
    counts = {"anomaly": 0, "change-point": 0, "trend": 0}
    values = 0
    for seed in range(100):
        for d in Detectors().scan(series(seed, 500)):
            counts[d.kind] += 1
        values += 500
    tail = 2 * (1 - NormalDist().cdf(3.5))
    assert counts["change-point"] <= 3 * values / cusum_arl0(0.75, 6.0) + 3, counts
    assert counts["anomaly"] <= 10 * tail * values, counts
    assert counts["trend"] <= values / 2000, counts


@pytest.mark.parametrize("kind", CHANGE_POINT)
def test_a_single_outlier_is_an_anomaly_not_a_change_point(kind):
    for seed in range(20):
        values = series(seed, 200)
        sd = float(np.std(values[:100]))
        values[100] += 10 * sd
        found = Detectors(change=CHANGE_POINT[kind]()).scan(values)
        at = [d for d in found if d.index == 100]
        assert [d.kind for d in at if d.kind == "anomaly"] == ["anomaly"], f"seed {seed}"
        assert at[0].direction == "up" and at[0].statistic > 3.5
        near = [d for d in found if 100 <= d.index <= 120 and d.kind != "anomaly"]
        assert near == [], f"seed {seed}: {near}"


def test_a_rate_stuck_at_one_that_drops_is_an_anomaly_and_a_change():
    found = Detectors().scan([1.0] * 40 + [0.9] * 5)
    assert ("anomaly", 40, "down") in {(d.kind, d.index, d.direction) for d in found}
    cps = change_points(found)
    assert len(cps) == 1 and cps[0].direction == "down" and cps[0].start == 40


# -- EWMA trend ------------------------------------------------------------------------------
@pytest.mark.parametrize("slope", [0.2, -0.2])
def test_ewma_slope_sign_follows_a_ramp(slope):
    for seed in range(10):
        rng = np.random.default_rng(seed)
        ewma = Ewma()
        signs = []
        for i in range(200):
            ewma.update(3.0 + slope * i + rng.standard_normal())
            signs.append(ewma.slope_sign)
        assert set(signs[40:]) == {1 if slope > 0 else -1}, f"seed {seed}"
        assert math.copysign(1, ewma.level - 3.0) == math.copysign(1, slope)


def test_ewma_signals_a_value_outside_its_band_and_a_lone_one_does_not_move_it():
    ewma = Ewma(alpha=0.2, limit=3.0)
    rng = np.random.default_rng(4)
    for x in rng.normal(10.0, 1.0, 60):
        ewma.update(float(x))
    level, sigma = ewma.level, ewma.sigma
    hit = ewma.update(level - 50 * sigma)
    assert hit is not None and hit.kind == "trend" and hit.direction == "down"
    assert hit.statistic == pytest.approx(-50, rel=1e-9) and hit.threshold == 3.0
    # winsorized: the wild value moved the level by at most alpha * limit * sigma
    assert level - ewma.level <= 0.2 * 3.0 * sigma + 1e-12
    assert ewma.sigma < 2 * sigma


def test_a_large_step_is_also_a_trend_in_its_direction():
    for seed in range(10):
        found = Detectors().scan(series(seed, 200, {100: 6.0}))
        trends = [d for d in found if d.kind == "trend" and 100 <= d.index <= 110]
        assert trends and {d.direction for d in trends} == {"up"}, f"seed {seed}: {found}"


# -- robust z --------------------------------------------------------------------------------
def test_robust_z_matches_scipys_median_absolute_deviation():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(9)
    robust = RobustZ(window=25, min_count=25)
    values = rng.standard_t(4, size=60)
    for i, x in enumerate(values):
        if i >= 25:
            ref = values[i - 25 : i]
            mad = scipy_stats.median_abs_deviation(ref, scale="normal")
            assert robust.score(float(x)) == pytest.approx(
                (x - np.median(ref)) / mad, rel=1e-4, abs=1e-9
            )
        robust.update(float(x))


def test_t_to_normal_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    for dof in (1, 2, 3, 4, 7, 30, 199, 200, 201, 1000):
        for u in (-1e3, -12.0, -4.0, -1.3, -0.2, 0.0, 0.7, 2.5, 6.0, 40.0):
            tail = scipy_stats.t.sf(abs(u), dof)  # the upper tail keeps its digits
            if tail == 0:  # past what a double holds: ours is merely far out
                assert abs(t_to_normal(u, dof)) > 37
                continue
            want = math.copysign(scipy_stats.norm.isf(tail), u) if u else 0.0
            # exact up to 200 dof while the tail is above 1e-9 (1 - A cancels digits as it
            # nears that); Bailey's approximation beyond 200 dof and beyond that tail
            if abs(want) >= 6:
                tol = 0.1 * abs(want)
            elif dof > 200:
                tol = 3e-3
            else:
                tol = 1e-9 if abs(want) < 4 else 1e-6
            assert t_to_normal(u, dof) == pytest.approx(want, abs=tol)


# -- state between invocations ---------------------------------------------------------------
segments = st.lists(
    st.tuples(
        st.integers(min_value=5, max_value=60),
        st.floats(min_value=-5, max_value=5),
        st.floats(min_value=0.01, max_value=3),
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=40, deadline=None)
@given(
    segs=segments,
    seed=st.integers(0, 2**32 - 1),
    cut=st.floats(0, 1),
    kind=st.sampled_from(sorted(CHANGE_POINT)),
)
def test_state_stored_as_json_mid_stream_gives_the_same_detections(segs, seed, cut, kind):
    rng = np.random.default_rng(seed)
    values = [float(m + s * rng.standard_normal()) for n, m, s in segs for _ in range(n)]
    split = int(cut * len(values))
    whole = Detectors(change=CHANGE_POINT[kind]())
    expected = whole.scan(values)
    first = Detectors(change=CHANGE_POINT[kind]())
    got = first.scan(values[:split])
    stored = json.dumps(first.to_json(), allow_nan=False)  # strict JSON, as the store keeps it
    second = Detectors.from_json(json.loads(stored))
    got += second.scan(values[split:])
    assert got == expected
    assert second.to_json() == whole.to_json()


@pytest.mark.parametrize("kind", CHANGE_POINT)
def test_scan_is_one_update_per_value(kind):
    values = series(5, 400, {150: 2.5, 300: -1.5})
    values[77] += 1e3
    one = Detectors(change=CHANGE_POINT[kind]())
    other = Detectors(change=CHANGE_POINT[kind]())
    by_update = [d for v in values for d in other.update(v)]
    assert one.scan(values) == by_update
    assert {d.kind for d in by_update} >= {"anomaly", "change-point"}
    assert one.to_json() == other.to_json()


def test_bocpd_state_stays_bounded():
    detector = Bocpd(max_run=50)
    for v in series(2, 2000, {700: 2.0, 1400: -2.0}):
        detector.update(v)
    state = detector.to_json()
    assert max(len(state[k]) for k in ("logp", "mu", "beta")) == 50
    assert len(json.dumps(state)) < 5000


def test_detection_round_trips_and_describes_itself():
    d = Detection("change-point", 41, 0.5, 6.3, 6.0, "down", start=37)
    assert Detection.from_json(json.loads(json.dumps(d.to_json()))) == d
    assert "window 41" in d.describe("error_rate") and "window 37" in d.describe("error_rate")
    z = Detection("anomaly", 3, 2.0, -math.inf, 3.5, "down")
    assert json.loads(json.dumps(z.to_json(), allow_nan=False))["statistic"] == "-inf"


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Ewma(alpha=0), "alpha"),
        (lambda: Ewma(alpha=1.0), "alpha"),
        (lambda: Ewma(alpha=math.nan), "alpha"),
        (lambda: Ewma(beta=1.5), "beta"),
        (lambda: Ewma(limit=0), "limit"),
        (lambda: RobustZ(window=2), "window"),
        (lambda: RobustZ(window=3.5), "window"),
        (lambda: RobustZ(threshold=0), "threshold"),
        (lambda: RobustZ(threshold=-3.5), "threshold"),
        (lambda: RobustZ(window=10, min_count=11), "min_count"),
        (lambda: Cusum(h=0), "h"),
        (lambda: Cusum(k=-0.5), "k"),
        (lambda: Cusum(warmup=2), "warmup"),
        (lambda: Cusum(h=2.0, clip=3.0), "clip"),
        (lambda: Bocpd(hazard=1.0), "hazard"),
        (lambda: Bocpd(max_run=5), "max_run"),
        (lambda: Detectors(trend_run=0), "trend_run"),
        (lambda: Detectors().update(math.nan), "value"),
        (lambda: Detectors().update("3"), "value"),
        (lambda: Cusum().update(math.inf), "value"),
        (lambda: RobustZ().update(True), "value"),
        (lambda: Detectors().scan([1.0, 2.0, -math.inf]), "values[2]"),
        (lambda: Detectors.from_json({"type": "detectors", "version": 9}), "state.version"),
        (lambda: Detectors.from_json([]), "state"),
        (lambda: RobustZ.from_json({**RobustZ().to_json(), "values": [1.0, "x"]}), "state.values"),
        (
            lambda: Detectors.from_json({**Detectors().to_json(), "change": {"type": "x"}}),
            "state.type",
        ),
    ],
)
def test_bad_parameters_and_values_name_the_field(make, field):
    with pytest.raises(ValidationFailedError) as err:
        make()
    assert err.value.field == field


def test_a_bad_value_leaves_the_state_as_it_was():
    detectors = Detectors()
    detectors.scan(series(1, 30))
    before = detectors.to_json()
    with pytest.raises(ValidationFailedError):
        detectors.update(math.nan)
    assert detectors.to_json() == before
