"""Poisoned state, on both stores: items no reader can parse, written into the table by hand
(as an older version, an operator or a bug would), and writes that would store NaN or
infinity. List reads skip and note such an item, single reads name it, nothing else is lost.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from chimera.adapters.kv import QUARANTINE
from chimera.domain.budget import LedgerEntry
from chimera.domain.errors import CorruptStateError, ValidationFailedError
from chimera.domain.events import AnomalyDetected
from chimera.domain.models import (
    Decision,
    FitnessPoint,
    Generation,
    Individual,
    KpiRecord,
)
from test_store_contract import run

from chimera_local.sqlite_store import SqliteStore

T0 = datetime(2026, 11, 5, tzinfo=UTC)


def hand_write(
    store: Any, pk: str, sk: str, doc: str | bytes | None, gsi1: tuple[str, str] | None = None
) -> None:
    """Write an item's doc (None: no doc attribute) the way a person at the table would."""
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            conn.execute(
                "INSERT INTO items (pk, sk, doc, gsi1pk, gsi1sk) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (pk, sk) DO UPDATE SET doc = excluded.doc",
                (pk, sk, doc, *(gsi1 or (None, None))),
            )
        return
    names, values, sets = {"#d": "doc"}, {}, []
    if doc is not None:
        sets.append("#d = :d")
        values[":d"] = {"S": doc if isinstance(doc, str) else doc.decode("latin-1")}
    for key, value in zip(("pk", "sk"), gsi1 or (), strict=False):
        names[f"#g{key}"], values[f":g{key}"] = f"gsi1{key}", {"S": value}
        sets.append(f"#g{key} = :g{key}")
    expression = ("SET " + ", ".join(sets)) if sets else ""
    if doc is None:
        expression += " REMOVE #d"
    store.client.update_item(
        TableName=store.table,
        Key={"pk": {"S": pk}, "sk": {"S": sk}},
        UpdateExpression=expression.strip(),
        ExpressionAttributeNames=names,
        **({"ExpressionAttributeValues": values} if values else {}),
    )


def stored_doc(store: Any, pk: str, sk: str) -> dict[str, Any]:
    return json.loads(store._get(pk, sk))


def kpi(job: str, version: int = 1) -> KpiRecord:
    return KpiRecord(
        agent_id="demo",
        genome_version=version,
        job_id=job,
        suite="cartpole-v1",
        success=True,
        score=1.0,
        latency_ms=1.0,
        fuel=1,
    )


def quarantined(store: Any) -> dict[str, str]:
    return {f"{q.pk}/{q.sk}": q.reason for q in store.list_quarantined()}


# -- the case: a KPI whose latency was stored as null -----------------------------------
def test_a_kpi_stored_with_null_latency_is_skipped_and_named(store):
    store.put_kpis([kpi("j1"), kpi("j2"), kpi("j3")])
    doc = stored_doc(store, "KPI#demo", "JOB#j2") | {"latency_ms": None}
    hand_write(store, "KPI#demo", "JOB#j2", json.dumps(doc))

    assert [k.job_id for k in store.list_kpis("demo")] == ["j1", "j3"]
    assert [k.job_id for k in store.list_kpis("demo", genome_version=1)] == ["j1", "j3"]
    with pytest.raises(CorruptStateError) as err:
        store.get_kpi("demo", "j2")
    assert err.value.what == "KPI#demo/JOB#j2" and "latency_ms" in err.value.reason
    assert "latency_ms" in quarantined(store)["KPI#demo/JOB#j2"]
    # Still a KPI that exists: a retried ingestion of j2 stays a no-op, j4 is new.
    assert store.put_kpis([kpi("j2"), kpi("j4")]) == 1

    hand_write(store, "KPI#demo", "JOB#j2", json.dumps(doc | {"latency_ms": 2.0}))  # repaired
    assert [k.job_id for k in store.list_kpis("demo")] == ["j1", "j2", "j3", "j4"]
    assert quarantined(store) == {}


# -- every kind of item, each poisoned its own way ---------------------------------------------
# Each returns (the item's key, what the reason says, its single read or None for list-only kinds).
def _runs(store: Any) -> tuple[str, str, Any]:
    store.create_run(run("r1"))
    store.create_run(run("r2").model_copy(update={"agent_id": "other"}))
    doc = stored_doc(store, "RUN#r1", "RUN")
    del doc["suite"]  # a run document missing a field
    hand_write(store, "RUN#r1", "RUN", json.dumps(doc))
    return "RUN#r1/RUN", "suite", lambda: store.get_run("r1")


def _agents(store: Any) -> tuple[str, str, Any]:
    hand_write(store, "AGENTS", "ghost", '{"manifest": {"agent_id": "ghost", "sui')  # truncated
    return "AGENTS/ghost", "not valid JSON", lambda: store.get_agent("ghost")


