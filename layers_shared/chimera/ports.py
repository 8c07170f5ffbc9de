"""Ports: what the domain needs from the outside world, as typing.Protocol.

Adapters under chimera.adapters implement them; nothing else touches boto3, sqlite3 or wasmtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np

from chimera.domain.events import Event
from chimera.domain.models import (
    Agent,
    Alias,
    CostEntry,
    Decision,
    EvolutionRun,
    FitnessPoint,
    Generation,
    Genome,
    KpiRecord,
    ResourceLimits,
)
from chimera.domain.sandbox import ModuleInfo


class AgentStore(Protocol):
    def put_agent(self, agent: Agent) -> None: ...
    def get_agent(self, agent_id: str) -> Agent: ...
    def list_agents(self) -> list[Agent]: ...


class GenomeStore(Protocol):
    def add_genome(self, genome: Genome) -> None:
        """Store a new version; ConflictError if that version already exists."""
        ...

    def get_genome(self, agent_id: str, version: int) -> Genome: ...
    def list_genomes(self, agent_id: str) -> list[Genome]: ...
    def latest_genome_version(self, agent_id: str) -> int: ...
    def get_alias(self, agent_id: str, name: str = "live") -> Alias | None: ...

    def promote(self, genome: Genome, alias: Alias, expected_revision: int | None) -> None:
        """Add `genome` and set `alias` in one conditional transaction.

        `expected_revision` is the alias revision the caller read (None: no alias yet).
        ConflictError if the alias moved meanwhile or the version exists: nothing is written.
        """
        ...


class KpiStore(Protocol):
    def put_kpis(self, records: Sequence[KpiRecord]) -> int:
        """Insert records not yet stored (by agent and job id); return how many were new."""
        ...

    def list_kpis(self, agent_id: str, limit: int = 1000) -> list[KpiRecord]: ...


class EvolutionStore(Protocol):
    def create_run(self, run: EvolutionRun) -> None: ...
    def get_run(self, run_id: str) -> EvolutionRun: ...
    def list_runs(self, agent_id: str | None = None) -> list[EvolutionRun]: ...
    def save_run(self, run: EvolutionRun) -> None: ...

    def save_asked(self, run: EvolutionRun, generation: Generation) -> None:
        """Store the asked candidates and the run's new state in one transaction."""
        ...

    def put_shard_fitness(
        self, run_id: str, generation: int, shard: int, fitness: dict[int, float]
    ) -> None: ...
    def get_shard_fitness(self, run_id: str, generation: int) -> dict[int, float]: ...
    def get_generation(self, run_id: str, number: int) -> Generation: ...

    def save_told(self, run: EvolutionRun, generation: Generation, point: FitnessPoint) -> None:
        """Store the evaluated generation, its fitness point and the run state atomically."""
        ...

    def fitness_history(self, run_id: str) -> list[FitnessPoint]: ...


class LedgerStore(Protocol):
    def add_decision(self, decision: Decision) -> None: ...
    def list_decisions(self, execution_id: str) -> list[Decision]: ...
    def add_cost(self, entry: CostEntry) -> None: ...
    def list_costs(self, run_id: str | None = None) -> list[CostEntry]: ...


class Store(AgentStore, GenomeStore, KpiStore, EvolutionStore, LedgerStore, Protocol):
    """Everything Chimera persists: SQLite locally, DynamoDB in the cloud."""

    def ping(self) -> None:
        """Raise if the store cannot answer a read."""
        ...


class ArtifactStore(Protocol):
    """Module bytes and other blobs, by key (a path locally, an S3 key in the cloud)."""

    def read(self, key: str) -> bytes: ...
    def list_bundles(self) -> Iterable[tuple[str, bytes, bytes]]:
        """Yield (bundle key, manifest.json bytes, module bytes) for every agent bundle."""
        ...


class EventBus(Protocol):
    def publish(self, events: Sequence[Event]) -> None: ...
    def ping(self) -> None:
        """Raise if the bus is not reachable (publishes nothing)."""
        ...


class AgentRuntime(Protocol):
    """One sandboxed agent instance (the batched ABI and the JSON entry point)."""

    fuel_used: int
    genome_len: int
    obs_len: int

    def prepare(self, genomes: np.ndarray, n_obs: int, shared: bool) -> None: ...
    def act(self, obs: np.ndarray) -> np.ndarray: ...
    def predict(self, payload: dict[str, object]) -> dict[str, object]: ...


class SandboxPort(Protocol):
    def inspect(self, wasm: bytes) -> ModuleInfo: ...
    def instantiate(self, wasm: bytes, limits: ResourceLimits) -> AgentRuntime: ...


class WorkflowStarter(Protocol):
    """Starts the optimization cycle (Step Functions in the cloud, the local executor here)."""

    def start_cycle(self, name: str, input_: dict[str, object]) -> tuple[str, str]:
        """Start (or find, same name and input) an execution; return (arn, status).

        ConflictError if the name was used with another input.
        """
        ...


class JobRunner(Protocol):
    """Runs a heavy job (Batch / SageMaker locally: a subprocess) and waits for it."""

    def run(self, job: str, args: Sequence[str]) -> None: ...
