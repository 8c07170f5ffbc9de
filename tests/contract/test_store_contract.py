"""One contract, both stores: SQLite (embedded default) and DynamoDB (moto)."""

from __future__ import annotations

import threading

import pytest
from chimera.adapters.kv import ABSENT, Put
from chimera.domain.errors import ConflictError, NotFoundError, ValidationFailedError
from chimera.domain.models import (
    Agent,
    AgentManifest,
    Alias,
    Decision,
    EvolutionRun,
    FitnessPoint,
    Generation,
    GeneSpec,
    Genome,
    Individual,
    KpiRecord,
    Strategy,
    measured_seconds,
)

MANIFEST = AgentManifest(
    agent_id="demo",
    suite="cartpole-v1",
    obs_len=4,
    genome=(GeneSpec(name="w0", low=-1, high=1), GeneSpec(name="w1", low=-1, high=1)),
)


def agent() -> Agent:
    return Agent(manifest=MANIFEST, module_key="demo/agent.wasm", module_digest="0" * 64)


def run(run_id: str = "r1") -> EvolutionRun:
    return EvolutionRun(
        run_id=run_id,
        agent_id="demo",
        suite="cartpole-v1",
        strategy=Strategy.GA,
        seed=1,
        population_size=4,
        max_generations=3,
        optimizer_state={"k": [1, 2]},
    )


def test_agent_round_trip(store):
    a = agent()
    store.put_agent(a)
    assert store.get_agent("demo") == a
    assert [a.agent_id for a in store.list_agents()] == ["demo"]
    with pytest.raises(NotFoundError, match="agent 'nope'"):
        store.get_agent("nope")


def test_genome_versions_are_immutable(store):
    g1 = Genome(agent_id="demo", version=1, genes=(0.1, 0.2))
    store.add_genome(g1)
    with pytest.raises(ConflictError):
        store.add_genome(Genome(agent_id="demo", version=1, genes=(0.9, 0.9)))
    assert store.get_genome("demo", 1) == g1
    assert store.latest_genome_version("demo") == 1
    assert store.latest_genome_version("other") == 0


def test_promotion_is_conditional(store):
    first = Genome(agent_id="demo", version=1, genes=(0.1, 0.2))
    store.promote(first, Alias(agent_id="demo", weights={1: 1.0}, revision=1), None)
    # Two promoters both read revision 1; only one may win.
    a = Genome(agent_id="demo", version=2, genes=(0.3, 0.3))
    b = Genome(agent_id="demo", version=3, genes=(0.4, 0.4))
    store.promote(a, Alias(agent_id="demo", weights={2: 1.0}, revision=2), 1)
    with pytest.raises(ConflictError):
        store.promote(b, Alias(agent_id="demo", weights={3: 1.0}, revision=2), 1)
    alias = store.get_alias("demo")
    assert alias is not None and alias.weights == {2: 1.0}
    # The losing transaction wrote nothing, not even its genome.
    with pytest.raises(NotFoundError):
        store.get_genome("demo", 3)


