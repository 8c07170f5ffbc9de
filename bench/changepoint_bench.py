"""Change-point benchmark: Chimera's online detectors against ruptures (offline) on the same
synthetic streams with known change points.

Streams (seeded): length 300-1000, 0-4 changes at least MIN_GAP apart (and MIN_GAP from
either end), each stream at a random offset and scale (the detectors calibrate themselves).
- "mean":     Gaussian noise, each change shifts the mean by 1-3 sigma, up or down;
- "variance": as "mean", but some changes multiply sigma by 2-3 or divide it by 2-3 instead;
- "heavy":    mean changes under Student-t noise (3 degrees of freedom, unit variance).

Chimera's detectors (layers_shared/chimera/domain/patterns.py) see one value at a time, as
they do in layer 5; each alarm says when it fired (`index`) and where the new regime began
(`start`). ruptures sees the whole stream at once (offline) and returns locations only:
- Pelt(model="l2") and Binseg(model="l2"), penalty 3·log(n)·sigma², sigma estimated from the
  stream itself (MAD of first differences / sqrt(2)), min_size 5, jump 5 (breakpoints
  on multiples of 5, ruptures' default; jump 1 made Pelt 30x slower for the same scores).

Scoring, the same for all: a located change (`start` for ours, a breakpoint for ruptures)
matches a true change when it lies from TOL_BEFORE before to TOL_AFTER after it; each true
change is matched at most once, greedily in time order. Precision = matched / reported,
recall = matched / true. Delay, for online detectors only: alarm index - true change index,
over matched changes (the alarm can only come after the change: ruptures has no delay, it
needs the whole stream). Recall is also split by the kind and size of the change.

Run: .venv/bin/python bench/changepoint_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ruptures as rpt
from chimera.domain.patterns import Bocpd, Cusum, Detection

MIN_GAP = 50
TOL_BEFORE, TOL_AFTER = 5, 10
JUMP = 5  # ruptures' default: breakpoints on multiples of 5 (jump=1 makes Pelt 30x slower)
KINDS = ("mean", "variance", "heavy")


@dataclass(frozen=True)
class Change:
    index: int  # first sample of the new regime
    kind: str  # "mean" or "variance"
    size: float  # |shift| in sigmas of the regime before, or the sigma ratio (>1)


@dataclass(frozen=True)
class Stream:
    kind: str
    values: np.ndarray
    changes: tuple[Change, ...]


def make_stream(seed: int, kind: str, min_len: int = 300, max_len: int = 1000) -> Stream:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(min_len, max_len + 1))
    count = int(rng.integers(0, 5))
    room = n - 2 * MIN_GAP
    while count and (count - 1) * MIN_GAP > room:
        count -= 1
    # `count` positions at least MIN_GAP apart in [MIN_GAP, n - MIN_GAP]
    slack = room - (count - 1) * MIN_GAP if count else 0
    offsets = np.sort(rng.integers(0, slack + 1, size=count))
    cps = [int(MIN_GAP + o + i * MIN_GAP) for i, o in enumerate(offsets)]
    mean, sigma = 0.0, 1.0
    means, sigmas, changes = np.empty(n), np.empty(n), []
    last = 0
    for cp in [*cps, n]:
        means[last:cp], sigmas[last:cp] = mean, sigma
        if cp == n:
            break
        if kind == "variance" and rng.random() < 0.5:
            ratio = float(rng.uniform(2.0, 3.0))
            sigma = sigma * ratio if rng.random() < 0.5 or sigma < 0.5 else sigma / ratio
            changes.append(Change(cp, "variance", ratio))
        else:
            size = float(rng.uniform(1.0, 3.0))
            mean += size * sigma * (1 if rng.random() < 0.5 else -1)
            changes.append(Change(cp, "mean", size))
        last = cp
    if kind == "heavy":
        noise = rng.standard_t(3, size=n) / math.sqrt(3.0)
    else:
        noise = rng.standard_normal(n)
    offset, scale = float(rng.uniform(-100, 100)), float(10 ** rng.uniform(-2, 2))
    return Stream(kind, offset + scale * (means + sigmas * noise), tuple(changes))


def make_streams(count: int, seed: int, min_len: int = 300, max_len: int = 1000) -> list[Stream]:
    """`count` streams: 70 % mean, 15 % variance, 15 % heavy-tailed."""
    kinds = ["mean"] * 14 + ["variance"] * 3 + ["heavy"] * 3
    return [
        make_stream(seed * 100_003 + i, kinds[i % len(kinds)], min_len, max_len)
        for i in range(count)
    ]


# -- the detectors: a stream in, (located index, alarm index or None) per reported change ----
Located = list[tuple[int, int | None]]


def online(factory: Callable[[], Cusum | Bocpd]) -> Callable[[np.ndarray], Located]:
    def run(values: np.ndarray) -> Located:
        detector = factory()
        found: list[Detection] = []
        for v in values.tolist():
            hit = detector.update(v)
            if hit is not None:
                found.append(hit)
        return [(d.start if d.start is not None else d.index, d.index) for d in found]

    return run


def noise_sigma(values: np.ndarray) -> float:
    diffs = np.diff(values)
    return float(1.4826 * np.median(np.abs(diffs - np.median(diffs))) / math.sqrt(2))


def offline(algo: str) -> Callable[[np.ndarray], Located]:
    def run(values: np.ndarray) -> Located:
        n = len(values)
        pen = 3 * math.log(n) * noise_sigma(values) ** 2
        cls = rpt.Pelt if algo == "pelt" else rpt.Binseg
        model = cls(model="l2", min_size=5, jump=JUMP).fit(values.reshape(-1, 1))
        return [(int(b), None) for b in model.predict(pen=pen)[:-1]]

    return run


DETECTORS: dict[str, tuple[str, Callable[[np.ndarray], Located]]] = {
    "cusum": ("online", online(Cusum)),
    "cusum k=0.5 h=5": ("online", online(lambda: Cusum(k=0.5, h=5.0))),
    "bocpd": ("online", online(Bocpd)),
    "ruptures Pelt l2": ("offline", offline("pelt")),
    "ruptures Binseg l2": ("offline", offline("binseg")),
}
DEFAULT_DETECTORS = tuple(DETECTORS)


def params(detector: Cusum | Bocpd) -> str:
    """The detector's parameters, as its JSON state names them."""
    names = {"k", "h", "warmup", "clip", "hazard", "max_run", "confirm", "kappa0"}
    names |= {"alpha0", "beta0"}
    return " ".join(f"{k}={v:g}" for k, v in detector.to_json().items() if k in names)


