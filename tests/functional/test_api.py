"""The API as API Gateway calls it: REST v1 proxy events from tests/events/ into the handler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chimera import runtime
from live_agents import start_live_cartpole

from chimera_local.workflows import LambdaContext
from functions.api import handler as api

EVENTS = Path(__file__).resolve().parents[1] / "events"
CONTEXT = LambdaContext("chimera-api", "arn:aws:lambda:us-east-1:123456789012:function:chimera-api")


def call(name: str, **override) -> tuple[int, dict]:
    event = json.loads((EVENTS / f"api_{name}.json").read_text())
    event.update(override)
    response = api.lambda_handler(event, CONTEXT)
    # The proxy integration's answer: statusCode, (multiValue)headers and a string body.
    assert isinstance(response["statusCode"], int) and isinstance(response["body"], str)
    headers = response.get("multiValueHeaders") or {
        k: [v] for k, v in response.get("headers", {}).items()
    }
    assert headers["Content-Type"] == ["application/json"]
    return response["statusCode"], json.loads(response["body"])


@pytest.fixture
def discovered(home, only_cartpole):
    start_live_cartpole("cycle-1")
    return runtime.deps().store


def test_health_reports_every_layer(home):
    status, body = call("health")
    assert status == 200 and body["status"] == "ok"
    assert set(body["checks"]) == {"store", "bus", "sandbox"}
    assert all(c["ok"] for c in body["checks"].values())


def test_predict_answers_and_records_a_kpi(discovered):
    status, body = call("predict")
    assert status == 200, body
    assert body["agent_id"] == "cartpole-linear" and body["genome_version"] == 1
    assert body["job_id"] == "job-1" and "output" in body["output"]
    (kpi,) = discovered.list_kpis("cartpole-linear")
    assert kpi.job_id == "job-1" and kpi.success


@pytest.mark.parametrize(
    ("name", "field"), [("predict_bad_body", "observation"), ("predict_malformed_json", "body")]
)
def test_bad_body_is_400_naming_the_field_and_stores_nothing(discovered, name, field):
    status, body = call(name)
    assert status == 400, body
    assert body["field"] == field and body["error"] == "ValidationFailedError"
    assert discovered.list_kpis("cartpole-linear") == []


def test_wrong_observation_length_names_the_field(discovered):
    status, body = call("predict", body=json.dumps({"job_id": "j", "observation": [0.0]}))
    assert status == 400 and body["field"] == "observation", body


def test_unknown_agent_is_404(discovered):
    status, body = call("predict_unknown_agent")
    assert status == 404 and body["error"] == "NotFoundError"
    assert "no-such-agent" in body["message"]


def test_bad_path_parameter_is_400(discovered):
    status, body = call("get_agent", path="/agents/Not An Id", pathParameters={"id": "Not An Id"})
    assert status == 400 and body["field"] == "id", body


def test_unknown_route_is_404_not_502(home):
    status, _ = call("health", path="/nowhere", resource="/nowhere")
    assert status == 404


def test_reads_agents_genomes_and_runs(discovered):
    status, agents = call("list_agents")
    assert status == 200 and [a["agent_id"] for a in agents] == ["cartpole-linear"]
    assert agents[0]["live_version"] == 1 and agents[0]["weights"] == {"1": 1.0}
    status, agent = call("get_agent")
    assert status == 200 and agent["suite"] == "cartpole-v1" and len(agent["genome"]) == 5
    status, genomes = call("list_genomes")
    assert status == 200 and genomes[0]["version"] == 1 and genomes[0]["live_weight"] == 1.0
    assert set(genomes[0]["genes"]) == {g["name"] for g in agent["genome"]}
    status, run = call("get_run")
    assert status == 200 and run["status"] == "running" and run["history"] == []
    assert "optimizer_state" not in run
    status, body = call("get_run", path="/runs/nope", pathParameters={"id": "nope"})
    assert status == 404 and body["error"] == "NotFoundError"


def test_post_kpis_is_idempotent_and_validated(discovered):
    assert call("post_kpis") == (200, {"received": 1, "new": 1})
    assert call("post_kpis") == (200, {"received": 1, "new": 0})
    bad = json.loads(json.loads((EVENTS / "api_post_kpis.json").read_text())["body"])
    bad["records"][0]["latency_ms"] = -1
    status, body = call("post_kpis", body=json.dumps(bad))
    assert status == 400 and body["field"] == "records.0.latency_ms", body
    assert len(discovered.list_kpis("cartpole-linear")) == 1


@pytest.mark.slow
def test_post_cycles_starts_the_cycle_once(home, only_cartpole):
    status, body = call("post_cycles")
    assert status == 202, body
    assert body["execution_id"] == "api-cycle-1" and body["status"] == "RUNNING"
    assert runtime.deps().workflows.wait("api-cycle-1", timeout=300) == "SUCCEEDED"
    status, again = call("post_cycles")  # the same name and input: the same execution
    assert status == 202 and again["execution_arn"] == body["execution_arn"]
    assert again["status"] == "SUCCEEDED"
    other = json.dumps({"objective": "something else", "name": "api-cycle-1"})
    status, conflict = call("post_cycles", body=other)
    assert status == 409 and conflict["error"] == "ConflictError"
    (run,) = runtime.deps().store.list_runs("cartpole-linear")
    assert run.execution_id.startswith("api-cycle-1")
