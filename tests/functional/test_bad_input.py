"""Bad input at every edge, as each caller sends it: API Gateway proxy events (tests/events/),
an SQS batch, state-machine task events to the handlers, and the CLI's arguments. Each one is
refused naming the field, and nothing of it is stored.

BAD_INPUTS counts the distinct bad inputs tried in this file (the closing note reports it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from chimera import runtime
from chimera.domain.errors import NotFoundError, ValidationFailedError
from live_agents import start_live_cartpole

from chimera_local.cli import main
from chimera_local.workflows import LambdaContext, handler_for
from functions.api import handler as api

EVENTS = Path(__file__).resolve().parents[1] / "events"
CONTEXT = LambdaContext("chimera-api", "arn:aws:lambda:us-east-1:123456789012:function:chimera-api")
MB = 2**20
GOOD_KPI = {
    "agent_id": "cartpole-linear",
    "genome_version": 1,
    "job_id": "job-ok",
    "suite": "cartpole-v1",
    "success": True,
    "score": 1.0,
    "latency_ms": 0.8,
    "fuel": 5231,
    "recorded_at": "2026-11-21T12:00:00Z",
}


def call(name: str, **override: Any) -> tuple[int, dict]:
    event = json.loads((EVENTS / f"api_{name}.json").read_text())
    event.update(override)
    response = api.lambda_handler(event, CONTEXT)
    return response["statusCode"], json.loads(response["body"])


@pytest.fixture
def started(home, only_cartpole):
    """cartpole-linear discovered and live on genome v1 (a run started from it)."""
    start_live_cartpole("bad-input")
    return runtime.deps().store


# -- the API: REST v1 proxy events ------------------------------------------------------------
def kpi_body(**fields: Any) -> str:
    return json.dumps({"records": [GOOD_KPI | fields]})


# (name, body, the field the 400 names). Bodies that JSON cannot hold as text (1e999, NaN)
# are event files of their own: api_post_kpis_infinite.json, api_post_kpis_nan.json.
KPI_BODIES = [
    ("huge job id", kpi_body(job_id="j" * MB), "records.0.job_id"),
    ("huge reason", kpi_body(success=False, score=None, reason="r" * MB), "records.0.reason"),
    ("huge trace id", kpi_body(trace_id="t" * 10_000), "records.0.trace_id"),
    ("huge suite", kpi_body(suite="s" * 10_000), "records.0.suite"),
    (
        "10,000 records",
        json.dumps({"records": [GOOD_KPI | {"job_id": f"j{i}"} for i in range(10_000)]}),
        "records",
    ),
    ("no records", json.dumps({"records": []}), "records"),
    ("version past the key width", kpi_body(genome_version=10**8), "records.0.genome_version"),
    ("negative version", kpi_body(genome_version=-1), "records.0.genome_version"),
    ("a year of latency", kpi_body(latency_ms=3.2e10), "records.0.latency_ms"),
    ("fuel past u64", kpi_body(fuel=2**64), "records.0.fuel"),
    ("recorded in 2099", kpi_body(recorded_at="2099-01-01T00:00:00Z"), "records.0.recorded_at"),
    (
        "recorded at the epoch",
        kpi_body(recorded_at="1970-01-01T00:00:00Z"),
        "records.0.recorded_at",
    ),
    ("string where a number goes", kpi_body(latency_ms="fast"), "records.0.latency_ms"),
    ("an unknown field", kpi_body(extra=1), "records.0.extra"),
    ("a deeply nested body", "[" * 100_000 + "]" * 100_000, "body"),
]


@pytest.mark.parametrize(("what", "body", "field"), KPI_BODIES, ids=[b[0] for b in KPI_BODIES])
def test_bad_kpis_are_400_naming_the_field_and_store_nothing(started, what, body, field):
    status, answer = call("post_kpis", body=body)
    assert status == 400, (what, answer)
    assert answer["error"] == "ValidationFailedError" and answer["field"] == field, answer
    assert started.list_kpis("cartpole-linear") == []


@pytest.mark.parametrize(
    ("event", "field"),
    [("post_kpis_infinite", "records.0.latency_ms"), ("post_kpis_nan", "records.0.score")],
)
def test_non_finite_numbers_are_refused_not_stored_as_null(started, event, field):
    """JSON's 1e999 parses as infinity in Python (NaN is accepted by json.loads): both were
    stored as null, and every later read of the agent's KPIs failed."""
    status, answer = call(event)
    assert status == 400 and answer["field"] == field, answer
    assert "finite" in answer["message"]
    assert started.list_kpis("cartpole-linear") == []
    assert call("post_kpis", body=kpi_body())[0] == 200  # and the store still serves
    assert [k.job_id for k in started.list_kpis("cartpole-linear")] == ["job-ok"]


