"""The canary-rollout state machine, run by the local executor on the deployed ASL.

Each bake is a Wait: locally the simulated clock moves on while the traffic generator drives
live jobs through the alias (the same path as `POST /agents/{id}/jobs`), their KPIs are
ingested into the experiment's rollups, and the analysis decides. A better candidate climbs
every weight step and is promoted; a worse one is rolled back — with the alias, the events
(through the outbox) and the decisions to show it. Every canary task is also run twice.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chimera.domain.models import Alias, ExperimentStatus, Genome, Verdict
from chimera.runtime import deps
from live_agents import start_live_cartpole

AGENT = "cartpole-linear"
GOOD = (0.0, 0.5, 10.0, 2.0, 0.0)  # pushes towards the pole's lean: balances for long
BAD = (0.0, 0.0, 0.0, 0.0, -1.0)  # always pushes left: falls within a few steps


def _genome(version: int, genes: tuple[float, ...]) -> None:
    deps().store.add_genome(Genome(agent_id=AGENT, version=version, genes=genes))


def _config() -> dict:
    """The deployment's canary, with CartPole's latency guardrail loosened: a job is a whole
    episode, so a policy that balances longer takes longer (up to 500 steps against ~9)."""
    config = deps().settings.canary().model_dump(mode="json")
    config["guardrails"]["latency_p95_margin"] = 100.0
    return config


def _canary(name: str, candidate: int, incumbent: int, **config_changes: object) -> dict:
    from chimera_local.workflows import local_executor, state_machine_arn

    config = {**_config(), **config_changes}
    executor = local_executor()
    out = executor.start(
        state_machine_arn("canary-rollout"),
        {
            "agent_id": AGENT,
            "run_id": f"{name}-run",
            "candidate_version": candidate,
            "incumbent_version": incumbent,
            "config": config,
        },
        name=name,
    )
    return {"output": out, "history": executor.history(name)}


def _events(home: Path) -> list[dict]:
    path = home / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_better_candidate_is_promoted_step_by_step(home: Path, only_cartpole: Path) -> None:
    start_live_cartpole("setup")
    _genome(2, GOOD)
    _canary("canary-good", candidate=2, incumbent=1)
    store = deps().store
    exp = store.get_experiment("canary-good")
    assert exp.status == ExperimentStatus.CONCLUDED and exp.verdict == Verdict.PROMOTED, exp.reason
    assert store.get_alias(AGENT).weights == {2: 1.0}  # type: ignore[union-attr]
    points = store.list_experiment_points("canary-good")
    assert [p.step for p in points][0] == 0 and points[-1].decision == "promote"
    assert {p.weight for p in points} >= {0.2, 0.5}  # it went through the steps
    assert points[-1].lower is not None and points[-1].lower > 0  # shown better, not assumed
    kinds = [e["detail-type"] for e in _events(home)]
    assert "GenomePromoted" in kinds and "ExperimentConcluded" in kinds
    concluded = next(e for e in _events(home) if e["detail-type"] == "ExperimentConcluded")
    assert concluded["detail"]["verdict"] == "promoted"
    assert concluded["detail"]["statistics"]["primary"]["p_value"] < 0.05


def test_a_worse_candidate_is_rolled_back(home: Path, only_cartpole: Path) -> None:
    start_live_cartpole("setup")
    _genome(2, GOOD)
    store = deps().store
    alias = store.get_alias(AGENT)
    assert alias is not None
    store.set_alias(Alias(agent_id=AGENT, weights={2: 1.0}, revision=alias.revision + 1))
    _genome(3, BAD)
    _canary("canary-bad", candidate=3, incumbent=2)
    exp = store.get_experiment("canary-bad")
    assert exp.verdict == Verdict.ROLLED_BACK, exp.reason
    assert "worse" in (exp.reason or "")
    assert store.get_alias(AGENT).weights == {2: 1.0}  # type: ignore[union-attr]
    back = [e for e in _events(home) if e["detail-type"] == "GenomeRolledBack"]
    assert back and back[0]["detail"]["from_version"] == 3 and back[0]["detail"]["to_version"] == 2
    assert store.running_experiment(AGENT) is None
    decisions = [d.summary for d in store.list_decisions("canary-bad")]
    assert any("rolled-back" in s for s in decisions), decisions


def test_an_sprt_canary_rolls_back_a_candidate_without_the_planned_effect_and_promotes_one_with_it(
    home: Path, only_cartpole: Path
) -> None:
    """analysis "sprt": Wald's test of "no better" (margin 0) against "better by 50": the
    incumbent's own genes again are rolled back by acceptance of the null, not by running out
    of bakes; the balancing policy is promoted by rejection of it."""
    start_live_cartpole("setup")
    store = deps().store
    live = store.get_genome(AGENT, 1)
    _genome(2, live.genes)
    _canary("sprt-same", candidate=2, incumbent=1, analysis="sprt", margin=0.0, mde=50.0)
    same = store.get_experiment("sprt-same")
    assert same.verdict == Verdict.ROLLED_BACK, same.reason
    assert "the planned effect is not there" in (same.reason or "")
    assert same.statistics["sprt"]["decision"] == "accept"
    assert (same.statistics["sprt"]["null"], same.statistics["sprt"]["alternative"]) == (0, 50)
    assert same.bakes < same.config.max_bakes  # decided, not timed out
    assert store.get_alias(AGENT).weights == {1: 1.0}  # type: ignore[union-attr]

    _genome(3, GOOD)
    _canary("sprt-good", candidate=3, incumbent=1, analysis="sprt", margin=0.0, mde=50.0)
    good = store.get_experiment("sprt-good")
    assert good.verdict == Verdict.PROMOTED, good.reason
    assert good.statistics["sprt"]["decision"] == "reject"
    assert good.statistics["sprt"]["p_value"] < 0.05
    assert store.get_alias(AGENT).weights == {3: 1.0}  # type: ignore[union-attr]


def test_every_canary_task_can_run_twice(home: Path, only_cartpole: Path) -> None:
    """A retried task (its Lambda answered, the answer was lost) writes nothing new."""
    from chimera_local.workflows import bake, handler_for

    start_live_cartpole("setup")
    _genome(2, GOOD)
    refinement = handler_for("refinement")
    config = _config()
    start = {
        "action": "start_experiment",
        "execution_id": "twice",
        "agent_id": AGENT,
        "run_id": "r",
        "candidate_version": 2,
        "incumbent_version": 1,
        "config": config,
    }
    step = refinement(start)
    assert refinement(start) == step
    store = deps().store
    revision = store.get_experiment("twice").revision
    while step["decision"] in ("bake", "next"):
        if step["decision"] == "next":
            shift = {"action": "shift", "execution_id": "twice", "experiment_id": "twice"}
            shift["step"] = step["step"]
            step = refinement(shift)
            assert refinement(shift) == step
        bake(step["bake_s"])
        analyze = {
            "action": "analyze",
            "execution_id": "twice",
            "experiment_id": "twice",
            "step": step["step"],
            "bake": step["bake"],
        }
        step = refinement(analyze)
        assert refinement(analyze) == step
        assert store.get_experiment("twice").revision > revision
        revision = store.get_experiment("twice").revision
    assert step["decision"] == "promote", step
    conclude = {
        "action": "conclude",
        "execution_id": "twice",
        "experiment_id": "twice",
        "verdict": "promoted",
        "reason": step["reason"],
    }
    first = refinement(conclude)
    assert refinement(conclude) == first
    points = store.list_experiment_points("twice")
    assert [p.seq for p in points] == list(range(len(points)))  # one point per bake
    concluded = [e for e in _events(home) if e["detail-type"] == "ExperimentConcluded"]
    assert len(concluded) == 1


@pytest.mark.parametrize(
    ("field", "config"),
    [
        ("candidate_version", None),
        ("steps", {"steps": [0.5, 0.2]}),
        ("mde", {"analysis": "sprt", "margin": 0.0}),
        ("power", {"analysis": "sprt", "mde": 1.0, "power": 0.01}),
    ],
)
def test_a_bad_start_is_refused_naming_the_field(
    home: Path, only_cartpole: Path, field: str, config: dict | None
) -> None:
    from chimera.domain.errors import ValidationFailedError

    from chimera_local.workflows import handler_for

    start_live_cartpole("setup")
    event = {
        "action": "start_experiment",
        "execution_id": "bad",
        "agent_id": AGENT,
        "candidate_version": 2,
        "incumbent_version": 1,
    }
    if config is None:
        event[field] = -3
    else:
        event["config"] = config
    with pytest.raises(ValidationFailedError, match=field):
        handler_for("refinement")(event)
    assert deps().store.list_experiments() == []
