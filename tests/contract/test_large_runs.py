"""1,000-gene runs through layer 7's services on both stores: no item passes 400 KB.

Before the store kept large state by reference, a GA run item passed DynamoDB's limit
between 160 and 180 genes (5.1 MB at 4,096); SQLite accepted it, so nothing local showed it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from chimera.adapters.kv import MAX_ITEM_BYTES
from chimera.domain.genome import GeneSpec
from chimera.domain.models import Agent, AgentManifest, Strategy
from chimera.domain.optimizers import Fitness
from chimera.services import evolution, meta
from chimera.services.contracts import (
    AdaptRequest,
    AskRequest,
    StartRequest,
    StrategyChoice,
    TellRequest,
)
from chimera.services.deps import Deps

GENES = 1000


def max_item_bytes(store) -> int:
    if type(store).__name__ == "DynamoDbStore":
        sizes = []
        paginator = store.client.get_paginator("scan")
        for page in paginator.paginate(TableName=store.table):
            for item in page["Items"]:
                sizes.append(
                    sum(
                        len(name.encode()) + len(next(iter(v.values())).encode())
                        for name, v in item.items()
                    )
                )
        return max(sizes)
    row = (
        store._conn()
        .execute(
            "SELECT max(length(pk) + length(sk) + length(CAST(doc AS BLOB)) + "
            "coalesce(length(attrs), 0) + 64) FROM items"
        )
        .fetchone()
    )
    return int(row[0])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strategy", "generations"),
    # Full-covariance CMA-ES at 1,000 genes spends seconds per generation in DEAP's
    # eigendecomposition and in its 20 MB state: two generations show what we need here.
    [(Strategy.GA, 3), (Strategy.CMA_ES, 2)],
)
def test_a_1000_gene_run_keeps_every_item_small(store, strategy, generations):
    if strategy == Strategy.CMA_ES and type(store).__name__ != "DynamoDbStore":
        pytest.skip("the GA shows the same guard on SQLite; CMA-ES at 1,000 genes is slow")
    manifest = AgentManifest(
        agent_id="wide",
        suite="cartpole-v1",
        obs_len=4,
        genome=tuple(GeneSpec(name=f"g{i}", low=-1, high=1) for i in range(GENES)),
    )
    store.put_agent(Agent(manifest=manifest, module_key="wide/agent.wasm", module_digest="0" * 64))
    deps = Deps(store=store, artifacts=None, bus=None, sandbox=None)  # type: ignore[arg-type]
    choice = StrategyChoice(
        strategy=strategy,
        population_size=24,
        max_generations=generations,
        target_fitness=None,
        reason="test",
    )
    started = evolution.start(
        StartRequest(execution_id="big", agent_id="wide", choice=choice, seed=5), deps
    )
    run_id = started.run_id
    target = np.linspace(-0.5, 0.5, GENES)
    while True:
        asked = evolution.ask(AskRequest(execution_id="big", run_id=run_id), deps)
        generation = store.get_generation(run_id, asked.generation)
        for shard in asked.shards:
            store.put_shard_fitness(
                run_id,
                shard.generation,
                shard.shard,
                {
                    i.index: Fitness((-float(np.sum((np.array(i.genes) - target) ** 2)),)).to_json()
                    for i in generation.individuals[shard.start : shard.stop]
                },
            )
        told = evolution.tell(TellRequest(execution_id="big", run_id=run_id), deps)
        assert told.best_fitness is not None and math.isfinite(told.best_fitness)
        if not meta.adapt(AdaptRequest(execution_id="big", run_id=run_id), deps).proceed:
            break
    run = store.get_run(run_id)
    assert run.generation == generations and len(run.best_genes or ()) == GENES
    history = store.fitness_history(run_id)
    assert len(history) == generations and run.best_fitness >= history[0].best
    assert max_item_bytes(store) < MAX_ITEM_BYTES