def test_kpis_of_unknown_agents_and_versions_are_refused(started):
    status, answer = call("post_kpis", body=kpi_body(agent_id="no-such-agent"))
    assert status == 404 and answer["field"] == "records.0.agent_id", answer
    batch = json.dumps({"records": [GOOD_KPI, GOOD_KPI | {"job_id": "j2", "genome_version": 7}]})
    status, answer = call("post_kpis", body=batch)
    assert status == 400 and answer["field"] == "records.1.genome_version", answer
    assert started.list_kpis("cartpole-linear") == []  # the good record went nowhere either


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (json.dumps({"job_id": "j", "observation": [1e308 * 10, 0, 0, 0]}), "observation.0"),
        ('{"job_id": "j", "observation": [0, 0, NaN, 0]}', "observation.2"),
        ('{"job_id": "j", "observation": [0, 0, 0, -1e999]}', "observation.3"),
        (json.dumps({"job_id": "j" * MB, "observation": [0, 0, 0, 0]}), "job_id"),
        (json.dumps({"job_id": "j", "observation": [0.0] * 100_000}), "observation"),
    ],
)
def test_bad_predictions_are_400_naming_the_field(started, body, field):
    status, answer = call("predict", body=body)
    assert status == 400 and answer["field"] == field, answer
    assert started.list_kpis("cartpole-linear") == []


def test_unknown_ids_in_routes_are_404_naming_the_path_parameter(started):
    status, answer = call("get_run_unknown")
    assert status == 404 and answer["field"] == "id", answer
    assert "no-such-run" in answer["message"]
    for route, path in (
        ("get_agent", "/agents/nobody"),
        ("list_genomes", "/agents/nobody/genomes"),
    ):
        status, answer = call(route, path=path, pathParameters={"id": "nobody"})
        assert status == 404 and answer["field"] == "id", (route, answer)
    status, answer = call("predict_unknown_agent")
    assert status == 404 and answer["field"] == "id", answer
    long_id = "r" * 10_000
    status, answer = call("get_run", path=f"/runs/{long_id}", pathParameters={"id": long_id})
    assert status == 400 and answer["field"] == "id", answer


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (json.dumps({"objective": "o" * MB}), "objective"),
        (json.dumps({"objective": ""}), "objective"),
        (json.dumps({"objective": "x", "name": "n" * 1000}), "name"),
        (json.dumps({"objective": "x", "surprise": True}), "surprise"),
    ],
)
def test_bad_cycle_requests_are_400_naming_the_field(home, body, field):
    status, answer = call("post_cycles", body=body)
    assert status == 400 and answer["field"] == field, answer


# -- SQS: a poisoned message beside good ones --------------------------------------------------
def test_a_poisoned_sqs_message_fails_alone(started, repo):
    batch = json.loads((repo / "tests" / "events" / "sqs_kpi_batch_poisoned.json").read_text())
    answer = handler_for("refinement")(batch)
    bad = {r["messageId"] for r in batch["Records"] if r["messageId"].startswith("bad")}
    assert {f["itemIdentifier"] for f in answer["batchItemFailures"]} == bad
    assert len(bad) == 7
    stored = started.list_kpis("cartpole-linear")
    assert sorted(k.job_id for k in stored) == ["job-good-1", "job-good-2"]
    assert all(k.latency_ms == 0.8 for k in stored)