def test_concurrent_promotions_one_winner(store):
    store.promote(
        Genome(agent_id="demo", version=1, genes=(0.0, 0.0)),
        Alias(agent_id="demo", weights={1: 1.0}, revision=1),
        None,
    )
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def promoter(version: int) -> None:
        barrier.wait()
        try:
            store.promote(
                Genome(agent_id="demo", version=version, genes=(0.5, 0.5)),
                Alias(agent_id="demo", weights={version: 1.0}, revision=2),
                1,
            )
            outcomes.append("won")
        except ConflictError:
            outcomes.append("lost")

    if type(store).__name__ == "DynamoDbStore":
        # moto's backend is not thread-safe: the same race, one after the other.
        barrier = threading.Barrier(1)
        promoter(2)
        promoter(3)
    else:
        threads = [threading.Thread(target=promoter, args=(v,)) for v in (2, 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(outcomes) == ["lost", "won"]


def test_kpis_are_idempotent(store):
    rec = KpiRecord(
        agent_id="demo",
        genome_version=1,
        job_id="j1",
        suite="s",
        success=True,
        score=1.0,
        latency_ms=2.0,
        fuel=10,
    )
    assert store.put_kpis([rec, rec]) == 1
    assert store.put_kpis([rec]) == 0
    assert store.list_kpis("demo") == [rec]


def test_evolution_state_round_trip(store):
    r = run()
    store.create_run(r)
    with pytest.raises(ConflictError):
        store.create_run(r)
    gen = Generation(run_id="r1", number=0, individuals=(Individual(index=0, genes=(0.1, 0.1)),))
    store.save_asked(store.get_run("r1").model_copy(update={"asked_generation": 0}), gen)
    assert store.get_run("r1").asked_generation == 0
    store.put_shard_fitness("r1", 0, 0, {0: {"objectives": [3.5], "constraints": []}})
    store.put_shard_fitness("r1", 0, 1, {1: {"objectives": [4.5], "constraints": [-1.0]}})
    assert store.get_shard_fitness("r1", 0) == {
        0: {"objectives": [3.5], "constraints": []},
        1: {"objectives": [4.5], "constraints": [-1.0]},
    }
    asked = store.get_run("r1")
    told = asked.model_copy(update={"generation": 1, "asked_generation": None})
    point = FitnessPoint(run_id="r1", generation=0, best=4.5, mean=4.0, std=0.5, evaluations=2)
    store.save_told(told, gen.model_copy(update={"evaluated": True}), point)
    assert store.get_run("r1").generation == 1
    assert store.get_generation("r1", 0).evaluated
    assert store.fitness_history("r1") == [point]
    assert [x.run_id for x in store.list_runs("demo")] == ["r1"]


def test_shard_records_keep_their_measured_seconds_once_and_old_ones_load(store):
    store.put_shard_fitness("r1", 3, 0, {0: {"objectives": [1.0]}}, seconds=0.5)
    store.put_shard_fitness("r1", 3, 0, {0: {"objectives": [1.0]}}, seconds=0.25)  # a retry
    store.put_shard_fitness("r1", 3, 1, {1: {"objectives": [2.0]}, 2: {"objectives": [3.0]}})
    # A shard stored before shards were timed: the fitness object alone, as the first layout.
    store._write([Put("SHARD#r1#000003", "000002", '{"3":{"objectives":[4.0]}}')])
    shards = store.get_shards("r1", 3)
    assert [(s.shard, sorted(s.fitness), s.seconds) for s in shards] == [
        (0, [0], 0.25),  # the retry replaced the first write: its seconds count once
        (1, [1, 2], None),
        (2, [3], None),
    ]
    assert measured_seconds(shards) == (0.25, 1)
    assert sorted(store.get_shard_fitness("r1", 3)) == [0, 1, 2, 3]
    with pytest.raises(ValidationFailedError) as err:
        store.put_shard_fitness("r1", 3, 4, {4: {"objectives": [1.0]}}, seconds=-1.0)
    assert err.value.field == "seconds"
    # A fitness point told before (no seconds) and after (its generation's measured ones).
    store.create_run(run())
    points = [
        FitnessPoint(run_id="r1", generation=0, best=1, mean=1, std=0, evaluations=2),
        FitnessPoint(
            run_id="r1",
            generation=1,
            best=1,
            mean=1,
            std=0,
            evaluations=2,
            evaluation_seconds=0.25,
            measured_evaluations=1,
        ),
    ]
    old = '{"run_id":"r1","generation":0,"best":1.0,"mean":1.0,"std":0.0,"evaluations":2}'
    store._write([Put("FIT#r1", "000000", old)])  # as stored before points had seconds
    gen = Generation(run_id="r1", number=1, individuals=())
    store.save_told(store.get_run("r1"), gen, points[1])
    assert store.fitness_history("r1") == points


def test_failed_transaction_writes_nothing(store):
    store.create_run(run("r2"))
    before = store.get_run("r2")
    gen = Generation(run_id="r2", number=0, individuals=(Individual(index=0, genes=(0.0, 0.0)),))
    # A batch whose last put fails its condition: the first must not land either.
    with pytest.raises(ConflictError):
        store._write(
            [
                Put("GEN#r2", "000000", gen.model_dump_json()),
                Put("RUN#r2", "RUN", before.model_dump_json(), condition=ABSENT),
            ]
        )
    with pytest.raises(NotFoundError):
        store.get_generation("r2", 0)
    assert store.get_run("r2") == before


def test_decisions_are_ordered(store):
    for layer in ("discovery", "planning", "validation"):
        store.add_decision(Decision(execution_id="e1", layer=layer, summary=layer))
    assert [d.layer for d in store.list_decisions("e1")] == ["discovery", "planning", "validation"]
