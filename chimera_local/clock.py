"""Local time: the system clock plus the simulated time that bakes have let pass.

A canary's bake is a Wait state of many minutes; locally nothing sleeps: the traffic generator
drives the jobs those minutes would have brought and the clock moves on by them. The simulated
seconds are kept in the store (a counter), so every local command — `chimera run`, `chimera
traffic`, `chimera serve` — reads the same, monotone time, and KPI windows, experiment steps
and reports agree with one another.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chimera.ports import CounterStore

COUNTER = "CLOCK#simulated_s"


class LocalClock:
    def __init__(self, store: CounterStore) -> None:
        self.store = store

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.store.counter(COUNTER))

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self.store.add_to_counter(COUNTER, float(seconds))
