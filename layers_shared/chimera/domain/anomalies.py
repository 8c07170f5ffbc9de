"""Layer 5: pattern recognition on live KPI windows, as ingestion closes them (pure).

Each (agent, genome version) has one `DetectorState` in the store: per metric of a window —
`score_mean` (mean score of the successful jobs), `error_rate`, `latency_p95_ms` — a
`patterns.Detectors` bundle (EWMA trend, robust z, CUSUM change points) as JSON, and one
watermark, `last_window`: the start of the newest window that is closed.

When is a window closed? A window of an agent version closes when a KPI of that version
arrives for a later window (the rollups then hold everything the batch brought for it), or
when a report closes every window that ended before the deployment's time. `advance` feeds
each closed window's rollup once, oldest first, and moves the watermark past it. A record
that arrives later for a window at or before the watermark updates the window's rollup (the
analyses see it) but not the detectors: a window is fed exactly once, as it stood when it
closed. Windows without records, and windows with fewer than `MIN_RECORDS` records (their
mean and p95 are mostly noise), are passed over: a detector's index counts the windows it
was fed, and `windows` maps the recent indexes back to window starts for the events.

One incident, one event: each detection opens an episode in its direction (per metric) and
emits `AnomalyDetected`; while the episode is open, further detections in that direction
are not announced again (a level shift is seen as a robust-z anomaly at once, then as an
EWMA trend and a CUSUM change point within a few windows: one event, the first). An episode
closes after `QUIET` fed windows with no detection in its direction. A lone outlier is one
anomaly event; a shift back is an episode of the other direction.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field

from chimera.domain.events import AnomalyDetected
from chimera.domain.models import MAX_VERSION, AgentId, Frozen
from chimera.domain.patterns import Cusum, Detection, Detectors, Ewma, RobustZ
from chimera.domain.rollups import Rollup

Metric = Literal["score_mean", "error_rate", "latency_p95_ms"]
METRICS: tuple[Metric, ...] = ("score_mean", "error_rate", "latency_p95_ms")
MIN_RECORDS = 5  # a window with fewer records is not fed to the detectors
QUIET = 16  # fed windows with no detection in its direction that close an episode
HISTORY = Cusum.RESEED  # window starts kept per metric (a change point's start is mapped back)
WINDOWS_PER_WRITE = 16  # windows fed per stored state: their events fit one transaction


def new_detectors() -> Detectors:
    """A metric's detectors: `patterns`' CUSUM as it is; the robust z flags |z| > 5 once it
    holds 30 windows, and the EWMA trend waits 20 windows. With the defaults (3.5 after 20,
    EWMA after 5) 26 of 60 seeded steady streams (50 windows of 60 records: mean score, error
    rate, p95 latency) raised a false event, mostly a robust z just past its 20th window (a
    MAD of 20 values is a rough scale; an error rate of ~6 failures a window is lumpy); with
    these, 4 of 60, while a 0.5-sigma drop of the scores or a 1.4x latency was still one
    event at the shift, or within 4 windows, in 56 and 57 of 60."""
    return Detectors(ewma=Ewma(warmup=20), robust=RobustZ(threshold=5.0, min_count=30))


def metric_values(rollup: Rollup) -> dict[Metric, float]:
    """A window's value for each metric it has (no score without a successful job)."""
    out: dict[Metric, float] = {"error_rate": rollup.error_rate}
    if rollup.score_n:
        out["score_mean"] = rollup.score_mean
    p95 = rollup.latency_quantile(0.95)
    if p95 is not None:
        out["latency_p95_ms"] = p95
    return out


class MetricState(Frozen):
    """One metric's series of an agent version: its detectors, the starts of the windows it
    was fed last (oldest first), and its open episodes (direction -> quiet windows since)."""

    detectors: dict[str, Any] = Field(default_factory=lambda: new_detectors().to_json())
    windows: list[datetime] = Field(default_factory=list, max_length=HISTORY)
    episodes: dict[Literal["up", "down"], int] = Field(default_factory=dict)


