"""The store ports over one single-table key/value layout shared by SQLite and DynamoDB.

Each adapter supplies a few primitives (get, query on the table or its one index, an
all-or-nothing write of puts and conditional numeric adds, put-if-absent); the mapping between
models and items lives here once, one section per aggregate. Rules both adapters obey:

- an item never exceeds DynamoDB's 400 KB: large documents (an optimizer's state, a big
  generation) go to the blob store by content digest and the item keeps the reference;
  `_write` refuses anything still too large, on SQLite too, so local runs fail like the cloud;
- one index, gsi1 (gsi1pk, gsi1sk), answers runs by agent and status, KPIs by agent, genome
  version and time, costs by period, and the pending outbox;
- events that announce a state change are outbox items written in the same transaction
  (published after: DynamoDB Streams -> EventBridge Pipes in the cloud, a relay locally).
"""

from __future__ import annotations

import abc
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chimera.domain.errors import (
    BudgetExceededError,
    ConflictError,
    NotFoundError,
    ValidationFailedError,
)
from chimera.domain.events import EVENT_TYPES, SOURCE, Event
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
    RunStatus,
    utcnow,
)
from chimera.ports import BlobStore

ABSENT = "absent"
MAX_ITEM_BYTES = 400 * 1024  # DynamoDB's limit, attribute names included
INLINE_BYTES = 64 * 1024  # larger documents go to the blob store
KPI_TTL_S = 90 * 86400
OUTBOX_TTL_S = 7 * 86400
INDEX = "gsi1"
_EVENTS = {cls.detail_type: cls for cls in EVENT_TYPES}


@dataclass(frozen=True)
class Put:
    pk: str
    sk: str
    doc: str
    rev: int | None = None
    # None: unconditional; ABSENT: item must not exist; int: item's rev must equal it.
    condition: str | int | None = None
    ttl: int | None = None
    gsi1: tuple[str, str] | None = None
    attrs: Mapping[str, str] = field(default_factory=dict)  # extra string attributes


@dataclass(frozen=True)
class Add:
    """Add `delta` to the item's number `num`, refused if the result would pass `ceiling`."""

    pk: str
    sk: str
    delta: float
    ceiling: float | None = None


Write = Put | Add


@dataclass(frozen=True)
class Query:
    """One key-condition query: a partition, at most one sort-key condition, an order."""

    pk: str
    index: bool = False  # gsi1 instead of the table
    prefix: str | None = None  # sort key begins with
    between: tuple[str, str] | None = None  # sort key in [lo, hi]
    limit: int | None = None
    newest_first: bool = False

    def __post_init__(self) -> None:
        if self.prefix is not None and self.between is not None:  # as DynamoDB's rule
            raise ValueError("a key condition takes one sort-key condition: prefix or between")


def item_size(put: Put) -> int:
    """DynamoDB's item size: UTF-8 lengths of attribute names and values (numbers ~ 21 B)."""
    size = 2 + len(put.pk.encode()) + 2 + len(put.sk.encode()) + 3 + len(put.doc.encode())
    if put.rev is not None:
        size += 3 + 21
    if put.ttl is not None:
        size += 10 + 21
    if put.gsi1 is not None:
        size += 6 + len(put.gsi1[0].encode()) + 6 + len(put.gsi1[1].encode())
    return size + sum(len(k.encode()) + len(v.encode()) for k, v in put.attrs.items())


def _guard(puts: Sequence[Write]) -> None:
    for put in puts:
        if isinstance(put, Put) and (size := item_size(put)) > MAX_ITEM_BYTES:
            raise ValidationFailedError(
                "item",
                f"{put.pk}/{put.sk} would be {size} bytes, over the 400 KB item limit",
            )


def _iso(at: datetime) -> str:
    return at.isoformat()