# -- scoring ---------------------------------------------------------------------------------
@dataclass
class Row:
    detector: str
    mode: str
    streams: int = 0
    true: int = 0
    reported: int = 0
    matched: int = 0
    delays: list[int] = field(default_factory=list)
    wall_s: float = 0.0
    found_by: dict[str, list[int]] = field(default_factory=dict)  # bucket -> [matched, true]

    @property
    def precision(self) -> float:
        return self.matched / self.reported if self.reported else 1.0

    @property
    def recall(self) -> float:
        return self.matched / self.true if self.true else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def ms_per_stream(self) -> float:
        return 1000 * self.wall_s / self.streams if self.streams else 0.0


def bucket(stream: Stream, change: Change) -> str:
    if change.kind == "variance":
        return "var"
    size = f"{int(min(change.size, 2.999))}-{int(min(change.size, 2.999)) + 1}σ"
    return f"heavy {size}" if stream.kind == "heavy" else size


def match(changes: Sequence[Change], located: Located) -> list[tuple[Change, int | None] | None]:
    """For each true change, the alarm index of the located change matched to it (or None if
    it has none: the match, not the alarm); unmatched true changes give None."""
    free = sorted(located, key=lambda d: d[0])
    out: list[tuple[Change, int | None] | None] = []
    for change in changes:
        pick = next(
            (
                i
                for i, (loc, _) in enumerate(free)
                if change.index - TOL_BEFORE <= loc <= change.index + TOL_AFTER
            ),
            None,
        )
        out.append(None if pick is None else (change, free.pop(pick)[1]))
    return out


def evaluate(name: str, streams: Sequence[Stream]) -> Row:
    mode, detect = DETECTORS[name]
    row = Row(name, mode)
    for stream in streams:
        started = time.perf_counter()
        located = detect(stream.values)
        row.wall_s += time.perf_counter() - started
        row.streams += 1
        row.true += len(stream.changes)
        row.reported += len(located)
        for change, hit in zip(stream.changes, match(stream.changes, located), strict=True):
            tally = row.found_by.setdefault(bucket(stream, change), [0, 0])
            tally[1] += 1
            if hit is not None:
                row.matched += 1
                tally[0] += 1
                if hit[1] is not None:
                    row.delays.append(hit[1] - change.index)
    return row


def report(
    count: int = 200,
    seed: int = 7,
    min_len: int = 300,
    max_len: int = 1000,
    detectors: Sequence[str] = DEFAULT_DETECTORS,
) -> list[Row]:
    streams = make_streams(count, seed, min_len, max_len)
    changes = sum(len(s.changes) for s in streams)
    samples = sum(len(s.values) for s in streams)
    by_kind = {k: sum(s.kind == k for s in streams) for k in KINDS}
    print(
        f"change points: {count} streams (seed {seed}; {by_kind['mean']} mean, "
        f"{by_kind['variance']} variance, {by_kind['heavy']} heavy-tailed), {samples:,} samples, "
        f"{changes} true changes; a match lies {TOL_BEFORE} before to {TOL_AFTER} after"
    )
    print(
        "  online = one value at a time, delay = alarm - change; offline = ruptures sees the "
        "whole stream (no delay)"
    )
    print(f"  cusum: {params(Cusum())}; bocpd: {params(Bocpd())}")
    print(f"  ruptures: min_size 5, jump {JUMP}, pen 3·log(n)·sigma² (sigma from the stream)")
    rows = [evaluate(name, streams) for name in detectors]
    buckets = sorted({b for row in rows for b in row.found_by})
    head = (
        f"{'detector':<20} {'mode':<8} {'prec':>5} {'recall':>6} {'F1':>5} {'reported':>8} "
        f"{'delay mean':>10} {'median':>6} {'ms/stream':>9}"
    )
    print(head + "  recall by change: " + " ".join(f"{b:>10}" for b in buckets))
    for row in rows:
        mean = f"{statistics.fmean(row.delays):.1f}" if row.delays else "-"
        median = f"{statistics.median(row.delays):.0f}" if row.delays else "-"
        by = " ".join(
            f"{row.found_by[b][0]:>4}/{row.found_by[b][1]:<5}" if b in row.found_by else " " * 10
            for b in buckets
        )
        print(
            f"{row.detector:<20} {row.mode:<8} {row.precision:>5.2f} {row.recall:>6.2f} "
            f"{row.f1:>5.2f} {row.reported:>8} {mean:>10} {median:>6} {row.ms_per_stream:>9.2f}"
            f"                    {by}"
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 streams instead of 200")
    parser.add_argument("--only", nargs="+", choices=DETECTORS, default=DEFAULT_DETECTORS)
    args = parser.parse_args()
    report(count=40 if args.quick else 200, detectors=args.only)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
