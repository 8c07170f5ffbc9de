"""The optimization cycle end to end on the embedded default (SQLite, local bus, in process)."""

from __future__ import annotations

import pytest
from chimera.domain.models import RunStatus, Verdict
from chimera.runtime import deps

from chimera_local import report
from chimera_local.workflows import local_executor, state_machine_arn

CYCLE = state_machine_arn("optimization-cycle")


def live_holdout(store, agent_id):
    alias = store.get_alias(agent_id)
    return [
        k.score
        for k in store.list_kpis(agent_id)
        if k.genome_version == alias.primary_version and ":holdout:" in k.job_id
    ][-1]


@pytest.mark.slow
def test_cycle_promotes_champions_that_generalize(home):
    out = local_executor().start(CYCLE, {"objective": "test"}, "cycle-1")
    assert sorted(i["status"] for i in out["work"]) == ["evolved", "evolved"]
    store = deps().store
    assert live_holdout(store, "cartpole-linear") >= 475  # 100 unseen episodes
    assert live_holdout(store, "breast-cancer-linear") >= 0.95  # held-out 20 %
    layers = {d.layer for d in store.list_decisions("cycle-1")}
    assert layers >= {
        "discovery",
        "planning",
        "validation",
        "meta-evolution",
        "evolution",
        "resources",
        "refinement",
    }
    # Each champion went live through its canary, which reached a verdict on live jobs.
    rep = report.collect(store, "cycle-1", "succeeded", 1.0, out["work"])
    for view in rep.runs:
        assert view.canary is not None, view.run.decision
        exp = view.canary.experiment
        assert exp.verdict == Verdict.PROMOTED and exp.candidate_version == view.live_version
        assert view.canary.points and view.canary.windows  # analyses, and live KPI windows
        assert f"canary {exp.experiment_id}" in view.run.decision
    assert report.text(rep).count(": promoted after") == 2
    page = report.to_html(rep)
    assert page.count("candidate - incumbent") == 2 and "traffic share" in page
    # A second cycle builds on the first: its runs start from the promoted genomes, and its
    # champions, which only tie them, are kept out: no canary, no new live version.
    first_live = {
        a: store.get_alias(a).primary_version for a in ("cartpole-linear", "breast-cancer-linear")
    }
    local_executor().start(CYCLE, {"objective": "test"}, "cycle-2")
    for run in store.list_runs():
        if run.execution_id == "cycle-2":
            assert run.incumbent_version == first_live[run.agent_id]
            assert run.decision.startswith("kept"), run.decision
            assert store.get_alias(run.agent_id).primary_version == first_live[run.agent_id]
    assert len(store.list_experiments()) == 2


def test_killed_run_resumes_from_stored_state(home, only_cartpole):
    executor = local_executor()
    evolution_arn = next(a for a in executor.functions if a.endswith("chimera-evolution"))
    real = executor.functions[evolution_arn]

    def dies_at_third_tell(event):
        if event.get("action") == "tell" and deps().store.get_run(event["run_id"]).generation == 2:
            raise KeyboardInterrupt  # the process is killed: no Catch, no cleanup
        return real(event)

    executor.functions[evolution_arn] = dies_at_third_tell
    with pytest.raises(KeyboardInterrupt), deps().workflows.track("killed", {}):
        executor.start(CYCLE, {"objective": "test"}, "killed")
    store = deps().store
    (run,) = store.list_runs("cartpole-linear")
    assert run.status == RunStatus.RUNNING and run.generation == 2 and run.asked_generation == 2
    asked = store.get_generation(run.run_id, 2)

    out = local_executor().start(CYCLE, {"objective": "test"}, "after")
    assert out["work"][0]["status"] == "evolved"
    (run,) = store.list_runs("cartpole-linear")
    assert run.status == RunStatus.SUCCEEDED and run.execution_id == "after"
    evaluated = store.get_generation(run.run_id, 2).individuals
    key = [(i.trial_id, i.genes, i.parents) for i in asked.individuals]
    assert [(i.trial_id, i.genes, i.parents) for i in evaluated] == key  # the same candidates
    assert all(i.objectives for i in evaluated)
    history = store.fitness_history(run.run_id)
    assert [p.generation for p in history] == list(range(run.generation))
    assert any("resumed" in d.summary for d in store.list_decisions("after"))
    assert store.get_alias("cartpole-linear").primary_version == run.champion_version


def test_failure_inside_a_run_lands_where_an_operator_sees_it(home, only_cartpole):
    executor = local_executor()
    execution_arn = next(a for a in executor.functions if a.endswith("chimera-execution"))
    real = executor.functions[execution_arn]

    def broken_holdout(event):
        if event.get("action") == "holdout":
            raise RuntimeError("disk on fire")
        return real(event)

    executor.functions[execution_arn] = broken_holdout
    out = executor.start(CYCLE, {"objective": "test"}, "broken")
    (item,) = out["work"]
    assert item["status"] == "failed"
    (run,) = deps().store.list_runs("cartpole-linear")
    assert run.status == RunStatus.FAILED and "disk on fire" in (run.decision or "")
    assert deps().store.get_alias("cartpole-linear").primary_version == 1  # nothing promoted