def _genomes(store: Any) -> tuple[str, str, Any]:
    genome = {"agent_id": "demo", "version": 1, "genes": [0.5, float("nan")]}
    hand_write(store, "GENOMES#demo", "00000001", json.dumps(genome))  # json.dumps writes NaN
    return "GENOMES#demo/00000001", "genes.1", lambda: store.get_genome("demo", 1)


def _aliases(store: Any) -> tuple[str, str, Any]:
    alias = {"agent_id": "demo", "weights": {"1": 0.5, "2": 0.2}, "revision": 1}
    hand_write(store, "ALIASES#demo", "live", json.dumps(alias))
    return "ALIASES#demo/live", "weights", lambda: store.get_alias("demo")


def _fitness(store: Any) -> tuple[str, str, Any]:
    point = FitnessPoint(run_id="r1", generation=0, best=1, mean=1, std=0, evaluations=1)
    store.create_run(run("r1"))
    generation = Generation(run_id="r1", number=0, individuals=(Individual(index=0, genes=(0.1,)),))
    store.save_told(store.get_run("r1"), generation, point)
    bad = point.model_dump(mode="json") | {"generation": 1, "best": None}
    hand_write(store, "FIT#r1", "000001", json.dumps(bad))
    return "FIT#r1/000001", "best", None


def _decisions(store: Any) -> tuple[str, str, Any]:
    store.add_decision(Decision(execution_id="e1", layer="planning", summary="fine"))
    hand_write(store, "DEC#e1", "2026-11-21T00:00:00+00:00#deadbeef", '{"execution_id": "e1", "la')
    return "DEC#e1/2026-11-21T00:00:00+00:00#deadbeef", "not valid JSON", None


def _ledger(store: Any) -> tuple[str, str, Any]:
    good = LedgerEntry(
        entry_id="c1",
        run_id="r1",
        execution_id="e1",
        period="2026-11",
        placement="lambda",
        estimated_usd=1,
        reserved_usd=2,
        reserved_at=T0,
        expires_at=T0 + timedelta(hours=1),
    )
    store.reserve(good, 10)
    bad = good.model_dump(mode="json", exclude={"revision"}) | {
        "entry_id": "c2",
        "estimated_usd": None,
    }
    hand_write(store, "LEDGER#r1", "c2", json.dumps(bad), ("LEDGER#2026-11", "x#c2"))
    return "LEDGER#r1/c2", "estimated_usd", lambda: store.get_ledger_entry("r1", "c2")


def _event() -> AnomalyDetected:
    return AnomalyDetected(agent_id="demo", kpi="latency_ms", value=12.5, detail="fine")


def _outbox(store: Any) -> tuple[str, str, Any]:
    envelope = {"id": "x1", "source": "chimera", "detail-type": "NoSuchEvent", "detail": {}}
    hand_write(store, "OUTBOX#x1", "EVENT", json.dumps(envelope), ("OUTBOX", "0#x1"))
    store.create_run(run("r1"))
    store.save_run(store.get_run("r1"), events=[_event()])
    return "OUTBOX#x1/EVENT", "NoSuchEvent", None


def _shards(store: Any) -> tuple[str, str, Any]:
    store.put_shard_fitness("r1", 0, 0, {0: {"objectives": [1.0]}})
    hand_write(store, "SHARD#r1#000000", "000001", "[1, 2, 3]")
    return "SHARD#r1#000000/000001", "object", None


POISONS: dict[str, tuple[Any, Any, Any]] = {
    "run missing a field": (
        _runs,
        lambda s: [r.run_id for a in ("demo", "other") for r in s.list_runs(a)],
        ["r2"],
    ),
    "truncated agent": (_agents, lambda s: [a.agent_id for a in s.list_agents()], []),
    "genome holding NaN": (_genomes, lambda s: [g.version for g in s.list_genomes("demo")], []),
    "fitness point with null best": (
        _fitness,
        lambda s: [p.generation for p in s.fitness_history("r1")],
        [0],
    ),
    "truncated decision": (
        _decisions,
        lambda s: [d.summary for d in s.list_decisions("e1")],
        ["fine"],
    ),
    "ledger entry without an amount": (
        _ledger,
        lambda s: [e.entry_id for e in s.list_ledger(period="2026-11")],
        ["c1"],
    ),
    "outbox event of no known type": (
        _outbox,
        lambda s: [type(e).__name__ for _, e in s.pending_events()],
        ["AnomalyDetected"],
    ),
    "shard fitness that is a list": (_shards, lambda s: sorted(s.get_shard_fitness("r1", 0)), [0]),
}