# -- state-machine tasks: the handlers with dict events ----------------------------------------
TASKS = [
    (
        "planning",
        {"action": "plan", "execution_id": "e", "agents": ["a"] * 10_000},
        "agents",
    ),
    (
        "planning",
        {
            "action": "plan",
            "execution_id": "e",
            "agents": ["cartpole-linear"],
            "objective": "o" * MB,
        },
        "objective",
    ),
    ("planning", {"action": "plan", "execution_id": "e" * MB, "agents": []}, "execution_id"),
    (
        "execution",
        {"action": "evaluate", "run_id": "r", "generation": 0, "shard": 0, "start": 5, "stop": 5},
        "stop",
    ),
    (
        "execution",
        {
            "action": "evaluate",
            "run_id": "r",
            "generation": 0,
            "shard": 0,
            "start": 0,
            "stop": 10**9,
        },
        "stop",
    ),
    (
        "refinement",
        {"action": "ingest", "records": [GOOD_KPI | {"latency_ms": float("inf")}]},
        "records.0.latency_ms",
    ),
    (
        "refinement",
        {"action": "ingest", "records": [GOOD_KPI | {"score": float("nan")}]},
        "records.0.score",
    ),
    (
        "refinement",
        {"action": "ingest", "records": [GOOD_KPI | {"job_id": f"j{i}"} for i in range(1001)]},
        "records",
    ),
    (
        "evolution",
        {"action": "finish", "execution_id": "e", "run_id": "r", "reason": "x" * MB},
        "reason",
    ),
    (
        "evolution",
        {"action": "fail", "execution_id": "e", "error": {"Error": "E", "Cause": "c" * MB}},
        "error",
    ),
    (
        "evolution",
        {"action": "fail", "execution_id": "e", "error": {"Error": float("nan")}},
        "error",
    ),
    (
        "evolution",
        {
            "action": "start",
            "execution_id": "e",
            "agent_id": "cartpole-linear",
            "choice": {
                "strategy": "ga",
                "population_size": 10**7,
                "max_generations": 5,
                "target_fitness": None,
                "reason": "r",
            },
        },
        "choice.population_size",
    ),
    (
        "evolution",
        {
            "action": "start",
            "execution_id": "e",
            "agent_id": "cartpole-linear",
            "choice": {
                "strategy": "ga",
                "population_size": 10,
                "max_generations": 5,
                "target_fitness": float("inf"),
                "reason": "r",
            },
        },
        "choice.target_fitness",
    ),
    (
        "validation",
        {
            "action": "gate",
            "execution_id": "e",
            "run_id": "r",
            "candidate": GOOD_KPI | {"score": float("-inf")},
        },
        "candidate.score",
    ),
]


@pytest.mark.parametrize(("layer", "event", "field"), TASKS, ids=[t[2] for t in TASKS])
def test_bad_task_input_is_refused_naming_the_field(started, layer, event, field):
    runs = started.list_runs("cartpole-linear")
    with pytest.raises(ValidationFailedError) as err:
        handler_for(layer)(event)
    assert err.value.field == field
    assert started.list_runs("cartpole-linear") == runs
    assert started.list_kpis("cartpole-linear") == []


@pytest.mark.parametrize(
    ("layer", "event", "field"),
    [
        ("evolution", {"action": "ask", "execution_id": "e", "run_id": "no-such-run"}, "run_id"),
        ("execution", {"action": "holdout", "execution_id": "e", "run_id": "nope"}, "run_id"),
        ("meta_evolution", {"action": "adapt", "execution_id": "e", "run_id": "nope"}, "run_id"),
        ("planning", {"action": "plan", "execution_id": "e", "agents": ["nobody"]}, "agent_id"),
        (
            "meta_evolution",
            {"action": "choose", "execution_id": "e", "agent_id": "nobody"},
            "agent_id",
        ),
        ("refinement", {"action": "report", "execution_id": "never-ran"}, "execution_id"),
    ],
)
def test_unknown_runs_agents_and_executions_are_named(started, layer, event, field):
    with pytest.raises(NotFoundError) as err:
        handler_for(layer)(event)
    assert err.value.field == field
    assert err.value.key in json.dumps(event)


# -- the CLI's arguments -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--objective", "o" * 10_000], "--objective"),
        (["run", "--objective", ""], "--objective"),
        (["genomes", "Not An Id"], "agent_id"),
        (["genomes", "a" * MB], "agent_id"),
        (["serve", "--port", "70000"], "--port"),
        (["serve", "--port", "-1"], "--port"),
    ],
)
def test_bad_cli_arguments_are_refused_naming_them(home, capsys, argv, needle):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err) < 2000


# KPI bodies, 1e999 and NaN events, unknown agent and version, predict bodies, unknown or
# oversized route ids, cycle bodies, poisoned SQS messages, task events, unknown references,
# CLI arguments: 66.
BAD_INPUTS = len(KPI_BODIES) + 2 + 2 + 5 + 5 + 4 + 7 + len(TASKS) + 6 + 6
