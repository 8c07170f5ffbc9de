"""The in-process event bus: the same routing table as EventBridge, delivered synchronously."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from chimera.adapters.kv import KeyValueStore
from chimera.domain.events import ROUTES, Event

_relaying = threading.Lock()


class LocalBus:
    def __init__(self, log_path: Path | None = None) -> None:
        self.log_path = log_path
        self.published: list[Event] = []
        self._targets: dict[str, Callable[[Event], None]] = {}

    def subscribe(self, target: str, deliver: Callable[[Event], None]) -> None:
        self._targets[target] = deliver

    def ping(self) -> None:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a"):
                pass

    def publish(self, events: Sequence[Event]) -> None:
        for event in events:
            self.published.append(event)
            if self.log_path is not None:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                with self.log_path.open("a") as log:
                    log.write(
                        f'{{"detail-type":"{event.detail_type}","detail":'
                        f"{event.model_dump_json()}}}\n"
                    )
            for route in ROUTES:
                if event.detail_type in route.detail_types and route.target in self._targets:
                    self._targets[route.target](event)


def relay(store: KeyValueStore, bus: LocalBus) -> int:
    """The local outbox relay: publish pending outbox events, then remove them.

    At least once: a crash between publish and ack publishes that event again on the next
    relay, as EventBridge Pipes may; consumers are idempotent (KPIs by job id, and so on).
    """
    if not _relaying.acquire(blocking=False):
        return 0  # a relay is running (re-entered from a subscriber, or another thread)
    sent = 0
    try:
        sent = _drain(store, bus)
    finally:
        _relaying.release()
    return sent


def _drain(store: KeyValueStore, bus: LocalBus) -> int:
    sent = 0
    while batch := store.pending_events():
        for key, event in batch:
            bus.publish([event])
            store.ack_event(key)
            sent += 1
    return sent
