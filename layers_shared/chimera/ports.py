"""Ports: what the domain needs from the outside world, as typing.Protocol.

Adapters under chimera.adapters implement them; nothing else touches boto3, sqlite3 or wasmtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from chimera.domain.anomalies import DetectorState
from chimera.domain.budget import BudgetState, LedgerEntry
from chimera.domain.events import Event
from chimera.domain.models import (
    Agent,
    Alias,
    Decision,
    EvolutionRun,
    Experiment,
    ExperimentPoint,
    ExperimentStatus,
    FitnessPoint,
    Generation,
    Genome,
    KpiRecord,
    LiveJob,
    Quarantined,
    ResourceLimits,
    RunStatus,
    ShardFitness,
)
from chimera.domain.rollups import DEFAULT_WINDOW_S, Rollup
from chimera.domain.sandbox import ModuleInfo


class AgentStore(Protocol):
    def put_agent(self, agent: Agent, events: Sequence[Event] = ()) -> None:
        """Store the agent and, in the same transaction, the events announcing it."""
        ...

    def get_agent(self, agent_id: str) -> Agent: ...
    def list_agents(self) -> list[Agent]: ...

    def save_agent(self, agent: Agent, events: Sequence[Event] = ()) -> Agent:
        """Store `agent` at its next revision, conditional on the revision it was read at
        (`agent.revision`; 0: a new agent), with `events` in the same transaction.

        Returns the agent as stored. ConflictError if it changed meanwhile: nothing is written.
        """
        ...


class GenomeStore(Protocol):
    """Genome versions and the aliases that route traffic across them."""

    def add_genome(self, genome: Genome) -> None:
        """Store a new version; ConflictError if that version already exists."""
        ...

    def get_genome(self, agent_id: str, version: int) -> Genome: ...
    def list_genomes(self, agent_id: str) -> list[Genome]: ...
    def latest_genome_version(self, agent_id: str) -> int: ...
    def get_alias(self, agent_id: str, name: str = "live") -> Alias | None: ...

    def promote(
        self,
        genome: Genome,
        alias: Alias,
        expected_revision: int | None,
        events: Sequence[Event] = (),
    ) -> None:
        """Add `genome` (unless stored), set `alias` and write `events`, in one transaction.

        `expected_revision` is the alias revision the caller read (None: no alias yet).
        ConflictError if the alias moved meanwhile or the version exists: nothing is written.
        """
        ...


class KpiStore(Protocol):
    def put_kpis(self, records: Sequence[KpiRecord], window_s: int = DEFAULT_WINDOW_S) -> int:
        """Insert records not yet stored (by agent and job id) and update the rollups they
        count in (their `window_s` time window, their experiment arm) in the same
        transactions; return how many were new. A record stored before counts nowhere again."""
        ...

    def get_kpi(self, agent_id: str, job_id: str) -> KpiRecord: ...

    def list_kpis(
        self,
        agent_id: str,
        genome_version: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[KpiRecord]:
        """The newest `limit` records in [since, until), oldest first (by version: indexed)."""
        ...

    def list_rollups(
        self,
        agent_id: str,
        genome_version: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Rollup]:
        """Time-window rollups whose window starts in [since, until), oldest first (then by
        version): an index query, no raw KPI read. Unreadable ones are skipped (quarantined)."""
        ...

    def experiment_rollups(self, experiment_id: str) -> list[Rollup]:
        """Every (step, genome version) arm of one experiment."""
        ...


class DetectorStore(Protocol):
    """Pattern recognition's state per (agent, genome version) (chimera.domain.anomalies)."""

    def get_detector_states(
        self, pairs: Sequence[tuple[str, int]], window_s: int
    ) -> dict[tuple[str, int], DetectorState]:
        """The stored states of these (agent, version) pairs (absent: none stored), with the
        item's revision. One stored for another `window_s`, or that does not parse (noted
        under QUARANTINE), comes back fresh at that revision, marked `replaying`."""
        ...

    def save_detector_state(
        self, state: DetectorState, events: Sequence[Event] = ()
    ) -> DetectorState:
        """Store `state` at its next revision, conditional on the revision it was read at
        (0: none stored), with `events` in the same transaction; ConflictError if it moved:
        nothing is written."""
        ...

    def list_detector_states(self, agent_id: str) -> list[DetectorState]:
        """Every stored state of an agent, by version (unreadable ones skipped, noted)."""
        ...


class JobStore(Protocol):
    """Live jobs, once each by (agent, job id)."""

    def put_job(self, job: LiveJob) -> LiveJob:
        """Store the job unless one with its id is stored; return the stored one (a retried
        request gets the first answer, and the caller does not run the job again)."""
        ...

    def find_job(self, agent_id: str, job_id: str) -> LiveJob | None: ...