class DetectorState(Frozen):
    """Pattern recognition of one (agent, genome version): see the module doc.

    `revision` is the store's (0: not stored). `replaying` is never stored: a state rebuilt
    because the stored one could not be read feeds the closed windows again without events
    (they were announced when first fed)."""

    agent_id: AgentId
    genome_version: int = Field(ge=0, le=MAX_VERSION)
    window_s: int = Field(ge=1)
    last_window: datetime | None = None
    metrics: dict[Metric, MetricState] = Field(default_factory=dict)
    revision: int = Field(default=0, ge=0)
    replaying: bool = Field(default=False, exclude=True)

    @classmethod
    def fresh(
        cls, agent_id: str, genome_version: int, window_s: int, *, revision: int = 0
    ) -> DetectorState:
        """No window fed yet; `revision` > 0 replaces a stored state that cannot be used (it
        is unreadable, or of another window length): the closed windows replay silently."""
        return cls(
            agent_id=agent_id,
            genome_version=genome_version,
            window_s=window_s,
            revision=revision,
            replaying=revision > 0,
        )

    def needs(self, until: datetime) -> bool:
        """Whether windows starting before `until` are still to be closed."""
        return self.last_window is None or until > self.last_window + timedelta(
            seconds=self.window_s
        )

    @property
    def since(self) -> datetime | None:
        """The start of the first window not closed yet (None: from the first one)."""
        if self.last_window is None:
            return None
        return self.last_window + timedelta(seconds=self.window_s)


def advance(
    state: DetectorState, rollups: Iterable[Rollup], until: datetime, at: str
) -> tuple[DetectorState, list[AnomalyDetected]]:
    """Close every window of the state's agent version that starts before `until`: feed the
    rollups of those not fed yet (oldest first) and answer the new state (same revision: the
    store moves it) and the events to write with it. `at` is the events' time."""
    todo = sorted(
        (
            r
            for r in rollups
            if r.window_start is not None
            and r.window_start < until
            and (state.last_window is None or r.window_start > state.last_window)
            and r.agent_id == state.agent_id
            and r.genome_version == state.genome_version
        ),
        key=lambda r: r.window_start or until,
    )
    series = {m: _Series.load(state.metrics.get(m)) for m in METRICS}
    events: list[AnomalyDetected] = []
    for rollup in todo:
        if rollup.count < MIN_RECORDS:
            continue
        assert rollup.window_start is not None
        for metric, value in metric_values(rollup).items():
            for found in series[metric].feed(value, rollup.window_start):
                if not state.replaying:
                    events.append(_event(state, metric, found, series[metric], at))
    closed = until - timedelta(seconds=state.window_s)
    if state.last_window is not None:
        closed = max(closed, state.last_window)
    metrics = {m: s.dump() for m, s in series.items() if s.fed}
    return state.model_copy(
        update={"last_window": closed, "metrics": metrics, "replaying": False}
    ), events


class _Series:
    """One metric's detectors while windows are fed (loaded once, dumped once)."""

    def __init__(self, detectors: Detectors, windows: Sequence[datetime], episodes: dict) -> None:
        self.detectors = detectors
        self.windows = list(windows)
        self.episodes: dict[Literal["up", "down"], int] = dict(episodes)
        self.fed = detectors.t > 0

    @classmethod
    def load(cls, stored: MetricState | None) -> _Series:
        if stored is None:
            return cls(new_detectors(), [], {})
        return cls(Detectors.from_json(stored.detectors), stored.windows, stored.episodes)

    def dump(self) -> MetricState:
        return MetricState(
            detectors=self.detectors.to_json(),
            windows=self.windows[-HISTORY:],
            episodes=self.episodes,
        )

    def feed(self, value: float, window: datetime) -> list[Detection]:
        """The detections of one window that open an episode (the ones to announce)."""
        self.fed = True
        self.windows.append(window)
        del self.windows[:-HISTORY]
        found = self.detectors.update(value)
        seen = {d.direction for d in found}
        for direction in list(self.episodes):
            if direction not in seen:
                self.episodes[direction] += 1
                if self.episodes[direction] >= QUIET:
                    del self.episodes[direction]
        new = []
        for detection in found:
            if detection.direction not in self.episodes:
                new.append(detection)
            self.episodes[detection.direction] = 0
        return new

    def window_of(self, index: int | None) -> datetime | None:
        """The start of the window fed at detector index `index` (None: no longer kept)."""
        if index is None:
            return None
        back = self.detectors.t - index
        return self.windows[-back] if 0 < back <= len(self.windows) else None


def _event(
    state: DetectorState, metric: Metric, found: Detection, series: _Series, at: str
) -> AnomalyDetected:
    window = series.window_of(found.index)
    start = series.window_of(found.start)
    return AnomalyDetected(
        at=at,
        agent_id=state.agent_id,
        kpi=metric,
        value=found.value,
        detail=found.describe(metric),
        genome_version=state.genome_version,
        kind=found.kind,
        direction=found.direction,
        window=None if window is None else window.isoformat(),
        start=None if start is None else start.isoformat(),
        # A robust z against a constant window is infinite: JSON has no infinity.
        statistic=found.statistic if math.isfinite(found.statistic) else None,
        threshold=found.threshold,
    )
