"""EventBridge adapter of the EventBus port."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chimera.domain.errors import ChimeraError
from chimera.domain.events import Event, to_entry


class EventBridgeBus:
    def __init__(self, bus_name: str, client: Any) -> None:
        self.bus_name = bus_name
        self.client = client

    def publish(self, events: Sequence[Event]) -> None:
        entries = [to_entry(e, self.bus_name) for e in events]
        for i in range(0, len(entries), 10):  # PutEvents takes at most 10 entries
            answer = self.client.put_events(Entries=entries[i : i + 10])
            if answer.get("FailedEntryCount"):
                raise ChimeraError(f"EventBridge refused {answer['FailedEntryCount']} event(s)")

    def ping(self) -> None:
        self.client.describe_event_bus(Name=self.bus_name)
