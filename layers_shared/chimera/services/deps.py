"""What every layer's use cases receive: the ports, wired by a composition root."""

from __future__ import annotations

from dataclasses import dataclass, field

from chimera.domain.sandbox import SandboxPolicy
from chimera.ports import ArtifactStore, EventBus, SandboxPort, Store


@dataclass
class Deps:
    store: Store
    artifacts: ArtifactStore
    bus: EventBus
    sandbox: SandboxPort
    policy: SandboxPolicy = field(default_factory=SandboxPolicy)
    budget_usd: float = 25.0
    deadline_s: float = 900.0
    shard_size: int = 64
