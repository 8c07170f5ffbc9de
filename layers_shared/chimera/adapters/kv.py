"""The store ports over one single-table key/value layout shared by SQLite and DynamoDB.

Each adapter supplies a few primitives (get, query on the table or its one index, an
all-or-nothing write of puts and conditional numeric adds, put-if-absent); the mapping between
models and items lives here once, one section per aggregate. Rules both adapters obey:

- an item never exceeds DynamoDB's 400 KB: large documents (an optimizer's state, a big
  generation) go to the blob store by content digest and the item keeps the reference;
  `_write` refuses anything still too large, on SQLite too, so local runs fail like the cloud;
- one index, gsi1 (gsi1pk, gsi1sk), answers runs by agent and status, KPIs by agent, genome
  version and time, the cost ledger by period, and the pending outbox;
- KPI rollups (chimera.domain.rollups) are items of their own, updated in the transaction
  that stores their KPIs: a time window under `ROLLUP#agent` / `<window start>#vNNNNNNNN`
  (gsi1 `ROLLUP#agent#vNNNNNNNN` / `<window start>`), an experiment arm under
  `ARM#experiment` / `<step>#vNNNNNNNN`; analyses read them, never the raw KPIs (the
  "-- KPIs --" section has the details);
- pattern recognition keeps one state per agent and genome version under `DETECT#agent` /
  `vNNNNNNNN` (`kv_detectors`), saved conditionally with the AnomalyDetected events it makes;
- events that announce a state change are outbox items written in the same transaction
  (published after: DynamoDB Streams -> EventBridge Pipes in the cloud, a relay locally);
- no document holds NaN or infinity: a write that would is refused, naming the field;
- a stored item that cannot be parsed (written by hand, by an older version, by a bug, or
  damaged) never fails a list read: it is skipped, logged with its key and noted under the
  QUARANTINE partition (`list_quarantined`); a single read raises CorruptStateError naming it.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import json
import logging
import math
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from pydantic import ValidationError

from chimera.adapters.kv_costs import PARSERS as COST_PARSERS
from chimera.adapters.kv_costs import CostItems
from chimera.adapters.kv_detectors import PARSERS as DETECTOR_PARSERS
from chimera.adapters.kv_detectors import DetectorItems
from chimera.adapters.kv_experiments import PARSERS as EXPERIMENT_PARSERS
from chimera.adapters.kv_experiments import ExperimentItems
from chimera.domain.errors import (
    ConflictError,
    CorruptStateError,
    NotFoundError,
    ValidationFailedError,
)
from chimera.domain.events import EVENT_TYPES, SOURCE, Event
from chimera.domain.models import (
    Agent,
    Alias,
    Decision,
    EvolutionRun,
    FitnessPoint,
    Generation,
    Genome,
    KpiRecord,
    Quarantined,
    RunStatus,
    ShardFitness,
    utcnow,
)
from chimera.domain.rollups import DEFAULT_WINDOW_S, Rollup, Scope, scopes_of
from chimera.ports import BlobStore

log = logging.getLogger(__name__)
T = TypeVar("T")

ABSENT = "absent"
MAX_ITEM_BYTES = 400 * 1024  # DynamoDB's limit, attribute names included
INLINE_BYTES = 64 * 1024  # larger documents go to the blob store
KPI_TTL_S = 90 * 86400
OUTBOX_TTL_S = 7 * 86400
INDEX = "gsi1"
QUARANTINE = "QUARANTINE"
UNREADABLE = "\x00"  # an adapter's stand-in for a doc it could not decode, then the reason
_EVENTS = {cls.detail_type: cls for cls in EVENT_TYPES}


class Row(NamedTuple):
    """One stored item as a query returns it: its table keys and its document."""

    pk: str
    sk: str
    doc: str


def unreadable(why: str) -> str:
    """What an adapter returns for a document it cannot decode (bad UTF-8, no doc attribute):
    the reader then names the item and the reason, as for a document it cannot parse."""
    return UNREADABLE + why


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
    _finite(puts)


def _no_constant(name: str) -> float:
    raise ValueError(name)


def _finite(writes: Sequence[Write]) -> None:
    """Refuse a document holding NaN or infinity (json.dumps writes them as NaN/Infinity,
    pydantic as null: either way the stored item would not read back as it was meant)."""
    for w in writes:
        if isinstance(w, Add):
            if not (math.isfinite(w.delta) and (w.ceiling is None or math.isfinite(w.ceiling))):
                raise ValidationFailedError("delta", f"{w.pk}/{w.sk}: not a finite number")
            continue
        for text in (w.doc, *w.attrs.values()):
            if "NaN" not in text and "Infinity" not in text:
                continue  # the common case: nothing to parse
            try:
                json.loads(text, parse_constant=_no_constant)
            except ValueError:
                where, value = _first_non_finite(json.loads(text))
                raise ValidationFailedError(
                    where or "item", f"{w.pk}/{w.sk}: {value} is not a finite number; not stored"
                ) from None


def _check_finite(item: str, **values: Any) -> None:
    """ValidationFailedError naming the first NaN or infinity in `values` (JSON has neither)."""
    for name, value in values.items():
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            where, bad = _first_non_finite(value, name)
            raise ValidationFailedError(where, f"{item}: {bad} is not a finite number") from None


def _first_non_finite(value: Any, path: str = "") -> tuple[str, Any]:
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    items: Any = ()
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    for key, inner in items:
        found = _first_non_finite(inner, f"{path}.{key}" if path else str(key))
        if found[0] or found[1] is not None:
            return found
    return "", None


def _why(exc: BaseException) -> str:
    """One line on why a stored document does not parse (the first field pydantic names)."""
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        if err["type"] == "json_invalid":
            cause = str(err["msg"]).removeprefix("Invalid JSON: ")
            return f"not valid JSON ({cause}: truncated or damaged)"
        where = ".".join(str(p) for p in err["loc"]) or exc.title
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"{where}: {err['msg']}{more}"
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg} at character {exc.pos}: truncated or damaged)"
    return f"{type(exc).__name__}: {exc}"[:300]


def _iso(at: datetime) -> str:
    return at.isoformat()


class KeyValueStore(ExperimentItems, DetectorItems, CostItems, abc.ABC):
    """Implements every store port of chimera.ports; subclasses provide the primitives."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self._noted: set[tuple[str, str]] = set()  # unreadable items noted by this process

    # -- primitives -----------------------------------------------------------------------
    @abc.abstractmethod
    def _get(self, pk: str, sk: str) -> str | None:
        """The item's doc (or `unreadable(why)`), None if there is no such item."""

    @abc.abstractmethod
    def _get_num(self, pk: str, sk: str) -> float: ...

    @abc.abstractmethod
    def _run_query(self, q: Query) -> list[Row]:
        """Items under q.pk (of the table, or of gsi1 when q.index), ordered by sort key."""

    @abc.abstractmethod
    def _commit(self, writes: Sequence[Write]) -> None:
        """All or nothing; ConflictError if a condition fails (checked writes only)."""

    @abc.abstractmethod
    def _insert(self, put: Put) -> bool:
        """Put unless the item exists; True if it was new (a checked put only)."""

    def _query(self, pk: str, **options: Any) -> list[str]:
        return [row.doc for row in self._run_query(Query(pk, **options))]

    def _rows(self, pk: str, **options: Any) -> list[Row]:
        return self._run_query(Query(pk, **options))

    # -- reading: a document that does not parse is named, and skipped by list reads -------
    def _read(self, parse: Callable[[str], T], row: Row) -> T:
        """Parse one stored document; CorruptStateError naming the item if it cannot be."""
        if row.doc.startswith(UNREADABLE):
            raise CorruptStateError(f"{row.pk}/{row.sk}", row.doc[len(UNREADABLE) :])
        try:
            return parse(row.doc)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            raise CorruptStateError(f"{row.pk}/{row.sk}", _why(exc)) from exc
        except NotFoundError as exc:  # a large document's blob is missing
            raise CorruptStateError(f"{row.pk}/{row.sk}", str(exc)) from exc

    def _read_one(self, parse: Callable[[str], T], pk: str, sk: str) -> T | None:
        doc = self._get(pk, sk)
        return None if doc is None else self._read(parse, Row(pk, sk, doc))

    def _read_all(self, parse: Callable[[str], T], rows: Sequence[Row]) -> list[T]:
        """Every row that parses; each one that does not is logged, noted and skipped."""
        out = []
        for row in rows:
            try:
                out.append(self._read(parse, row))
            except CorruptStateError as exc:
                self._quarantine(row, exc.reason)
        return out

    def _quarantine(self, row: Row, reason: str) -> None:
        log.warning("skipped unreadable item %s/%s: %s", row.pk, row.sk, reason)
        if (row.pk, row.sk) in self._noted:
            return
        self._noted.add((row.pk, row.sk))
        note = Quarantined(pk=row.pk, sk=row.sk, reason=reason[:1000], head=row.doc[:200])
        try:  # a note, never a reason for the read to fail
            self._write([Put(QUARANTINE, json.dumps([row.pk, row.sk]), note.model_dump_json())])
        except Exception:  # noqa: BLE001
            log.warning("could not note %s/%s under %s", row.pk, row.sk, QUARANTINE, exc_info=True)

    def _parser(self, pk: str) -> Callable[[str], Any] | None:
        """How the item kind under `pk` is read (for re-checking a quarantine note)."""
        kinds: list[tuple[str, Callable[[str], Any]]] = [
            ("AGENTS", Agent.model_validate_json),
            ("GENOMES#", Genome.model_validate_json),
            ("ALIASES#", Alias.model_validate_json),
            ("KPI#", KpiRecord.model_validate_json),
            ("ROLLUP#", Rollup.model_validate_json),
            ("ARM#", Rollup.model_validate_json),
            ("RUN#", self._parse_run),
            ("GEN#", self._parse_generation),
            ("SHARD#", _parse_shard),
            ("FIT#", FitnessPoint.model_validate_json),
            ("DEC#", Decision.model_validate_json),
            ("OUTBOX#", _parse_envelope),
            *EXPERIMENT_PARSERS,
            *DETECTOR_PARSERS,
            *COST_PARSERS,
        ]
        return next((parse for prefix, parse in kinds if pk.startswith(prefix)), None)

    def list_quarantined(self) -> list[Quarantined]:
        """Items a reader skipped because they did not parse, and that still do not: each
        note is checked again against the item (one fixed or deleted since is left out)."""
        out = []
        for row in self._rows(QUARANTINE):
            try:
                note = Quarantined.model_validate_json(row.doc)
            except ValueError:
                continue
            doc = self._get(note.pk, note.sk)
            parse = self._parser(note.pk)
            if doc is None:
                continue
            if parse is not None:
                try:
                    self._read(parse, Row(note.pk, note.sk, doc))
                    continue
                except CorruptStateError as exc:
                    note = note.model_copy(update={"reason": exc.reason[:1000]})
            out.append(note)
        return out

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
        try:
            text = json.dumps(value, separators=(",", ":"), allow_nan=False)
        except ValueError:
            where, bad = _first_non_finite(value)
            raise ValidationFailedError(
                f"{key}.{where}" if where else key, f"{prefix}: {bad} is not a finite number"
            ) from None
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
                raise ValueError(f"{key}: blob {ref['key']} does not match its digest")
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
        """Outbox items not yet relayed (the local relay; in the cloud a Pipe reads the stream).
        One that does not parse stays where it is, noted, and is not relayed."""
        rows = self._rows("OUTBOX", index=True, limit=limit)
        return [(row.pk, event) for row, event in self._read_pairs(_parse_envelope, rows)]

    def _read_pairs(self, parse: Callable[[str], T], rows: Sequence[Row]) -> list[tuple[Row, T]]:
        out = []
        for row in rows:
            try:
                out.append((row, self._read(parse, row)))
            except CorruptStateError as exc:
                self._quarantine(row, exc.reason)
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
        agent = self._read_one(Agent.model_validate_json, "AGENTS", agent_id)
        if agent is None:
            raise NotFoundError("agent", agent_id, field="agent_id")
        return agent

    def list_agents(self) -> list[Agent]:
        return self._read_all(Agent.model_validate_json, self._rows("AGENTS"))

    # -- agents: conditional saves (module versions; issue 6, bundles and discovery) -------
    def save_agent(self, agent: Agent, events: Sequence[Event] = ()) -> Agent:
        """The agent at its next revision, conditional on the revision it was read at.

        Revision 0 is an agent not stored yet (put-if-absent), or one stored before agents
        had revisions (rev NULL): that one upgrade write is unconditional.
        """
        nxt = agent.model_copy(update={"revision": agent.revision + 1})
        condition: str | int | None = agent.revision
        if agent.revision == 0:
            condition = ABSENT if self._get("AGENTS", agent.agent_id) is None else None
        put = Put(
            "AGENTS", agent.agent_id, nxt.model_dump_json(), rev=nxt.revision, condition=condition
        )
        self._write([put, *self._outbox(events)])
        return nxt

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
        genome = self._read_one(Genome.model_validate_json, f"GENOMES#{agent_id}", f"{version:08d}")
        if genome is None:
            raise NotFoundError("genome", f"{agent_id}@{version}", field="genome_version")
        return genome

    def list_genomes(self, agent_id: str) -> list[Genome]:
        return self._read_all(Genome.model_validate_json, self._rows(f"GENOMES#{agent_id}"))

    def latest_genome_version(self, agent_id: str) -> int:
        """From the newest key: a version is taken even if its document does not parse."""
        newest = self._rows(f"GENOMES#{agent_id}", limit=1, newest_first=True)
        return int(newest[0].sk) if newest else 0

    def get_alias(self, agent_id: str, name: str = "live") -> Alias | None:
        return self._read_one(Alias.model_validate_json, f"ALIASES#{agent_id}", name)

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
        exists = self._read_one(
            Genome.model_validate_json, f"GENOMES#{genome.agent_id}", f"{genome.version:08d}"
        )
        writes: list[Write] = [alias_put, *self._outbox(events)]
        if exists is None or exists != genome:
            writes.append(self._genome_put(genome))  # else: re-pointing to a stored version
        self._write(writes)

    # -- KPIs -----------------------------------------------------------------------------
    # A KPI is `KPI#agent` / `JOB#job` (idempotency), indexed by gsi1 `KPI#agent#vNNNNNNNN` /
    # `time#job`. Its rollups (chimera.domain.rollups) are kept beside it, in the same
    # transaction:
    #   time window     pk `ROLLUP#agent`, sk `<window start ISO>#vNNNNNNNN` (all versions by
    #                   time); gsi1 `ROLLUP#agent#vNNNNNNNN` / `<window start ISO>` (one
    #                   version by time)
    #   experiment arm  pk `ARM#experiment`, sk `SS#vNNNNNNNN` (step, then version)
    # each with `rev` = its revision. put_kpis chunks a batch so that a chunk's KPI puts and
    # rollup puts fit one transaction (`kpi_txn_items`: DynamoDB's 100; an adapter without
    # that limit may take more, SQLite does), and commits each chunk
    # as one: every KPI put conditional on absence, every rollup put on the revision read
    # (absent when new). A conflict (a concurrent writer stored one of the KPIs or moved a
    # rollup) re-reads and retries the chunk, KPI_RETRIES times at most, then ConflictError.
    kpi_txn_items = 100  # items (KPIs + rollups) in one put_kpis transaction: DynamoDB's limit

    @abc.abstractmethod
    def _get_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Versioned]:
        """The items of these keys that exist (at most 100 keys): doc (or `unreadable`)
        and rev. A strongly consistent read."""

    @staticmethod
    def _kpi_put(r: KpiRecord) -> Put:
        return Put(
            f"KPI#{r.agent_id}",
            f"JOB#{r.job_id}",
            r.model_dump_json(),
            condition=ABSENT,
            ttl=int(r.recorded_at.timestamp()) + KPI_TTL_S,
            gsi1=(
                f"KPI#{r.agent_id}#v{r.genome_version:08d}",
                f"{_iso(r.recorded_at)}#{r.job_id}",
            ),
        )

    @staticmethod
    def _rollup_key(scope: Scope) -> tuple[str, str]:
        if scope.experiment_id is not None:
            return f"ARM#{scope.experiment_id}", f"{scope.step:02d}#v{scope.genome_version:08d}"
        assert scope.window_start is not None
        return f"ROLLUP#{scope.agent_id}", f"{_iso(scope.window_start)}#v{scope.genome_version:08d}"

    def _rollup_put(self, scope: Scope, rollup: Rollup, condition: str | int | None) -> Put:
        pk, sk = self._rollup_key(scope)
        gsi1 = None
        if scope.window_start is not None:
            gsi1 = (
                f"ROLLUP#{scope.agent_id}#v{scope.genome_version:08d}",
                _iso(scope.window_start),
            )
        return Put(
            pk, sk, rollup.model_dump_json(), rev=rollup.revision, condition=condition, gsi1=gsi1
        )

    def put_kpis(self, records: Sequence[KpiRecord], window_s: int = DEFAULT_WINDOW_S) -> int:
        """Store the records not stored yet (by agent and job id) and update every rollup
        they count in, chunk by chunk, each chunk one transaction; return how many were new.

        A record already stored (a redelivery, or twice in `records`) counts nowhere again.
        A process that dies between chunks leaves each committed chunk whole, KPIs and
        rollups together; the same batch again stores the rest.
        """
        unique: dict[tuple[str, str], KpiRecord] = {}
        for r in records:
            unique.setdefault((r.agent_id, r.job_id), r)
        return sum(
            self._put_kpi_chunk(chunk, window_s)
            for chunk in _kpi_chunks(unique.values(), window_s, self.kpi_txn_items)
        )

    def _put_kpi_chunk(self, chunk: Sequence[Touching], window_s: int) -> int:
        keys = [(f"KPI#{r.agent_id}", f"JOB#{r.job_id}") for r, _ in chunk]
        for _ in range(KPI_RETRIES):
            stored = self._get_many(keys)
            fresh = [item for item, key in zip(chunk, keys, strict=True) if key not in stored]
            if not fresh:
                return 0
            groups: dict[Scope, list[KpiRecord]] = {}
            for record, scopes in fresh:
                for scope in scopes:
                    groups.setdefault(scope, []).append(record)
            kpis = [self._kpi_put(r) for r, _ in fresh]
            # No NaN or infinity (a record built without validation), before the rollups see
            # one; no size check: KpiRecord's field limits keep a KPI item under 40 KB.
            _finite(kpis)
            current = self._get_many([self._rollup_key(scope) for scope in groups])
            rollups: list[Put] = []
            for scope, members in groups.items():
                rollup, condition = self._rollup_base(scope, current, window_s)
                nxt = rollup.with_records(members)
                nxt = nxt.model_copy(update={"revision": rollup.revision + 1})
                rollups.append(self._rollup_put(scope, nxt, condition))
            _guard(rollups)
            try:  # a chunk holds kpi_txn_items at most (_kpi_chunks)
                self._commit([*kpis, *rollups])
            except ConflictError:
                log.info("KPI chunk of %d records met a concurrent writer; re-reading", len(chunk))
                continue
            return len(fresh)
        first = chunk[0][0]
        raise ConflictError(
            f"records: {len(chunk)} KPI records lost {KPI_RETRIES} races for their rollups "
            f"(first: {first.agent_id}/{first.job_id}); retry the batch"
        )

    def _rollup_base(
        self, scope: Scope, current: Mapping[tuple[str, str], Versioned], window_s: int
    ) -> tuple[Rollup, str | int | None]:
        """The stored rollup of `scope` and the condition of its next put. A stored rollup
        that does not parse is noted under QUARANTINE and rebuilt from the scope's stored
        KPIs (the index by agent and version), conditional on the damaged item's rev."""
        key = self._rollup_key(scope)
        found = current.get(key)
        if found is None:
            return Rollup.empty(scope, window_s), ABSENT
        row = Row(*key, found.doc)
        try:
            rollup = self._read(Rollup.model_validate_json, row)
        except CorruptStateError as exc:
            self._quarantine(row, exc.reason)
            rebuilt = Rollup.empty(scope, window_s).with_records(self._scope_kpis(scope, window_s))
            rev = found.rev if found.rev is not None else 0
            return rebuilt.model_copy(update={"revision": rev}), found.rev
        if rollup.revision != found.rev:  # a doc written by hand: the item's rev decides
            rollup = rollup.model_copy(update={"revision": found.rev or 0})
        return rollup, found.rev

    def _scope_kpis(self, scope: Scope, window_s: int) -> list[KpiRecord]:
        """Every stored KPI of a scope (only to rebuild a damaged rollup): an index query."""
        if scope.window_start is not None:
            until = scope.window_start + timedelta(seconds=window_s)
            return self.list_kpis(
                scope.agent_id, scope.genome_version, scope.window_start, until, limit=10**9
            )
        recs = self.list_kpis(scope.agent_id, scope.genome_version, limit=10**9)
        return [r for r in recs if r.experiment_id == scope.experiment_id and r.step == scope.step]

    def list_rollups(
        self,
        agent_id: str,
        genome_version: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Rollup]:
        """Time-window rollups of an agent (of one version, when given) whose window starts
        in [since, until), oldest first (then by version): one query, no KPI read."""
        lo = _iso(_utc(since)) if since is not None else "0000"
        hi = _iso(_utc(until)) if until is not None else "9999"
        if genome_version is None:
            rows = self._rows(f"ROLLUP#{agent_id}", between=(lo, hi))
        else:
            rows = self._rows(
                f"ROLLUP#{agent_id}#v{genome_version:08d}", index=True, between=(lo, hi)
            )
        out = self._read_all(Rollup.model_validate_json, rows)
        return [
            r
            for r in out
            if until is None or (r.window_start is not None and r.window_start < _utc(until))
        ]

    def experiment_rollups(self, experiment_id: str) -> list[Rollup]:
        """Every (step, genome version) arm of one experiment, by step then version."""
        return self._read_all(Rollup.model_validate_json, self._rows(f"ARM#{experiment_id}"))

    def get_kpi(self, agent_id: str, job_id: str) -> KpiRecord:
        kpi = self._read_one(KpiRecord.model_validate_json, f"KPI#{agent_id}", f"JOB#{job_id}")
        if kpi is None:
            raise NotFoundError("KPI record", f"{agent_id}/{job_id}", field="job_id")
        return kpi

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
            recs = self._read_all(KpiRecord.model_validate_json, self._rows(f"KPI#{agent_id}"))
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
        rows = self._rows(
            f"KPI#{agent_id}#v{genome_version:08d}",
            index=True,
            between=window,
            limit=limit,
            newest_first=True,
        )
        return self._read_all(KpiRecord.model_validate_json, rows[::-1])

    # -- runs -----------------------------------------------------------------------------
    def _run_put(self, run: EvolutionRun, condition: str | int | None) -> Put:
        # pydantic dumps NaN and infinity inside untyped values as null: check them as they are.
        _check_finite(f"RUN#{run.run_id}", optimizer_state=run.optimizer_state)
        _check_finite(f"RUN#{run.run_id}", termination=run.termination)
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
        try:
            previous = None if active is None else json.loads(active)
            if previous is not None:
                previous = {"run_id": str(previous["run_id"]), "rev": int(previous["rev"])}
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptStateError(f"ACTIVE#{run.agent_id}/RUN", _why(exc)) from exc
        if previous is not None and previous["run_id"] != run.run_id:
            try:
                running = self.get_run(previous["run_id"]).status == RunStatus.RUNNING
            except (NotFoundError, CorruptStateError) as exc:
                # Gone, or unreadable: nobody can resume it, so it holds the agent no longer.
                log.warning("agent %s: its running run is unusable (%s)", run.agent_id, exc)
                running = False
            if running:
                raise ConflictError(
                    f"agent_id: {run.agent_id} already has the running run {previous['run_id']}"
                )
        rev = 1 if previous is None else previous["rev"] + 1
        self._write(
            [
                self._run_put(run.model_copy(update={"revision": 1}), ABSENT),
                Put(
                    f"ACTIVE#{run.agent_id}",
                    "RUN",
                    json.dumps({"run_id": run.run_id, "rev": rev}),
                    rev=rev,
                    condition=ABSENT if previous is None else previous["rev"],
                ),
            ]
        )

    def _parse_run(self, doc: str) -> EvolutionRun:
        return EvolutionRun.model_validate(self._inline(json.loads(doc), "optimizer_state"))

    def get_run(self, run_id: str) -> EvolutionRun:
        run = self._read_one(self._parse_run, f"RUN#{run_id}", "RUN")
        if run is None:
            raise NotFoundError("evolution run", run_id, field="run_id")
        return run

    def list_runs(
        self, agent_id: str | None = None, status: RunStatus | None = None
    ) -> list[EvolutionRun]:
        """Runs of an agent (of one status, when given), oldest first."""
        agents = [agent_id] if agent_id is not None else [a.agent_id for a in self.list_agents()]
        runs = []
        for agent in agents:
            prefix = f"{status.value}#" if status is not None else None
            rows = self._rows(f"RUNS#{agent}", index=True, prefix=prefix)
            runs.extend(self._read_all(self._parse_run, rows))
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
        self,
        run_id: str,
        generation: int,
        shard: int,
        fitness: Mapping[int, dict[str, Any]],
        seconds: float | None = None,
    ) -> None:
        """One item per shard (`SHARD#<run>#<generation>` / `<shard>`): a retried shard's
        write replaces the first, so its measured seconds count once."""
        doc: dict[str, Any] = {"fitness": {str(k): v for k, v in fitness.items()}}
        if seconds is not None:
            if not (math.isfinite(seconds) and seconds >= 0):
                raise ValidationFailedError("seconds", f"{seconds} is not a duration >= 0")
            doc["seconds"] = seconds
        self._write(
            [
                Put(
                    f"SHARD#{run_id}#{generation:06d}",
                    f"{shard:06d}",
                    json.dumps(doc, separators=(",", ":")),
                )
            ]
        )

    def get_shards(self, run_id: str, generation: int) -> list[ShardFitness]:
        """The generation's shard records by shard number; one that does not parse is skipped
        (its candidates then count as not evaluated, and tell names them)."""
        out = []
        for row in self._rows(f"SHARD#{run_id}#{generation:06d}"):
            try:
                out.append(self._read(functools.partial(_parse_shard, sk=row.sk), row))
            except CorruptStateError as exc:
                self._quarantine(row, exc.reason)
        return sorted(out, key=lambda s: s.shard)

    def get_shard_fitness(self, run_id: str, generation: int) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for shard in self.get_shards(run_id, generation):
            out.update(shard.fitness)
        return out

    def _parse_generation(self, doc: str) -> Generation:
        return Generation.model_validate(self._inline(json.loads(doc), "individuals"))

    def get_generation(self, run_id: str, number: int) -> Generation:
        generation = self._read_one(self._parse_generation, f"GEN#{run_id}", f"{number:06d}")
        if generation is None:
            raise NotFoundError("generation", f"{run_id}/{number}", field="generation")
        return generation

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
        return self._read_all(FitnessPoint.model_validate_json, self._rows(f"FIT#{run_id}"))

    # -- decisions --------------------------------------------------------------------
    def add_decision(self, decision: Decision) -> bool:
        """Record a decision; with a key, at most once (False: a retry had recorded it)."""
        pk = f"DEC#{decision.execution_id}"
        if decision.key is not None:
            return self._put_if_absent(Put(pk, f"KEY#{decision.key}", decision.model_dump_json()))
        sk = f"{_iso(decision.at)}#{uuid.uuid4().hex[:8]}"
        self._write([Put(pk, sk, decision.model_dump_json())])
        return True

    def list_decisions(self, execution_id: str) -> list[Decision]:
        rows = self._rows(f"DEC#{execution_id}")
        return sorted(self._read_all(Decision.model_validate_json, rows), key=lambda d: d.at)