class ExperimentStore(Protocol):
    """Experiments and the alias moves they make, each in one transaction.

    At most one experiment per agent runs at a time; every save is conditional on the
    experiment's revision and, when it moves the alias, on the alias revision it last wrote.
    """

    def start_experiment(
        self, experiment: Experiment, alias: Alias, events: Sequence[Event] = ()
    ) -> Experiment:
        """Store a new running experiment and set `alias` (its first weight step), conditional
        on the alias being at `alias.revision - 1` and on no other running experiment of the
        agent. ConflictError otherwise: nothing is written. A retry with the same experiment id
        returns the stored experiment."""
        ...

    def get_experiment(self, experiment_id: str) -> Experiment: ...

    def list_experiments(
        self, agent_id: str | None = None, status: ExperimentStatus | None = None
    ) -> list[Experiment]:
        """Newest first."""
        ...

    def running_experiment(self, agent_id: str) -> Experiment | None: ...

    def save_experiment(
        self,
        experiment: Experiment,
        alias: Alias | None = None,
        events: Sequence[Event] = (),
        point: ExperimentPoint | None = None,
    ) -> Experiment:
        """Store `experiment` at its next revision, conditional on the revision it was read at;
        with `alias` (conditional on `alias.revision - 1`), `point` (once by its seq) and
        `events`, all in one transaction. A concluded or stopped experiment frees its agent for
        the next one. ConflictError if either moved: nothing is written."""
        ...

    def list_experiment_points(self, experiment_id: str) -> list[ExperimentPoint]: ...

    def set_alias(self, alias: Alias, events: Sequence[Event] = ()) -> None:
        """Set the alias, conditional on it being at `alias.revision - 1` (0: no alias yet),
        with `events` in the same transaction; ConflictError if it moved."""
        ...


class Clock(Protocol):
    """The deployment's time: the system clock in the cloud; locally the system clock plus the
    simulated time that bakes have advanced (no real sleeping), kept in the store."""

    def now(self) -> datetime: ...

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass: a no-op on a real clock (the workflow engine waits)."""
        ...


class RunStore(Protocol):
    """Evolution runs. Every save is conditional on the revision read and returns the next."""

    def create_run(self, run: EvolutionRun) -> None: ...
    def get_run(self, run_id: str) -> EvolutionRun: ...
    def list_runs(
        self, agent_id: str | None = None, status: RunStatus | None = None
    ) -> list[EvolutionRun]: ...
    def save_run(self, run: EvolutionRun, events: Sequence[Event] = ()) -> EvolutionRun:
        """ConflictError if the run changed since `run` was read; nothing is written then."""
        ...


class GenerationStore(Protocol):
    """Generations of a run: asked candidates, shard fitnesses, told results, history."""

    def save_asked(self, run: EvolutionRun, generation: Generation) -> EvolutionRun:
        """Store the asked candidates and the run's new state in one transaction."""
        ...

    def put_shard_fitness(
        self,
        run_id: str,
        generation: int,
        shard: int,
        fitness: Mapping[int, dict[str, Any]],
        seconds: float | None = None,
    ) -> None:
        """Fitness of a shard's candidates by index, each as chimera Fitness JSON, and the
        seconds its evaluation was measured to take (None: not measured). One record per
        shard: a second write (a retried task) replaces the first."""
        ...

    def get_shards(self, run_id: str, generation: int) -> list[ShardFitness]:
        """The generation's shard records (fitness and measured seconds), by shard number."""
        ...

    def get_shard_fitness(self, run_id: str, generation: int) -> dict[int, dict[str, Any]]:
        """Fitness by candidate index over all of the generation's shards."""
        ...

    def get_generation(self, run_id: str, number: int) -> Generation: ...

    def save_told(
        self, run: EvolutionRun, generation: Generation, point: FitnessPoint
    ) -> EvolutionRun:
        """Store the evaluated generation, its fitness point and the run state atomically."""
        ...

    def fitness_history(self, run_id: str) -> list[FitnessPoint]: ...


class DecisionStore(Protocol):
    def add_decision(self, decision: Decision) -> bool:
        """Record a decision; one with a key at most once (False: it was recorded before)."""
        ...

    def list_decisions(self, execution_id: str) -> list[Decision]: ...


