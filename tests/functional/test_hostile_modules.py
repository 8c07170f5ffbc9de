"""Hostile modules through their real callers: layer 3 refuses them with a reason; layer 4
ends each sleeper in a failed evaluation, a failed KPI or a 422; the host keeps serving.

The modules are in tests/hostile/hostile.py. Each test writes a bundle beside the real
cartpole-linear one, discovers both, and drives the handlers as the state machines and API
Gateway call them: the validation handler, ask / evaluate / tell / propose / holdout, and
POST /agents/{id}/predict as a REST proxy event.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from chimera import runtime
from chimera.domain.sandbox import SandboxPolicy
from chimera.settings import BUNDLED_AGENTS

from chimera_local.workflows import LambdaContext, handler_for
from functions.api import handler as api

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hostile"))
hostile = importlib.import_module("hostile")

EVENTS = Path(__file__).resolve().parents[1] / "events"
CONTEXT = LambdaContext("chimera-api", "arn:aws:lambda:us-east-1:123456789012:function:chimera-api")
GOOD_AGENT = "cartpole-linear"


@pytest.fixture
def bundles(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Returns add(case): writes the case's bundle beside cartpole-linear and discovers both."""
    agents = tmp_path / "agents"
    shutil.copytree(BUNDLED_AGENTS / GOOD_AGENT, agents / GOOD_AGENT)
    monkeypatch.setenv("CHIMERA_AGENTS_DIR", str(agents))
    runtime.deps.cache_clear()

    def add(case: Any) -> dict[str, Any]:
        folder = agents / case.name
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps(case.manifest()))
        (folder / "agent.wasm").write_bytes(case.wasm())
        if case.sandbox_policy:  # a small budget keeps the test fast
            use_policy(SandboxPolicy(**case.sandbox_policy))
        return handler_for("discovery")({"action": "discover", "execution_id": "hostile"})

    return add


def use_policy(policy: SandboxPolicy) -> None:
    """The policy layer 3 and the sandbox share (both read it per call)."""
    deps = runtime.deps()
    deps.policy = policy
    deps.sandbox.policy = policy  # type: ignore[attr-defined]


def validate(agent_id: str) -> dict[str, Any]:
    return handler_for("validation")(
        {"action": "validate", "execution_id": "hostile", "agent_id": agent_id}
    )


def go_live(agent_id: str) -> str:
    """Validate, choose and start a run (the first start makes the default genome live)."""
    assert validate(agent_id)["ok"], f"{agent_id} should pass layer 3"
    choice = handler_for("meta_evolution")(
        {"action": "choose", "execution_id": "hostile", "agent_id": agent_id}
    )
    started = handler_for("evolution")(
        {"action": "start", "execution_id": "hostile", "agent_id": agent_id, "choice": choice}
    )
    return started["run_id"]


def predict(agent_id: str, observation: list[float], job_id: str) -> tuple[int, dict[str, Any]]:
    event = json.loads((EVENTS / "api_predict.json").read_text())
    event["path"] = f"/agents/{agent_id}/predict"
    event["pathParameters"] = {"id": agent_id}
    event["body"] = json.dumps({"job_id": job_id, "observation": observation})
    response = api.lambda_handler(event, CONTEXT)
    return response["statusCode"], json.loads(response["body"])


def host_still_serves() -> None:
    """The same process and sandbox, back on the default policy, serve the real agent."""
    use_policy(SandboxPolicy())
    go_live(GOOD_AGENT)
    status, body = predict(GOOD_AGENT, [0.01, -0.02, 0.03, 0.0], "after-hostile")
    assert status == 200, body
    assert isinstance(body["output"]["output"], float)


@pytest.mark.parametrize("case", hostile.REFUSED, ids=lambda c: c.name)
def test_layer3_refuses_each_hostile_module_with_its_reason(bundles, case):
    found = bundles(case)
    reasons = [r.get("error", "") + r.get("reason", "") for r in found.get("rejected", [])]
    if case.name in found["agents"]:
        result = validate(case.name)
        assert result["ok"] is False
        reasons += result["problems"]
    assert any(case.reason in r for r in reasons), reasons
    host_still_serves()


def evaluate_generation(run_id: str) -> tuple[list[dict[str, Any]], int]:
    asked = handler_for("evolution")({"action": "ask", "execution_id": "hostile", "run_id": run_id})
    shards = [
        handler_for("execution")(
            {
                "action": "evaluate",
                "run_id": run_id,
                "generation": asked["generation"],
                "shard": shard["shard"],
                "start": shard["start"],
                "stop": shard["stop"],
            }
        )
        for shard in asked["shards"]
    ]
    return shards, asked["generation"]


@pytest.mark.parametrize(
    "case", [c for c in hostile.RUNTIME if c.stage == "act"], ids=lambda c: c.name
)
def test_layer4_sleeper_fails_its_evaluation_and_holdout_with_a_reason(bundles, case):
    bundles(case)
    run_id = go_live(case.name)  # the sleeper passes layer 3: it behaves on its smoke call
    shards, generation = evaluate_generation(run_id)
    for shard in shards:
        assert shard["failed"] is not None and case.reason in shard["failed"], shard
    handler_for("evolution")(
        {"action": "tell", "execution_id": "hostile", "run_id": run_id, "generation": generation}
    )
    handler_for("evolution")({"action": "propose", "execution_id": "hostile", "run_id": run_id})
    held = handler_for("execution")(
        {"action": "holdout", "execution_id": "hostile", "run_id": run_id}
    )
    candidate = held["candidate"]
    assert candidate["success"] is False and case.reason in candidate["reason"], candidate
    assert candidate["score"] is None
    host_still_serves()


@pytest.mark.parametrize(
    "case", [c for c in hostile.RUNTIME if c.stage == "predict"], ids=lambda c: c.name
)
def test_predict_on_a_hostile_answer_is_a_422_and_a_failed_kpi(bundles, case):
    bundles(case)
    go_live(case.name)
    status, body = predict(case.name, [0.0] * 4, "calm")
    assert status == 200 and body["output"] == {"output": 1}, body
    status, body = predict(case.name, [0.7] * 4, "provoked")
    assert status == 422, body
    assert body["error"] == "GuestError" and case.reason in body["message"], body
    kpi = runtime.deps().store.get_kpi(case.name, "provoked")
    assert kpi.success is False and kpi.score is None and case.reason in (kpi.reason or "")
    host_still_serves()
