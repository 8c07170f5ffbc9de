"""The ASL we deploy, run by our local executor and by moto's interpreter: same result,
same events in every execution's history (evolution-run and each evolution-segment child)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from chimera import runtime
from moto_sfn import moto_step_functions

from chimera_local.workflows import handler_for, local_executor, state_machine_arn


def outcome(store, agent_id):
    (run,) = store.list_runs(agent_id)
    champion = store.get_genome(agent_id, run.champion_version)
    return {
        "status": run.status.value,
        "generation": run.generation,
        "decision": run.decision,
        "history": [(p.generation, p.best, p.mean) for p in store.fitness_history(run.run_id)],
        "champion": champion.genes,
    }


def run_in_moto(event: dict) -> tuple[dict, dict[str, list[str]], list[str]]:
    """evolution-run and its evolution-segment children in moto, the real handlers in process;
    the canary it starts is stopped (its bakes are real minutes there) and named."""
    with moto_step_functions(handler_for) as moto:
        described = moto.run("evolution-run", "differential", event, timeout=120)
        assert described["status"] == "SUCCEEDED", described
        histories = {"differential": moto.history(described["executionArn"])}
        for execution in moto.executions("evolution-segment"):
            assert execution["status"] == "SUCCEEDED", execution
            histories[execution["name"]] = moto.history(execution["executionArn"])
        canaries = moto.stop("canary-rollout")
    return (
        json.loads(described["output"]),
        {name: [e["type"] for e in events] for name, events in histories.items()},
        canaries,
    )


def event_counts(histories: dict[str, list[str]]) -> list[Counter[str]]:
    """Each execution's events; segments in order (their names hash the engine's ARNs)."""
    key = {name: int(name.rsplit("-", 1)[1]) if "-" in name else -1 for name in histories}
    return [Counter(histories[name]) for name in sorted(histories, key=key.__getitem__)]


@pytest.mark.slow
def test_evolution_run_agrees_with_moto(home, only_cartpole, tmp_path, monkeypatch):
    # Segments of 2 generations: the run continues across several child executions.
    event = {"execution_id": "diff", "agent_id": "cartpole-linear", "segment_generations": 2}
    validate = {"action": "validate", "execution_id": "diff", "agent_id": "cartpole-linear"}
    handler_for("discovery")({"action": "discover", "execution_id": "diff"})
    handler_for("validation")(validate)
    executor = local_executor()
    ours_out = executor.start(state_machine_arn("evolution-run"), event, "differential")
    ours = outcome(runtime.deps().store, "cartpole-linear")
    our_histories = {
        h.name: h.events for h in executor.executions.values() if h.machine != "canary-rollout"
    }
    our_canaries = [h.name for h in executor.executions.values() if h.machine == "canary-rollout"]

    monkeypatch.setenv("CHIMERA_HOME", str(tmp_path / "moto-home"))
    runtime.deps.cache_clear()
    handler_for("discovery")({"action": "discover", "execution_id": "diff"})
    handler_for("validation")(validate)
    moto_out, moto_histories, moto_canaries = run_in_moto(event)
    theirs = outcome(runtime.deps().store, "cartpole-linear")

    assert moto_out == ours_out
    assert theirs == ours
    assert moto_canaries == our_canaries and len(our_canaries) == 1  # the champion's canary
    assert event_counts(moto_histories) == event_counts(our_histories)
    assert len(our_histories) == 1 + -(-ours["generation"] // event["segment_generations"])
    assert ours["status"] == "succeeded" and ours["generation"] >= 3
