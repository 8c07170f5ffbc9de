"""The experiment routes as API Gateway calls them: REST v1 proxy events from tests/events/
into the API handler, over canaries run on the live CartPole agent the way canary-rollout runs
them (tests/functional/live_experiments.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from chimera.domain.models import ExperimentStatus, Verdict
from chimera.runtime import deps
from live_agents import start_live_cartpole
from live_experiments import (
    AGENT,
    analyze,
    events,
    live_with_candidate,
    run_canary,
    serve_only,
    start_canary,
)

from chimera_local.workflows import LambdaContext, handler_for
from functions.api import handler as api

EVENTS = Path(__file__).resolve().parents[1] / "events"
CONTEXT = LambdaContext("chimera-api", "arn:aws:lambda:us-east-1:123456789012:function:chimera-api")
STOP_REASON = "the on-call engineer saw error spikes on v2"  # api_stop_experiment.json's


def call(name: str, **override: Any) -> tuple[int, Any]:
    event = json.loads((EVENTS / f"api_{name}.json").read_text())
    event.update(override)
    response = api.lambda_handler(event, CONTEXT)
    assert isinstance(response["statusCode"], int) and isinstance(response["body"], str)
    return response["statusCode"], json.loads(response["body"])


def body(**fields: Any) -> str:
    return json.dumps(fields)


def query(**params: str) -> dict[str, Any]:
    """A query string as API Gateway puts it in the event (single- and multi-value)."""
    return {
        "queryStringParameters": params or None,
        "multiValueQueryStringParameters": {k: [v] for k, v in params.items()} or None,
    }


@pytest.fixture
def running(home: Path, only_cartpole: Path) -> dict[str, Any]:
    """A canary of v2 against v1, started and analysed once: running, with one point."""
    live_with_candidate()
    return start_canary("canary-running")


# -- GET /experiments, GET /experiments/{id} ----------------------------------------------------
def test_a_promoted_canary_is_listed_and_shown_with_its_statistic_over_time(
    home: Path, only_cartpole: Path
) -> None:
    live_with_candidate()
    run_canary("canary-good")
    store = deps().store
    exp = store.get_experiment("canary-good")
    assert exp.verdict == Verdict.PROMOTED, exp.reason

    status, listed = call("list_experiments")
    assert status == 200, listed
    (row,) = listed
    assert row["experiment_id"] == "canary-good" and row["agent_id"] == AGENT
    assert (row["candidate_version"], row["incumbent_version"]) == (2, 1)
    assert (row["status"], row["verdict"]) == ("concluded", "promoted")
    assert row["run_id"] == "canary-good-run" and row["concluded_at"] is not None
    assert row["weight"] == exp.weight and row["reason"] == exp.reason
    assert "points" not in row

    status, shown = call("get_experiment")
    assert status == 200, shown
    assert {k: shown[k] for k in row} == row
    stored = store.list_experiment_points("canary-good")
    assert len(stored) >= 3
    assert [p["seq"] for p in shown["points"]] == list(range(len(stored)))
    for point, want in zip(shown["points"], stored, strict=True):
        assert point["decision"] == want.decision and point["weight"] == want.weight
        assert (point["n_control"], point["n_treatment"]) == (want.n_control, want.n_treatment)
        assert point["p_value"] == want.p_value and point["lower"] == want.lower
    weights = [p["weight"] for p in shown["points"]]
    assert weights == sorted(weights) and len(set(weights)) >= 2  # it climbed the steps
    last = shown["points"][-1]
    assert last["decision"] == "promote" and last["lower"] > 0  # shown better, not assumed
    assert shown["statistics"]["primary"]["p_value"] == exp.statistics["primary"]["p_value"]

    for status_filter, expected in (("concluded", ["canary-good"]), ("running", [])):
        status, listed = call("list_experiments", **query(agent_id=AGENT, status=status_filter))
        assert status == 200 and [e["experiment_id"] for e in listed] == expected, listed


def test_experiments_are_listed_newest_first_and_by_status(running: dict[str, Any]) -> None:
    store = deps().store
    operator_stop = call("stop_experiment")
    assert operator_stop[0] == 200, operator_stop
    start_canary("canary-second")
    status, listed = call("list_experiments", **query())
    assert status == 200
    assert [(e["experiment_id"], e["status"]) for e in listed] == [
        ("canary-second", "running"),
        ("canary-running", "stopped"),
    ]
    status, only = call("list_experiments", **query(status="stopped"))
    assert status == 200 and [e["experiment_id"] for e in only] == ["canary-running"]
    assert store.running_experiment(AGENT).experiment_id == "canary-second"  # type: ignore[union-attr]


def test_bad_queries_and_ids_are_400_or_404_naming_the_field(home: Path, only_cartpole) -> None:
    start_live_cartpole("setup")
    status, answer = call("list_experiments_bad_status")
    assert status == 400 and answer["field"] == "status", answer
    status, answer = call("list_experiments", **query(agent_id="Not An Agent"))
    assert status == 400 and answer["field"] == "agent_id", answer
    status, answer = call("list_experiments", **query(agent_id="nobody"))
    assert status == 404 and answer["field"] == "agent_id" and "nobody" in answer["message"]
    status, answer = call("get_experiment_malformed_id")
    assert status == 400 and answer["field"] == "id", answer
    long_id = "e" * 161
    status, answer = call(
        "get_experiment", path=f"/experiments/{long_id}", pathParameters={"id": long_id}
    )
    assert status == 400 and answer["field"] == "id", answer
    status, answer = call("get_experiment_unknown")
    assert status == 404 and answer["error"] == "NotFoundError" and answer["field"] == "id"
    assert "no-such-experiment" in answer["message"]
    status, answer = call("list_experiments")
    assert (status, answer) == (200, [])


# -- POST /experiments/{id}/stop -------------------------------------------------------------
def test_stop_rolls_the_running_canary_back_once(home: Path, running: dict[str, Any]) -> None:
    store = deps().store
    assert store.get_alias(AGENT).weights == {2: 0.2, 1: 0.8}  # type: ignore[union-attr]
    status, shown = call(
        "get_experiment",
        path="/experiments/canary-running",
        pathParameters={"id": "canary-running"},
    )
    assert status == 200 and shown["status"] == "running" and len(shown["points"]) == 1

    status, stopped = call("stop_experiment")
    assert status == 200, stopped
    assert (stopped["status"], stopped["verdict"]) == ("stopped", "rolled-back")
    assert stopped["reason"] == STOP_REASON and stopped["concluded_at"] is not None
    assert store.get_alias(AGENT).weights == {1: 1.0}  # type: ignore[union-attr]
    assert store.running_experiment(AGENT) is None
    (back,) = events(home, "GenomeRolledBack")
    assert back["detail"]["from_version"] == 2 and back["detail"]["to_version"] == 1
    assert back["detail"]["experiment_id"] == "canary-running"
    (concluded,) = events(home, "ExperimentConcluded")
    assert concluded["detail"]["verdict"] == "rolled-back"
    assert concluded["detail"]["reason"] == STOP_REASON
    decisions = [d.summary for d in store.list_decisions("canary-running")]
    assert any("stopped" in s and STOP_REASON in s for s in decisions), decisions

    # A retried request (its answer was lost): the same answer, nothing written again.
    assert call("stop_experiment") == (200, stopped)
    assert len(events(home, "GenomeRolledBack")) == 1
    # Another reason: it was already stopped for the first, say so.
    status, conflict = call("stop_experiment", body=body(reason="someone else"))
    assert status == 409 and conflict["error"] == "ConflictError", conflict
    assert "stopped" in conflict["message"]
    # The canary's execution, at its next Analyze, finds it stopped and writes nothing.
    answer = analyze("canary-running", {"step": 0, "bake": 1})
    assert answer["decision"] == "stopped"
    assert len(store.list_experiment_points("canary-running")) == 1
    assert store.get_alias(AGENT).weights == {1: 1.0}  # type: ignore[union-attr]


def test_stopping_a_concluded_canary_is_a_conflict(home: Path, running: dict[str, Any]) -> None:
    handler_for("refinement")(
        {
            "action": "conclude",
            "execution_id": "canary-running",
            "experiment_id": "canary-running",
            "verdict": "promoted",
            "reason": "no worse",
        }
    )
    store = deps().store
    before = store.get_experiment("canary-running")
    status, answer = call("stop_experiment")
    assert status == 409 and answer["error"] == "ConflictError", answer
    assert "concluded" in answer["message"] and "promoted" in answer["message"]
    assert store.get_experiment("canary-running") == before
    assert store.get_alias(AGENT).weights == {2: 1.0}  # type: ignore[union-attr]
    assert events(home, "GenomeRolledBack") == []


def test_a_bad_stop_is_refused_and_changes_nothing(home: Path, running: dict[str, Any]) -> None:
    store = deps().store
    status, answer = call("stop_experiment_bad_body")
    assert status == 400 and answer["field"] == "reason", answer
    for bad, field in (
        ("{}", "reason"),
        (body(reason="r" * 1001), "reason"),
        (body(reason="x", force=True), "force"),
        ("not json", "body"),
    ):
        status, answer = call("stop_experiment", body=bad)
        assert status == 400 and answer["field"] == field, (bad[:40], answer)
    status, answer = call(
        "stop_experiment",
        path="/experiments/no-such-experiment/stop",
        pathParameters={"id": "no-such-experiment"},
    )
    assert status == 404 and answer["field"] == "id", answer
    assert store.get_experiment("canary-running").status == ExperimentStatus.RUNNING
    assert store.get_alias(AGENT).weights == {2: 0.2, 1: 0.8}  # type: ignore[union-attr]


# -- POST /agents/{id}/rollback ---------------------------------------------------------------
def test_rollback_to_a_version_moves_the_alias_once(home: Path, only_cartpole: Path) -> None:
    live_with_candidate()
    serve_only(2)
    store = deps().store
    status, answer = call("rollback")
    assert status == 200, answer
    assert (answer["from_version"], answer["to_version"]) == (2, 1)
    assert answer["changed"] and answer["live_version"] == 1
    assert answer["weights"] == {"1": 1.0} and answer["stopped_experiment"] is None
    alias = store.get_alias(AGENT)
    assert alias is not None and alias.weights == {1: 1.0}
    assert answer["alias_revision"] == alias.revision
    (back,) = events(home, "GenomeRolledBack")
    assert (back["detail"]["from_version"], back["detail"]["to_version"]) == (2, 1)
    assert back["detail"]["reason"] == "v2 answers slower for our largest client"
    (decision,) = store.list_decisions(f"operator:{AGENT}")
    assert "rolled back from v2 to v1" in decision.summary
    # Again: the alias already serves v1 only; nothing moves, no second event.
    status, again = call("rollback")
    assert status == 200 and not again["changed"] and again["alias_revision"] == alias.revision
    assert len(events(home, "GenomeRolledBack")) == 1


def test_rollback_without_a_version_goes_to_the_parent(home: Path, only_cartpole: Path) -> None:
    live_with_candidate()
    status, answer = call("rollback", body=body(reason="v1 has no parent"))
    assert status == 400 and answer["field"] == "to_version", answer
    assert "no earlier version" in answer["message"]
    serve_only(2)
    status, answer = call("rollback", body=body(reason="back to where v2 came from"))
    assert status == 200, answer
    assert (answer["from_version"], answer["to_version"], answer["live_version"]) == (2, 1, 1)


def test_rollback_during_a_canary_stops_it_first(home: Path, running: dict[str, Any]) -> None:
    store = deps().store
    status, answer = call("rollback", body=body(reason="pager went off"))
    assert status == 200, answer
    stopped = answer["stopped_experiment"]
    assert stopped["experiment_id"] == "canary-running" and stopped["status"] == "stopped"
    assert stopped["reason"] == "rolled back: pager went off"
    assert (answer["from_version"], answer["to_version"]) == (2, 1)
    assert answer["weights"] == {"1": 1.0} and answer["changed"]
    assert store.get_alias(AGENT).weights == {1: 1.0}  # type: ignore[union-attr]
    assert store.running_experiment(AGENT) is None
    (back,) = events(home, "GenomeRolledBack")
    assert back["detail"]["experiment_id"] == "canary-running"


def test_a_bad_rollback_is_refused_and_moves_nothing(home: Path, only_cartpole: Path) -> None:
    live_with_candidate()
    serve_only(2)
    store = deps().store
    revision = store.get_alias(AGENT).revision  # type: ignore[union-attr]
    status, answer = call("rollback_bad_body")
    assert status == 400 and answer["field"] == "to_version", answer
    for bad, field in (
        (body(to_version=0, reason="x"), "to_version"),
        (body(to_version=10**8, reason="x"), "to_version"),
        (body(to_version=1), "reason"),
        (body(to_version=1, reason=""), "reason"),
        (body(to_version=1, reason="x", now=True), "now"),
    ):
        status, answer = call("rollback", body=bad)
        assert status == 400 and answer["field"] == field, (bad, answer)
    status, answer = call("rollback", body=body(to_version=9, reason="x"))
    assert status == 404 and answer["field"] == "to_version", answer
    assert "cartpole-linear@9" in answer["message"]
    status, answer = call(
        "rollback", path="/agents/nobody/rollback", pathParameters={"id": "nobody"}
    )
    assert status == 404 and answer["field"] == "id", answer
    assert store.get_alias(AGENT).revision == revision  # type: ignore[union-attr]
    assert events(home, "GenomeRolledBack") == []
