"""The local composition root: the embedded default's adapters behind the same ports."""

from __future__ import annotations

from chimera.adapters.sandbox import Sandbox
from chimera.domain.events import Event, KpiRecorded
from chimera.domain.sandbox import SandboxPolicy
from chimera.services import refinement
from chimera.services.contracts import IngestRequest
from chimera.services.deps import Deps
from chimera.settings import LocalSettings

from chimera_local.artifacts import LocalArtifacts
from chimera_local.blobs import FileBlobs
from chimera_local.bus import LocalBus, relay
from chimera_local.clock import LocalClock
from chimera_local.cycles import LocalCycles
from chimera_local.sqlite_store import SqliteStore


def local_deps(settings: LocalSettings) -> Deps:
    bus = LocalBus(settings.home / "events.jsonl")
    store = SqliteStore(settings.home / "state.db", FileBlobs(settings.home / "blobs"))
    store.on_outbox = lambda: relay(store, bus)
    policy = SandboxPolicy(allow_wasi=settings.allow_wasi)  # layer 3 and the sandbox share it
    deps = Deps(
        store=store,
        artifacts=LocalArtifacts(settings.agents_dir),
        bus=bus,
        sandbox=Sandbox(cache_dir=settings.home / "modules", policy=policy),
        policy=policy,
        settings=settings,
        workflows=LocalCycles(settings.home),
        clock=LocalClock(store),
    )

    def ingest(event: Event) -> None:
        if isinstance(event, KpiRecorded):
            refinement.ingest(IngestRequest(records=[event.record]), deps)

    bus.subscribe("refinement-ingest", ingest)
    return deps
