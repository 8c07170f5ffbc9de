"""Experiments, their alias moves and live jobs, on both stores (ports.ExperimentStore, JobStore)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from chimera.domain.errors import ConflictError, NotFoundError
from chimera.domain.events import ExperimentConcluded, GenomeRolledBack
from chimera.domain.models import (
    Alias,
    Experiment,
    ExperimentPoint,
    ExperimentStatus,
    Genome,
    LiveJob,
    Verdict,
)
from chimera.ports import Store

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def _setup(store: Store) -> Alias:
    for v in (1, 2):
        store.add_genome(Genome(agent_id="a", version=v, genes=(0.5, float(v))))
    alias = Alias(agent_id="a", weights={1: 1.0}, revision=1)
    store.set_alias(alias)
    return alias


def _experiment(eid: str = "exp-1") -> Experiment:
    return Experiment(
        experiment_id=eid,
        agent_id="a",
        candidate_version=2,
        incumbent_version=1,
        alias_revision=0,
        started_at=NOW,
        step_started_at=NOW,
    )


def _split(alias: Alias, share: float) -> Alias:
    return Alias(agent_id="a", weights={1: 1 - share, 2: share}, revision=alias.revision + 1)


def test_an_experiment_moves_the_alias_with_it_and_frees_its_agent(store: Store) -> None:
    alias = _setup(store)
    first = _split(alias, 0.05)
    exp = store.start_experiment(_experiment(), first)
    assert exp.revision == 1 and exp.alias_revision == 2
    assert store.get_alias("a") == first
    assert store.running_experiment("a") == exp
    assert store.start_experiment(_experiment(), first) == exp  # a retry: the stored one
    with pytest.raises(ConflictError, match="exp-1"):  # one running experiment per agent
        store.start_experiment(_experiment("exp-2"), _split(first, 0.05))

    second = _split(first, 0.25)
    point = ExperimentPoint(
        experiment_id="exp-1",
        seq=0,
        at=NOW,
        step=0,
        weight=0.05,
        n_control=10,
        n_treatment=1,
        p_value=0.9,
        decision="continue",
    )
    exp = store.save_experiment(exp.model_copy(update={"step": 1}), alias=second, point=point)
    assert exp.revision == 2 and exp.alias_revision == 3 and store.get_alias("a") == second
    assert store.list_experiment_points("exp-1") == [point]
    with pytest.raises(ConflictError):  # a stale copy (revision 1) writes nothing
        store.save_experiment(exp.model_copy(update={"revision": 1, "step": 2}))
    with pytest.raises(ConflictError):  # the alias moved meanwhile: nothing is written
        store.save_experiment(exp, alias=_split(first, 0.5))
    assert store.get_experiment("exp-1") == exp

    back = Alias(agent_id="a", weights={1: 1.0}, revision=second.revision + 1)
    done = exp.model_copy(
        update={"status": ExperimentStatus.CONCLUDED, "verdict": Verdict.ROLLED_BACK}
    )
    events = [
        GenomeRolledBack(agent_id="a", from_version=2, to_version=1, reason="worse"),
        ExperimentConcluded(experiment_id="exp-1", agent_id="a", verdict="rolled-back"),
    ]
    done = store.save_experiment(done, alias=back, events=events)
    assert store.running_experiment("a") is None
    assert store.get_alias("a") == back
    assert [e.experiment_id for e in store.list_experiments("a")] == ["exp-1"]
    assert store.list_experiments(status=ExperimentStatus.RUNNING) == []
    nxt = store.start_experiment(_experiment("exp-2"), _split(back, 0.05))  # agent is free
    assert store.running_experiment("a") == nxt


def test_unknown_experiment_is_named(store: Store) -> None:
    with pytest.raises(NotFoundError, match="nope") as err:
        store.get_experiment("nope")
    assert err.value.field == "experiment_id"


def test_set_alias_is_conditional(store: Store) -> None:
    alias = _setup(store)
    with pytest.raises(ConflictError):
        store.set_alias(Alias(agent_id="a", weights={2: 1.0}, revision=alias.revision))
    store.set_alias(Alias(agent_id="a", weights={2: 1.0}, revision=alias.revision + 1))
    assert store.get_alias("a").weights == {2: 1.0}  # type: ignore[union-attr]


def test_a_job_is_stored_once(store: Store) -> None:
    job = LiveJob(
        agent_id="a",
        job_id="j1",
        suite="s",
        genome_version=1,
        output=0.3,
        outcome="awaiting-label",
        latency_ms=1.0,
        fuel=5,
        at=NOW,
    )
    assert store.put_job(job) == job
    again = job.model_copy(update={"genome_version": 2, "output": 0.9})
    assert store.put_job(again) == job  # the first answer stands
    assert store.find_job("a", "j1") == job
    assert store.find_job("a", "j2") is None
