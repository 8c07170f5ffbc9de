"""The in-process event bus: the same routing table as EventBridge, delivered synchronously."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from chimera.domain.events import ROUTES, Event


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
