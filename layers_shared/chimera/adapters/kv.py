"""The Store port over a single-table key/value layout shared by SQLite and DynamoDB.

Each adapter supplies four primitives (get, query, an atomic conditional write, put-if-absent);
the mapping between models and items lives here once. Item = (pk, sk, doc JSON, rev).
"""

from __future__ import annotations

import abc
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from chimera.domain.errors import NotFoundError
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
)

ABSENT = "absent"


@dataclass(frozen=True)
class Put:
    pk: str
    sk: str
    doc: str
    rev: int | None = None
    # None: unconditional; ABSENT: item must not exist; int: item's rev must equal it.
    condition: str | int | None = None
    ttl: int | None = None


class KeyValueStore(abc.ABC):
    """Implements chimera.ports.Store; subclasses provide the primitives."""

    # -- primitives -----------------------------------------------------------------------
    @abc.abstractmethod
    def _get(self, pk: str, sk: str) -> str | None: ...

    @abc.abstractmethod
    def _query(self, pk: str) -> list[str]:
        """Docs under pk, ordered by sk."""

    @abc.abstractmethod
    def _write(self, puts: Sequence[Put]) -> None:
        """Write all or nothing; ConflictError if a condition fails."""

    @abc.abstractmethod
    def _put_if_absent(self, put: Put) -> bool: ...

    def ping(self) -> None:
        self._get("HEALTH", "ping")

    # -- agents ---------------------------------------------------------------------------
    def put_agent(self, agent: Agent) -> None:
        self._write([Put("AGENTS", agent.agent_id, agent.model_dump_json())])

    def get_agent(self, agent_id: str) -> Agent:
        doc = self._get("AGENTS", agent_id)
        if doc is None:
            raise NotFoundError("agent", agent_id)
        return Agent.model_validate_json(doc)

    def list_agents(self) -> list[Agent]:
        return [Agent.model_validate_json(d) for d in self._query("AGENTS")]

    # -- genomes and aliases --------------------------------------------------------------
    @staticmethod
    def _genome_put(genome: Genome) -> Put:
        return Put(
            f"GENOMES#{genome.agent_id}",
            f"{genome.version:08d}",
            genome.model_dump_json(),
            condition=ABSENT,
        )

    def add_genome(self, genome: Genome) -> None:
        self._write([self._genome_put(genome)])

    def get_genome(self, agent_id: str, version: int) -> Genome:
        doc = self._get(f"GENOMES#{agent_id}", f"{version:08d}")
        if doc is None:
            raise NotFoundError("genome", f"{agent_id}@{version}")
        return Genome.model_validate_json(doc)

    def list_genomes(self, agent_id: str) -> list[Genome]:
        return [Genome.model_validate_json(d) for d in self._query(f"GENOMES#{agent_id}")]

    def latest_genome_version(self, agent_id: str) -> int:
        genomes = self._query(f"GENOMES#{agent_id}")
        return Genome.model_validate_json(genomes[-1]).version if genomes else 0

    def get_alias(self, agent_id: str, name: str = "live") -> Alias | None:
        doc = self._get(f"ALIASES#{agent_id}", name)
        return None if doc is None else Alias.model_validate_json(doc)

    def promote(self, genome: Genome, alias: Alias, expected_revision: int | None) -> None:
        alias_put = Put(
            f"ALIASES#{alias.agent_id}",
            alias.name,
            alias.model_dump_json(),
            rev=alias.revision,
            condition=ABSENT if expected_revision is None else expected_revision,
        )
        exists = self._get(f"GENOMES#{genome.agent_id}", f"{genome.version:08d}")
        if exists is not None and Genome.model_validate_json(exists) == genome:
            self._write([alias_put])  # re-pointing to a stored version (rollback)
        else:
            self._write([self._genome_put(genome), alias_put])

    # -- KPIs -----------------------------------------------------------------------------
    def put_kpis(self, records: Sequence[KpiRecord]) -> int:
        new = 0
        for r in records:
            ttl = int(r.recorded_at.timestamp()) + 90 * 86400
            new += self._put_if_absent(
                Put(f"KPIS#{r.agent_id}", r.job_id, r.model_dump_json(), ttl=ttl)
            )
        return new

    def list_kpis(self, agent_id: str, limit: int = 1000) -> list[KpiRecord]:
        docs = self._query(f"KPIS#{agent_id}")
        recs = [KpiRecord.model_validate_json(d) for d in docs]
        recs.sort(key=lambda r: r.recorded_at)
        return recs[-limit:]

    # -- evolution ------------------------------------------------------------------------
    def create_run(self, run: EvolutionRun) -> None:
        self._write([Put("RUNS", run.run_id, run.model_dump_json(), condition=ABSENT)])

    def get_run(self, run_id: str) -> EvolutionRun:
        doc = self._get("RUNS", run_id)
        if doc is None:
            raise NotFoundError("evolution run", run_id)
        return EvolutionRun.model_validate_json(doc)

    def list_runs(self, agent_id: str | None = None) -> list[EvolutionRun]:
        runs = [EvolutionRun.model_validate_json(d) for d in self._query("RUNS")]
        runs = [r for r in runs if agent_id is None or r.agent_id == agent_id]
        return sorted(runs, key=lambda r: r.started_at)

    def save_run(self, run: EvolutionRun) -> None:
        self._write([Put("RUNS", run.run_id, run.model_dump_json())])

    def save_asked(self, run: EvolutionRun, generation: Generation) -> None:
        self._write(
            [
                Put(f"GEN#{run.run_id}", f"{generation.number:06d}", generation.model_dump_json()),
                Put("RUNS", run.run_id, run.model_dump_json()),
            ]
        )

    def put_shard_fitness(
        self, run_id: str, generation: int, shard: int, fitness: dict[int, float]
    ) -> None:
        doc = json.dumps({str(k): v for k, v in fitness.items()}, separators=(",", ":"))
        self._write([Put(f"SHARD#{run_id}#{generation:06d}", f"{shard:06d}", doc)])

    def get_shard_fitness(self, run_id: str, generation: int) -> dict[int, float]:
        out: dict[int, float] = {}
        for doc in self._query(f"SHARD#{run_id}#{generation:06d}"):
            out.update({int(k): float(v) for k, v in json.loads(doc).items()})
        return out

    def get_generation(self, run_id: str, number: int) -> Generation:
        doc = self._get(f"GEN#{run_id}", f"{number:06d}")
        if doc is None:
            raise NotFoundError("generation", f"{run_id}/{number}")
        return Generation.model_validate_json(doc)

    def save_told(self, run: EvolutionRun, generation: Generation, point: FitnessPoint) -> None:
        self._write(
            [
                Put(f"GEN#{run.run_id}", f"{generation.number:06d}", generation.model_dump_json()),
                Put(f"FIT#{run.run_id}", f"{point.generation:06d}", point.model_dump_json()),
                Put("RUNS", run.run_id, run.model_dump_json()),
            ]
        )

    def fitness_history(self, run_id: str) -> list[FitnessPoint]:
        return [FitnessPoint.model_validate_json(d) for d in self._query(f"FIT#{run_id}")]

    # -- decisions and costs --------------------------------------------------------------
    def add_decision(self, decision: Decision) -> None:
        sk = f"{decision.at.isoformat()}#{uuid.uuid4().hex[:8]}"
        self._write([Put(f"DEC#{decision.execution_id}", sk, decision.model_dump_json())])

    def list_decisions(self, execution_id: str) -> list[Decision]:
        return [Decision.model_validate_json(d) for d in self._query(f"DEC#{execution_id}")]

    def add_cost(self, entry: CostEntry) -> None:
        sk = f"{entry.at.isoformat()}#{entry.entry_id}"
        self._write([Put("COSTS", sk, entry.model_dump_json())])

    def list_costs(self, run_id: str | None = None) -> list[CostEntry]:
        costs = [CostEntry.model_validate_json(d) for d in self._query("COSTS")]
        return [c for c in costs if run_id is None or c.run_id == run_id]