class CostLedger(Protocol):
    """Layer 8's ledger and the period's hard budget (chimera.domain.budget)."""

    def reserve(self, entry: LedgerEntry, budget_usd: float) -> tuple[LedgerEntry, bool]:
        """Hold the entry's reserved amount under the budget, atomically; (entry, new).

        A retry returns the stored entry and holds nothing more; BudgetExceededError if the
        hold would pass `budget_usd`.
        """
        ...

    def settle(
        self,
        run_id: str,
        entry_id: str,
        actual_usd: float,
        settled_at: datetime,
        note: str = "",
        detail: dict[str, Any] | None = None,
    ) -> LedgerEntry:
        """Commit the actual and release the rest of the reservation (idempotent)."""
        ...

    def get_ledger_entry(self, run_id: str, entry_id: str) -> LedgerEntry | None: ...

    def list_ledger(
        self, run_id: str | None = None, period: str | None = None
    ) -> list[LedgerEntry]: ...

    def budget_state(self, period: str, budget_usd: float) -> BudgetState: ...

    def fire_thresholds(self, period: str, budget_usd: float) -> list[float]:
        """BudgetThresholdReached through the outbox, once per threshold reached."""
        ...


class CounterStore(Protocol):
    def add_to_counter(self, name: str, delta: float, ceiling: float | None = None) -> float:
        """Conditional numeric update: ConflictError if the result would pass `ceiling`."""
        ...

    def counter(self, name: str) -> float: ...


class Store(
    AgentStore,
    GenomeStore,
    KpiStore,
    DetectorStore,
    JobStore,
    ExperimentStore,
    RunStore,
    GenerationStore,
    DecisionStore,
    CostLedger,
    CounterStore,
    Protocol,
):
    """Everything Chimera persists: SQLite locally, DynamoDB in the cloud (one table)."""

    blobs: BlobStore  # large and immutable documents by key: module versions, big states

    def ping(self) -> None:
        """Raise if the store cannot answer a read."""
        ...

    def list_quarantined(self) -> list[Quarantined]:
        """Stored items readers skipped because they did not parse, and still do not."""
        ...


class BlobStore(Protocol):
    """Large immutable documents by key (S3 in the cloud, files locally)."""

    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...


class ArtifactStore(Protocol):
    """Agent bundles as operators upload them (a folder locally, an S3 prefix in the cloud).

    Bundle files are mutable and untrusted: discovery copies what it registers into the blob
    store by digest, and nothing serves from here.
    """

    def list_bundles(self, max_manifest_bytes: int) -> Iterable[tuple[str, bytes]]:
        """Yield (bundle location, manifest.json bytes) for every bundle, in location order.

        At most `max_manifest_bytes + 1` bytes of a manifest are read: more means too large.
        """
        ...

    def read_module(self, bundle: str, name: str, max_bytes: int) -> bytes:
        """The module file `name` of a bundle.

        ValidationFailedError (field `module`) if `name` is not a plain file name of that
        bundle or the file is larger than `max_bytes`; NotFoundError if it is absent.
        """
        ...


class EventBus(Protocol):
    def publish(self, events: Sequence[Event]) -> None: ...
    def ping(self) -> None:
        """Raise if the bus is not reachable (publishes nothing)."""
        ...


class AgentRuntime(Protocol):
    """One sandboxed agent instance (the batched ABI and the JSON entry point).

    One instance is one evaluation (a shard, a hold-out, a predict): besides each call's
    limits it has the policy's total fuel and wall budget. Every guest failure is a
    GuestError with a stable `kind`; after one the instance refuses further calls.
    `act` returns outputs as written, NaN included (the suite fails that agent);
    `predict` returns a JSON object bounded in size and depth, with finite numbers only.
    """

    fuel_used: int
    genome_len: int
    obs_len: int

    def prepare(self, genomes: np.ndarray, n_obs: int, shared: bool) -> None: ...
    def act(self, obs: np.ndarray) -> np.ndarray: ...
    def predict(self, payload: dict[str, object]) -> dict[str, object]: ...


class SandboxPort(Protocol):
    """Compiles and instantiates modules under a SandboxPolicy. `inspect` reports what layer
    3's `module_problems` checks (exports with their types, every memory and table, size);
    `instantiate` refuses what the policy forbids with a GuestError (defence in depth)."""

    def inspect(self, wasm: bytes) -> ModuleInfo: ...
    def instantiate(self, wasm: bytes, limits: ResourceLimits) -> AgentRuntime: ...


class WorkflowStarter(Protocol):
    """Starts the optimization cycle (Step Functions in the cloud, the local executor here)."""

    def start_cycle(self, name: str, input_: dict[str, object]) -> tuple[str, str]:
        """Start (or find, same name and input) an execution; return (arn, status).

        ConflictError if the name was used with another input.
        """
        ...

    def is_running(self, execution_id: str) -> bool | None:
        """Whether the cycle execution of that name still runs; None when it is not known."""
        ...


class JobRunner(Protocol):
    """Runs a heavy job (Batch / SageMaker locally: a subprocess) and waits for it."""

    def run(self, job: str, args: Sequence[str]) -> None: ...
