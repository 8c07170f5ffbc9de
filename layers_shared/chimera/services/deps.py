"""What every layer's use cases receive: the ports, wired by a composition root."""

from __future__ import annotations

from dataclasses import dataclass, field

from chimera.adapters.clock import SystemClock
from chimera.domain.sandbox import SandboxPolicy
from chimera.ports import ArtifactStore, Clock, EventBus, SandboxPort, Store, WorkflowStarter
from chimera.settings import LocalSettings, Settings


@dataclass
class Deps:
    store: Store
    artifacts: ArtifactStore
    bus: EventBus
    sandbox: SandboxPort
    policy: SandboxPolicy = field(default_factory=SandboxPolicy)
    settings: Settings = field(default_factory=LocalSettings)
    workflows: WorkflowStarter | None = None
    clock: Clock = field(default_factory=SystemClock)

    @property
    def budget_usd(self) -> float:
        return self.settings.budget_usd

    @property
    def deadline_s(self) -> float:
        return self.settings.deadline_s

    @property
    def shard_size(self) -> int:
        return self.settings.shard_size