@pytest.mark.parametrize("kind", POISONS)
def test_each_kind_of_poisoned_item_is_skipped_by_lists_and_named_by_reads(store, kind):
    poison, listed, expected = POISONS[kind]
    key, why, single_read = poison(store)
    assert listed(store) == expected  # the good items beside it are all there
    assert why in quarantined(store)[key]
    if single_read is not None:
        with pytest.raises(CorruptStateError) as err:
            single_read()
        assert err.value.what == key and why in err.value.reason


def test_a_poisoned_alias_is_named_by_its_read(store):
    key, why, single_read = _aliases(store)
    with pytest.raises(CorruptStateError) as err:
        single_read()
    assert err.value.what == key and why in err.value.reason


def test_a_genome_that_does_not_parse_still_counts_as_a_version(store):
    _genomes(store)
    assert store.latest_genome_version("demo") == 1  # the next genome is v2, not a second v1


def test_a_run_whose_state_blob_is_gone_names_the_run(store, tmp_path):
    big = run("big").model_copy(update={"optimizer_state": {"x": list(range(20_000))}})
    store.create_run(big)
    ref = stored_doc(store, "RUN#big", "RUN")["optimizer_state_ref"]
    if isinstance(store, SqliteStore):
        (tmp_path / "blobs" / ref["key"]).unlink()
    else:
        store.blobs.client.delete_object(
            Bucket=store.blobs.bucket, Key=store.blobs.prefix + ref["key"]
        )
    with pytest.raises(CorruptStateError) as err:
        store.get_run("big")
    assert err.value.what == "RUN#big/RUN" and ref["key"] in err.value.reason
    assert store.list_runs("demo") == []


def test_a_document_that_is_not_text_is_named(store):
    store.put_kpis([kpi("j1")])
    if isinstance(store, SqliteStore):
        hand_write(
            store, "KPI#demo", "JOB#j2", b"\xff\xfe{garbage", ("KPI#demo#v00000001", "9999#j2")
        )
        why = "UTF-8"
    else:  # an item someone put without a doc attribute
        hand_write(store, "KPI#demo", "JOB#j2", None, ("KPI#demo#v00000001", "9999#j2"))
        why = "no string attribute 'doc'"
    assert [k.job_id for k in store.list_kpis("demo")] == ["j1"]
    assert [k.job_id for k in store.list_kpis("demo", genome_version=1)] == ["j1"]
    with pytest.raises(CorruptStateError, match=why):
        store.get_kpi("demo", "j2")


def test_quarantine_notes_are_items_of_their_own_and_never_fail_a_read(store):
    _agents(store)
    for _ in range(3):
        assert store.list_agents() == []
    notes = store.list_quarantined()
    assert [(q.pk, q.sk) for q in notes] == [("AGENTS", "ghost")]
    assert notes[0].head.startswith('{"manifest"')
    assert len(store._rows(QUARANTINE)) == 1  # noted once, not once per read
    hand_write(store, "AGENTS", "ghost", "{}")
    assert store.list_quarantined()[0].reason != notes[0].reason  # re-checked: the new reason


# -- writes: no NaN or infinity reaches a stored document ---------------------------------------
def test_writes_refuse_non_finite_numbers_naming_the_field(store):
    store.create_run(run("r1"))
    stored = store.get_run("r1")
    bad_kpi = KpiRecord.model_construct(**(kpi("j1").model_dump() | {"latency_ms": float("inf")}))
    with pytest.raises(ValidationFailedError) as err:
        store.put_kpis([bad_kpi])
    assert err.value.field == "latency_ms" and "KPI#demo/JOB#j1" in str(err.value)
    assert store.list_kpis("demo") == []

    cases = [
        (
            lambda: store.save_run(stored.model_copy(update={"best_fitness": float("nan")})),
            "best_fitness",
        ),
        (
            lambda: store.save_run(
                stored.model_copy(update={"optimizer_state": {"sigma": float("-inf")}})
            ),
            "optimizer_state.sigma",
        ),
        (
            lambda: store.save_run(
                stored, events=[_event().model_copy(update={"value": float("inf")})]
            ),
            "detail.value",
        ),
        (
            lambda: store.add_decision(
                Decision.model_construct(
                    execution_id="e",
                    layer="l",
                    summary="s",
                    detail={"x": [1, float("nan")]},
                    key=None,
                    at=stored.started_at,
                )
            ),
            "detail.x.1",
        ),
        (lambda: store.add_to_counter("budget", float("nan")), "delta"),
        (
            lambda: store.put_shard_fitness("r1", 0, 0, {0: {"objectives": [float("inf")]}}),
            "fitness.0.objectives.0",
        ),
    ]
    for write, field in cases:
        with pytest.raises(ValidationFailedError) as err:
            write()
        assert err.value.field == field, (field, err.value)
    assert store.get_run("r1") == stored  # nothing of any refused write was stored
    assert store.pending_events() == [] and store.list_decisions("e") == []
    assert store.counter("budget") == 0 and store.get_shard_fitness("r1", 0) == {}
