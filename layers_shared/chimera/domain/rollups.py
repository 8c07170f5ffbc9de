"""KPI rollups: the aggregate of the KPI records of one scope, kept at ingestion (pure).

Two kinds of scope, one model:

- a time window: (agent_id, genome_version, window_start), `window_start` being a record's
  `recorded_at` floored to `window_s` seconds (settings.rollup_window_s, 300 by default);
- an experiment arm: (experiment_id, step, genome_version), for a record routed by an
  experiment (it also counts in its time window).

A rollup holds the count, the failures (success False), the moments of the successful jobs'
scores (`statistics.Moments`: n, mean, M2, merged exactly), a DDSketch of the latencies
(the `ddsketch` library, relative accuracy 1 %), the fuel and cost sums, the first and last
`recorded_at`, and the store's `revision`. Analyses read rollups, never raw KPIs: windows of
an agent and version merge into any time range exactly for count and moments, and within
the sketch's accuracy for quantiles (a sketch merge adds bins: exact on bins).

The sketch is `LogCollapsingLowestDenseDDSketch(0.01, bin_limit=2048)`: at 1 % the keys of
latencies from 1 microsecond to a day (the largest a KPI takes) span about 1,260 bins, so
nothing collapses for any latency a job can have; only a pathological spread below 1 us
would fold the lowest bins together (losing accuracy on the lowest quantiles, never on
p50..p99), and the limit bounds the item's size (tests/contract/test_rollups.py checks the
worst case against DynamoDB's 400 KB). Stored as JSON, never pickled: the positive store's
bins from its lowest key, the count at zero, min, max and sum (`LatencySketch`); ddsketch's
protobuf path is not used.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple, cast

from ddsketch import LogCollapsingLowestDenseDDSketch
from pydantic import Field, model_validator

from chimera.domain.errors import ValidationFailedError
from chimera.domain.models import MAX_VERSION, AgentId, ExperimentId, Frozen, KpiRecord
from chimera.domain.statistics import Moments

RELATIVE_ACCURACY = 0.01
BIN_LIMIT = 2048
DEFAULT_WINDOW_S = 300  # settings.rollup_window_s's default


def new_sketch() -> LogCollapsingLowestDenseDDSketch:
    """An empty latency sketch as every rollup keeps one (merges need the same mapping)."""
    return LogCollapsingLowestDenseDDSketch(RELATIVE_ACCURACY, BIN_LIMIT)


class LatencySketch(Frozen):
    """A latency DDSketch as compact JSON: the counts of its positive store from key `first`
    (consecutive keys, lowest to highest non-empty), the count at zero, min, max and sum.
    Latencies are never negative, so the negative store is always empty and not kept."""

    first: int = 0
    bins: list[int] = Field(default_factory=list, max_length=BIN_LIMIT)
    collapsed: bool = False
    zeros: int = Field(default=0, ge=0)
    min: float | None = Field(default=None, ge=0)
    max: float | None = Field(default=None, ge=0)
    sum: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> LatencySketch:
        if self.bins and min(self.bins) < 0:
            raise ValueError("bins: counts are never negative")
        if (self.min is None) != (self.count == 0) or (self.max is None) != (self.count == 0):
            raise ValueError("min: min and max are set exactly when the sketch is not empty")
        return self

    @property
    def count(self) -> int:
        return sum(self.bins) + self.zeros

    def sketch(self) -> LogCollapsingLowestDenseDDSketch:
        """The live ddsketch object (its stores filled from the JSON)."""
        sketch = new_sketch()
        raw = cast(Any, sketch)
        if self.bins:
            store = raw._store
            store.bins = list(map(float, self.bins))
            store.offset = store.min_key = self.first
            store.max_key = self.first + len(self.bins) - 1
            store.count = float(sum(self.bins))
            store.is_collapsed = self.collapsed
        raw._zero_count = float(self.zeros)
        raw._count = float(self.count)
        raw._sum = self.sum
        if self.min is not None and self.max is not None:
            raw._min, raw._max = self.min, self.max
        return sketch

    @classmethod
    def of(cls, sketch: LogCollapsingLowestDenseDDSketch) -> LatencySketch:
        raw = cast(Any, sketch)
        store = raw._store
        if raw._negative_store.count:
            raise ValidationFailedError("latency_ms", "a latency is never negative")
        first, bins = 0, []
        if store.count:
            lo, hi = store.min_key - store.offset, store.max_key - store.offset
            first, bins = store.min_key, list(map(int, store.bins[lo : hi + 1]))  # whole counts
        empty = raw._count == 0
        return cls(
            first=first,
            bins=bins,
            collapsed=bool(getattr(store, "is_collapsed", False)),
            zeros=round(raw._zero_count),
            min=None if empty else float(raw._min),
            max=None if empty else float(raw._max),
            sum=float(raw._sum),
        )


class Scope(NamedTuple):
    """What one rollup aggregates: a window (experiment_id None) or an experiment arm."""

    agent_id: str
    genome_version: int
    window_start: datetime | None = None
    experiment_id: str | None = None
    step: int | None = None

    @property
    def is_arm(self) -> bool:
        return self.experiment_id is not None


def floor_window(at: datetime, window_s: int) -> datetime:
    """The start of the `window_s`-second window `at` falls in (UTC, aligned to the epoch)."""
    if window_s < 1:
        raise ValidationFailedError("window_s", f"must be >= 1, got {window_s}")
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return _window_at(int(at.timestamp() // window_s) * window_s)


@lru_cache(maxsize=4096)
def _window_at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def scopes_of(record: KpiRecord, window_s: int) -> tuple[Scope, ...]:
    """The rollups a record counts in: its time window, and its experiment arm if routed."""
    window = Scope(
        record.agent_id, record.genome_version, floor_window(record.recorded_at, window_s)
    )
    if record.experiment_id is None:
        return (window,)
    arm = Scope(record.agent_id, record.genome_version, None, record.experiment_id, record.step)
    return window, arm


def group(records: Iterable[KpiRecord], window_s: int) -> dict[Scope, list[KpiRecord]]:
    """Records by every scope they count in (insertion order kept)."""
    out: dict[Scope, list[KpiRecord]] = {}
    for record in records:
        for scope in scopes_of(record, window_s):
            out.setdefault(scope, []).append(record)
    return out


class Rollup(Frozen):
    """The aggregate of the KPI records of one scope (see the module doc).

    A merge of several scopes keeps what they share: `genome_version` or `step` is None when
    they differ, and merged windows cover from the first start to the last end."""

    agent_id: AgentId
    genome_version: int | None = Field(default=None, ge=0, le=MAX_VERSION)
    window_start: datetime | None = None
    window_s: int | None = Field(default=None, ge=1)
    experiment_id: ExperimentId | None = None
    step: int | None = Field(default=None, ge=0, le=64)
    count: int = Field(default=0, ge=0)
    failures: int = Field(default=0, ge=0)
    score_n: int = Field(default=0, ge=0)
    score_mean: float = 0.0
    score_m2: float = Field(default=0.0, ge=0)
    latency: LatencySketch = Field(default_factory=LatencySketch)
    fuel: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0)
    first_at: datetime | None = None
    last_at: datetime | None = None
    revision: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Rollup:
        if self.experiment_id is None and (self.window_start is None or self.window_s is None):
            raise ValueError("window_start: a time window has a start and a length")
        if self.experiment_id is not None and self.window_start is not None:
            raise ValueError("window_start: an experiment arm is not a time window")
        if self.failures > self.count:
            raise ValueError("failures: more than count")
        if self.score_n != self.count - self.failures:
            raise ValueError("score_n: every successful job has a score")
        if self.score_n == 0 and (self.score_mean != 0.0 or self.score_m2 != 0.0):
            raise ValueError("score_mean: no scores, no moments")
        if self.latency.count != self.count:
            raise ValueError("latency: the sketch counts every job once")
        if (self.first_at is None) != (self.count == 0) or (self.last_at is None) != (
            self.count == 0
        ):
            raise ValueError("first_at: first_at and last_at are set exactly when count > 0")
        return self

    # -- scope ---------------------------------------------------------------------------
    @classmethod
    def empty(cls, scope: Scope, window_s: int = DEFAULT_WINDOW_S) -> Rollup:
        """The rollup of a scope before any record (revision 0: not stored)."""
        if scope.is_arm:
            return cls(
                agent_id=scope.agent_id,
                genome_version=scope.genome_version,
                experiment_id=scope.experiment_id,
                step=scope.step,
            )
        return cls(
            agent_id=scope.agent_id,
            genome_version=scope.genome_version,
            window_start=scope.window_start,
            window_s=window_s,
        )

    @property
    def is_arm(self) -> bool:
        return self.experiment_id is not None

    @property
    def window_end(self) -> datetime | None:
        if self.window_start is None or self.window_s is None:
            return None
        return self.window_start + timedelta(seconds=self.window_s)

    # -- statistics ----------------------------------------------------------------------
    @property
    def score(self) -> Moments:
        """Moments (n, mean, M2) of the successful jobs' scores."""
        return Moments(self.score_n, self.score_mean, self.score_m2)

    @property
    def error_rate(self) -> float:
        """Failed jobs / jobs (0.0 when there are none)."""
        return self.failures / self.count if self.count else 0.0

    @property
    def success_rate(self) -> float:
        return 1.0 - self.error_rate if self.count else 0.0

    def latency_quantile(self, q: float) -> float | None:
        """The q-quantile of the latencies in ms, within 1 % of the value at rank
        floor(q * (count - 1)); None when there are no records."""
        if isinstance(q, bool) or not isinstance(q, int | float) or not 0.0 <= q <= 1.0:
            raise ValidationFailedError("q", f"must be a number in [0, 1], got {q!r}")
        if self.count == 0:
            return None
        value = self.latency.sketch().get_quantile_value(float(q))
        return None if value is None else float(value)

    # -- updates -------------------------------------------------------------------------
    def _check_members(self, records: Sequence[KpiRecord]) -> None:
        """ValidationFailedError naming the first record that is not of this scope."""
        version = self.genome_version
        for i, record in enumerate(records):
            if record.agent_id != self.agent_id:
                raise ValidationFailedError(f"records.{i}.agent_id", f"not {self.agent_id}")
            if version is not None and record.genome_version != version:
                raise ValidationFailedError(f"records.{i}.genome_version", f"not {version}")
        if self.is_arm:
            for i, record in enumerate(records):
                if record.experiment_id != self.experiment_id:
                    raise ValidationFailedError(
                        f"records.{i}.experiment_id", f"not {self.experiment_id}"
                    )
                if self.step is not None and record.step != self.step:
                    raise ValidationFailedError(f"records.{i}.step", f"not {self.step}")
            return
        start, end = self.window_start, self.window_end
        assert start is not None and end is not None  # a window (validated)
        for i, record in enumerate(records):
            if not start <= record.recorded_at < end:
                raise ValidationFailedError(
                    f"records.{i}.recorded_at",
                    f"{record.recorded_at.isoformat()} is outside [{start.isoformat()}, "
                    f"{end.isoformat()})",
                )

    def with_records(self, records: Sequence[KpiRecord]) -> Rollup:
        """This rollup after adding `records` (each must be of its scope; the caller counts
        each record once: the store skips the ones it already holds)."""
        if not records:
            return self
        self._check_members(records)
        sketch = self.latency.sketch()
        add = sketch.add
        scores = [cast(float, r.score) for r in records if r.success]
        for record in records:
            add(record.latency_ms)
        ats = [r.recorded_at for r in records]
        first, last = min(ats), max(ats)
        if self.first_at is not None and self.last_at is not None:
            first, last = min(first, self.first_at), max(last, self.last_at)
        moments = self.score.merge(_moments(scores))
        return self.model_validate(
            {
                **self._fields(),
                "count": self.count + len(records),
                "failures": self.failures + len(records) - len(scores),
                "score_n": moments.n,
                "score_mean": moments.mean,
                "score_m2": moments.m2,
                "latency": LatencySketch.of(sketch),
                "fuel": self.fuel + sum(r.fuel for r in records),
                "cost_usd": self.cost_usd + math.fsum(r.cost_usd for r in records),
                "first_at": first,
                "last_at": last,
            }
        )

    def _fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in type(self).model_fields}

    def merge(self, other: Rollup) -> Rollup:
        """The aggregate of both (disjoint) scopes: exact for count, failures, moments and
        sums; the sketches' bins add (quantiles within the sketch's accuracy). Windows merge
        with windows of one agent, arms with arms of one experiment."""
        if not isinstance(other, Rollup):
            raise ValidationFailedError("other", f"must be a Rollup, got {type(other).__name__}")
        if other.agent_id != self.agent_id:
            raise ValidationFailedError("agent_id", f"{other.agent_id} is not {self.agent_id}")
        if other.is_arm != self.is_arm or other.experiment_id != self.experiment_id:
            raise ValidationFailedError(
                "experiment_id", "merge windows with windows, arms of one experiment together"
            )
        sketch = self.latency.sketch()
        sketch.merge(other.latency.sketch())
        moments = self.score.merge(other.score)
        start, span = self.window_start, self.window_s
        if not self.is_arm:
            ends = [e for e in (self.window_end, other.window_end) if e is not None]
            starts = [s for s in (self.window_start, other.window_start) if s is not None]
            start = min(starts)
            span = int((max(ends) - start).total_seconds())
        return Rollup(
            agent_id=self.agent_id,
            genome_version=_same(self.genome_version, other.genome_version),
            window_start=start,
            window_s=span,
            experiment_id=self.experiment_id,
            step=_same(self.step, other.step),
            count=self.count + other.count,
            failures=self.failures + other.failures,
            score_n=moments.n,
            score_mean=moments.mean,
            score_m2=moments.m2,
            latency=LatencySketch.of(sketch),
            fuel=self.fuel + other.fuel,
            cost_usd=self.cost_usd + other.cost_usd,
            first_at=_extreme(min, self.first_at, other.first_at),
            last_at=_extreme(max, self.last_at, other.last_at),
        )


def _moments(values: Sequence[float]) -> Moments:
    """Moments of a few values (two passes in floats; numpy's set-up costs more below ~50)."""
    n = len(values)
    if n > 64:
        return Moments.of(values)
    if n == 0:
        return Moments()
    mean = math.fsum(values) / n
    return Moments(n, mean, math.fsum((x - mean) ** 2 for x in values))


def merge_all(rollups: Iterable[Rollup]) -> Rollup | None:
    """The merge of every rollup given (None when there is none)."""
    out: Rollup | None = None
    for rollup in rollups:
        out = rollup if out is None else out.merge(rollup)
    return out


def _same(a: int | None, b: int | None) -> int | None:
    return a if a == b else None


def _extreme(pick: Any, a: datetime | None, b: datetime | None) -> datetime | None:
    present = [x for x in (a, b) if x is not None]
    return pick(present) if present else None