class KeyValueStore(abc.ABC):
    """Implements every store port of chimera.ports; subclasses provide the primitives."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    # -- primitives -----------------------------------------------------------------------
    @abc.abstractmethod
    def _get(self, pk: str, sk: str) -> str | None: ...

    @abc.abstractmethod
    def _get_num(self, pk: str, sk: str) -> float: ...

    @abc.abstractmethod
    def _run_query(self, q: Query) -> list[str]:
        """Docs under q.pk (of the table, or of gsi1 when q.index), ordered by sort key."""

    @abc.abstractmethod
    def _commit(self, writes: Sequence[Write]) -> None:
        """All or nothing; ConflictError if a condition fails (checked writes only)."""

    @abc.abstractmethod
    def _insert(self, put: Put) -> bool:
        """Put unless the item exists; True if it was new (a checked put only)."""

    def _query(self, pk: str, **options: Any) -> list[str]:
        return self._run_query(Query(pk, **options))

    def _write(self, writes: Sequence[Write]) -> None:
        """All or nothing (at most 100 items, none over 400 KB); ConflictError on a condition."""
        if len(writes) > 100:
            raise ValidationFailedError("transaction", f"{len(writes)} items, over 100")
        _guard(writes)
        self._commit(writes)

    def _put_if_absent(self, put: Put) -> bool:
        _guard([put])
        return self._insert(put)

    @abc.abstractmethod
    def _delete(self, pk: str, sk: str) -> None: ...

    def ping(self) -> None:
        self._get("HEALTH", "ping")

    # -- large documents ------------------------------------------------------------------
    def _offload(self, doc: dict[str, Any], key: str, prefix: str) -> dict[str, Any]:
        """Move doc[key] to the blob store if the document is large; keep the reference."""
        value = doc[key]
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
        if len(text) <= INLINE_BYTES:
            return doc
        data = text.encode()
        digest = hashlib.sha256(data).hexdigest()
        blob_key = f"{prefix}/{digest}.json"
        self.blobs.put(blob_key, data)
        return {**doc, key: None, f"{key}_ref": {"key": blob_key, "sha256": digest}}

    def _inline(self, doc: dict[str, Any], key: str) -> dict[str, Any]:
        ref = doc.pop(f"{key}_ref", None)
        if ref is not None:
            data = self.blobs.get(ref["key"])
            if hashlib.sha256(data).hexdigest() != ref["sha256"]:
                raise ValidationFailedError(key, f"blob {ref['key']} does not match its digest")
            doc[key] = json.loads(data)
        return doc

    # -- outbox ---------------------------------------------------------------------------
    @staticmethod
    def _outbox(events: Sequence[Event]) -> list[Put]:
        puts = []
        for event in events:
            event_id = uuid.uuid4().hex
            detail = event.model_dump(mode="json")
            envelope = json.dumps(
                {
                    "id": event_id,
                    "source": SOURCE,
                    "detail-type": event.detail_type,
                    "detail": detail,
                }
            )
            puts.append(
                Put(
                    f"OUTBOX#{event_id}",
                    "EVENT",
                    envelope,
                    condition=ABSENT,
                    ttl=int(utcnow().timestamp()) + OUTBOX_TTL_S,
                    gsi1=("OUTBOX", f"{event.at}#{event_id}"),
                    # What the Pipe forwards: DetailType and the detail's JSON text.
                    attrs={"detail_type": event.detail_type, "detail": json.dumps(detail)},
                )
            )
        return puts

    def pending_events(self, limit: int = 100) -> list[tuple[str, Event]]:
        """Outbox items not yet relayed (the local relay; in the cloud a Pipe reads the stream)."""
        out = []
        for doc in self._query("OUTBOX", index=True, limit=limit):
            envelope = json.loads(doc)
            cls = _EVENTS[envelope["detail-type"]]
            out.append((f"OUTBOX#{envelope['id']}", cls.model_validate(envelope["detail"])))
        return out

    def ack_event(self, outbox_key: str) -> None:
        self._delete(outbox_key, "EVENT")

    # -- counters (budgets, quotas) -------------------------------------------------------
    def add_to_counter(self, name: str, delta: float, ceiling: float | None = None) -> float:
        """Atomically add to a named counter; ConflictError if it would pass `ceiling`."""
        self._write([Add("COUNTER", name, delta, ceiling)])
        return self._get_num("COUNTER", name)

    def counter(self, name: str) -> float:
        return self._get_num("COUNTER", name)

    # -- agents ---------------------------------------------------------------------------
    def put_agent(self, agent: Agent, events: Sequence[Event] = ()) -> None:
        self._write([Put("AGENTS", agent.agent_id, agent.model_dump_json()), *self._outbox(events)])

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
        newest = self._query(f"GENOMES#{agent_id}", limit=1, newest_first=True)
        return Genome.model_validate_json(newest[0]).version if newest else 0

    def get_alias(self, agent_id: str, name: str = "live") -> Alias | None:
        doc = self._get(f"ALIASES#{agent_id}", name)
        return None if doc is None else Alias.model_validate_json(doc)

    def promote(
        self,
        genome: Genome,
        alias: Alias,
        expected_revision: int | None,
        events: Sequence[Event] = (),
    ) -> None:
        alias_put = Put(
            f"ALIASES#{alias.agent_id}",
            alias.name,
            alias.model_dump_json(),
            rev=alias.revision,
            condition=ABSENT if expected_revision is None else expected_revision,
        )
        exists = self._get(f"GENOMES#{genome.agent_id}", f"{genome.version:08d}")
        writes: list[Write] = [alias_put, *self._outbox(events)]
        if exists is None or Genome.model_validate_json(exists) != genome:
            writes.append(self._genome_put(genome))  # else: re-pointing to a stored version
        self._write(writes)

    # -- KPIs -----------------------------------------------------------------------------
    def put_kpis(self, records: Sequence[KpiRecord]) -> int:
        new = 0
        for r in records:
            new += self._put_if_absent(
                Put(
                    f"KPI#{r.agent_id}",
                    f"JOB#{r.job_id}",
                    r.model_dump_json(),
                    ttl=int(r.recorded_at.timestamp()) + KPI_TTL_S,
                    gsi1=(
                        f"KPI#{r.agent_id}#v{r.genome_version:08d}",
                        f"{_iso(r.recorded_at)}#{r.job_id}",
                    ),
                )
            )
        return new

    def get_kpi(self, agent_id: str, job_id: str) -> KpiRecord:
        doc = self._get(f"KPI#{agent_id}", f"JOB#{job_id}")
        if doc is None:
            raise NotFoundError("KPI record", f"{agent_id}/{job_id}")
        return KpiRecord.model_validate_json(doc)

    def list_kpis(
        self,
        agent_id: str,
        genome_version: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[KpiRecord]:
        """Newest `limit` records, oldest first: of one version by time (the index), or all."""
        if genome_version is None:
            docs = self._query(f"KPI#{agent_id}")
            recs = [KpiRecord.model_validate_json(d) for d in docs]
            recs = [
                r
                for r in recs
                if (since is None or r.recorded_at >= since)
                and (until is None or r.recorded_at < until)
            ]
            recs.sort(key=lambda r: r.recorded_at)
            return recs[-limit:]
        # Sort keys are "<ISO time>#<job id>": years 0000..9999 bound every moment.
        window = None
        if since is not None or until is not None:
            window = (_iso(since) if since else "0000", _iso(until) if until else "9999")
        docs = self._query(
            f"KPI#{agent_id}#v{genome_version:08d}",
            index=True,
            between=window,
            limit=limit,
            newest_first=True,
        )
        return [KpiRecord.model_validate_json(d) for d in reversed(docs)]

    # -- runs -----------------------------------------------------------------------------
    def _run_put(self, run: EvolutionRun, condition: str | int | None) -> Put:
        doc = self._offload(run.model_dump(mode="json"), "optimizer_state", f"runs/{run.run_id}")
        return Put(
            f"RUN#{run.run_id}",
            "RUN",
            json.dumps(doc, separators=(",", ":")),
            rev=run.revision,
            condition=condition,
            gsi1=(
                f"RUNS#{run.agent_id}",
                f"{run.status.value}#{_iso(run.started_at)}#{run.run_id}",
            ),
        )

    def create_run(self, run: EvolutionRun) -> None:
        """Create a run; ConflictError if it exists or its agent has another running run.

        The agent's ACTIVE item names its current run and is replaced in the same transaction,
        conditional on the revision read, so two executions cannot both start a run for it.
        """
        active = self._get(f"ACTIVE#{run.agent_id}", "RUN")
        previous = None if active is None else json.loads(active)
        if previous is not None and previous["run_id"] != run.run_id:
            other = self._get(f"RUN#{previous['run_id']}", "RUN")
            if other is not None and json.loads(other)["status"] == RunStatus.RUNNING.value:
                raise ConflictError(
                    f"agent_id: {run.agent_id} already has the running run {previous['run_id']}"
                )
        rev = 1 if previous is None else int(previous["rev"]) + 1
        self._write(
            [
                self._run_put(run.model_copy(update={"revision": 1}), ABSENT),
                Put(
                    f"ACTIVE#{run.agent_id}",
                    "RUN",
                    json.dumps({"run_id": run.run_id, "rev": rev}),
                    rev=rev,
                    condition=ABSENT if previous is None else int(previous["rev"]),
                ),
            ]
        )

    def get_run(self, run_id: str) -> EvolutionRun:
        doc = self._get(f"RUN#{run_id}", "RUN")
        if doc is None:
            raise NotFoundError("evolution run", run_id)
        return EvolutionRun.model_validate(self._inline(json.loads(doc), "optimizer_state"))

    def list_runs(
        self, agent_id: str | None = None, status: RunStatus | None = None
    ) -> list[EvolutionRun]:
        """Runs of an agent (of one status, when given), oldest first."""
        agents = [agent_id] if agent_id is not None else [a.agent_id for a in self.list_agents()]
        runs = []
        for agent in agents:
            prefix = f"{status.value}#" if status is not None else None
            for doc in self._query(f"RUNS#{agent}", index=True, prefix=prefix):
                runs.append(
                    EvolutionRun.model_validate(self._inline(json.loads(doc), "optimizer_state"))
                )
        return sorted(runs, key=lambda r: r.started_at)

    def _next(self, run: EvolutionRun) -> tuple[EvolutionRun, Put]:
        """The run at its next revision, conditional on the revision it was read at."""
        nxt = run.model_copy(update={"revision": run.revision + 1})
        return nxt, self._run_put(nxt, run.revision)

    def save_run(self, run: EvolutionRun, events: Sequence[Event] = ()) -> EvolutionRun:
        nxt, put = self._next(run)
        self._write([put, *self._outbox(events)])
        return nxt

    def _generation_put(self, generation: Generation) -> Put:
        doc = self._offload(
            generation.model_dump(mode="json"),
            "individuals",
            f"runs/{generation.run_id}/generations/{generation.number:06d}",
        )
        return Put(
            f"GEN#{generation.run_id}",
            f"{generation.number:06d}",
            json.dumps(doc, separators=(",", ":")),
        )

    def save_asked(self, run: EvolutionRun, generation: Generation) -> EvolutionRun:
        nxt, put = self._next(run)
        self._write([self._generation_put(generation), put])
        return nxt

    def put_shard_fitness(
        self, run_id: str, generation: int, shard: int, fitness: Mapping[int, dict[str, Any]]
    ) -> None:
        doc = json.dumps({str(k): v for k, v in fitness.items()}, separators=(",", ":"))
        self._write([Put(f"SHARD#{run_id}#{generation:06d}", f"{shard:06d}", doc)])

    def get_shard_fitness(self, run_id: str, generation: int) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for doc in self._query(f"SHARD#{run_id}#{generation:06d}"):
            out.update({int(k): v for k, v in json.loads(doc).items()})
        return out

    def get_generation(self, run_id: str, number: int) -> Generation:
        doc = self._get(f"GEN#{run_id}", f"{number:06d}")
        if doc is None:
            raise NotFoundError("generation", f"{run_id}/{number}")
        return Generation.model_validate(self._inline(json.loads(doc), "individuals"))

    def save_told(
        self, run: EvolutionRun, generation: Generation, point: FitnessPoint
    ) -> EvolutionRun:
        nxt, put = self._next(run)
        self._write(
            [
                self._generation_put(generation),
                Put(f"FIT#{run.run_id}", f"{point.generation:06d}", point.model_dump_json()),
                put,
            ]
        )
        return nxt

    def fitness_history(self, run_id: str) -> list[FitnessPoint]:
        return [FitnessPoint.model_validate_json(d) for d in self._query(f"FIT#{run_id}")]

    # -- decisions and costs --------------------------------------------------------------
    def add_decision(self, decision: Decision) -> bool:
        """Record a decision; with a key, at most once (False: a retry had recorded it)."""
        pk = f"DEC#{decision.execution_id}"
        if decision.key is not None:
            return self._put_if_absent(Put(pk, f"KEY#{decision.key}", decision.model_dump_json()))
        sk = f"{_iso(decision.at)}#{uuid.uuid4().hex[:8]}"
        self._write([Put(pk, sk, decision.model_dump_json())])
        return True

    def list_decisions(self, execution_id: str) -> list[Decision]:
        decisions = [Decision.model_validate_json(d) for d in self._query(f"DEC#{execution_id}")]
        return sorted(decisions, key=lambda d: d.at)

    def _cost_put(self, entry: CostEntry) -> Put:
        return Put(
            f"COST#{entry.run_id}",
            entry.entry_id,
            entry.model_dump_json(),
            condition=ABSENT,
            gsi1=(f"COSTS#{entry.at:%Y-%m}", f"{_iso(entry.at)}#{entry.entry_id}"),
        )

    def add_cost(self, entry: CostEntry) -> None:
        self._write([self._cost_put(entry)])

    def charge(self, entry: CostEntry, budget: str, ceiling: float) -> bool:
        """Record a cost and add it to the `budget` counter in one transaction.

        Idempotent by entry id: a repeated charge changes nothing and returns False.
        BudgetExceededError if the counter would pass `ceiling`; nothing is written then.
        """
        if self._get(f"COST#{entry.run_id}", entry.entry_id) is not None:
            return False
        try:
            self._write(
                [self._cost_put(entry), Add("COUNTER", budget, entry.estimated_usd, ceiling)]
            )
        except ConflictError as exc:
            if self._get(f"COST#{entry.run_id}", entry.entry_id) is not None:
                return False  # a concurrent retry recorded it first
            spent = self._get_num("COUNTER", budget)
            raise BudgetExceededError(
                f"budget_usd: {budget} has ${spent:.4f} of ${ceiling:.2f} spent; "
                f"${entry.estimated_usd:.4f} more would pass it"
            ) from exc
        return True

    def list_costs(self, run_id: str | None = None, period: str | None = None) -> list[CostEntry]:
        """Costs of a run, or of a calendar month (`period` as YYYY-MM), oldest first."""
        if run_id is not None:
            docs = self._query(f"COST#{run_id}")
        elif period is not None:
            docs = self._query(f"COSTS#{period}", index=True)
        else:
            raise ValidationFailedError("run_id", "give a run id or a period")
        return sorted((CostEntry.model_validate_json(d) for d in docs), key=lambda c: c.at)


def month(at: datetime | None = None) -> str:
    """The budget period a moment falls in (calendar month, UTC)."""
    return f"{(at or utcnow()):%Y-%m}"