def _parse_shard(doc: str, sk: str = "0") -> ShardFitness:
    """A shard's item: `{"fitness": {index: Fitness JSON}, "seconds": s}` (seconds when it
    was measured), or the first layout, the fitness object alone (no seconds)."""
    data = json.loads(doc)
    if isinstance(data, dict) and "fitness" in data:
        fitness, seconds = data["fitness"], data.get("seconds")
    else:
        fitness, seconds = data, None
    if not isinstance(fitness, dict) or not all(isinstance(v, dict) for v in fitness.values()):
        raise ValueError("a shard's fitness is an object of objects by candidate index")
    return ShardFitness(
        shard=int(sk), fitness={int(k): v for k, v in fitness.items()}, seconds=seconds
    )


def _parse_envelope(doc: str) -> Event:
    envelope = json.loads(doc)
    return _EVENTS[envelope["detail-type"]].model_validate(envelope["detail"])


# -- KPIs: chunking a batch for put_kpis -----------------------------------------------------
KPI_RETRIES = 8  # a chunk re-read and retried after a concurrent writer's conflict


class Versioned(NamedTuple):
    """A stored item's document and revision (`_get_many`)."""

    doc: str
    rev: int | None


Touching = tuple[KpiRecord, tuple[Scope, ...]]  # a record and the rollups it counts in


def _kpi_chunks(
    records: Iterable[KpiRecord], window_s: int, limit: int
) -> Iterator[list[Touching]]:
    """Consecutive chunks whose KPIs plus the rollups they touch are `limit` at most."""
    chunk: list[Touching] = []
    scopes: set[Scope] = set()
    for record in records:
        touched = scopes_of(record, window_s)
        more = sum(1 for scope in touched if scope not in scopes)
        if chunk and len(chunk) + 1 + len(scopes) + more > limit:
            yield chunk
            chunk, scopes = [], set()
        chunk.append((record, touched))
        scopes.update(touched)
    if chunk:
        yield chunk


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
