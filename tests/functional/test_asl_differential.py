"""The ASL we deploy, run by our local executor and by moto's interpreter: same result."""

from __future__ import annotations

import io
import json
import time
import zipfile
from unittest import mock

import boto3
import pytest
from chimera import runtime
from chimera.catalog import LAYERS, asl_path, substitute
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend

from chimera_local.workflows import handler_for, local_executor, state_machine_arn

PACKAGES = {f"chimera-{pkg.replace('_', '-')}": pkg for _, pkg, _ in LAYERS}


def outcome(store, agent_id):
    (run,) = store.list_runs(agent_id)
    champion = store.get_genome(agent_id, run.champion_version)
    return {
        "status": run.status.value,
        "generation": run.generation,
        "decision": run.decision,
        "history": [(p.generation, p.best, p.mean) for p in store.fitness_history(run.run_id)],
        "champion": champion.genes,
        "live": store.get_alias(agent_id).primary_version,
    }


def run_in_moto(definition: str, event: dict) -> dict:
    def invoke(self, function_name, qualifier, body, headers, response_headers):
        handler = handler_for(PACKAGES[function_name.split(":")[-1]])
        return json.dumps(handler(json.loads(body))).encode()

    config = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
    with mock_aws(config=config), mock.patch.object(LambdaSimpleBackend, "invoke", invoke):
        iam, lam, sfn = (
            boto3.client(s, region_name="us-east-1") for s in ("iam", "lambda", "stepfunctions")
        )
        role = iam.create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as z:
            z.writestr("handler.py", "def lambda_handler(event, context):\n    return event\n")
        arns = {}
        for name, pkg, _ in LAYERS:
            arns[f"{name}FunctionArn"] = lam.create_function(
                FunctionName=f"chimera-{pkg.replace('_', '-')}",
                Runtime="python3.12",
                Role=role,
                Handler="handler.lambda_handler",
                Code={"ZipFile": code.getvalue()},
            )["FunctionArn"]
        arns |= {"GpuJobQueueArn": "unused", "GpuJobDefinitionArn": "unused"}
        machine = sfn.create_state_machine(
            name="evolution-run", roleArn=role, definition=substitute(definition, arns)
        )
        execution = sfn.start_execution(
            stateMachineArn=machine["stateMachineArn"], name="differential", input=json.dumps(event)
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            described = sfn.describe_execution(executionArn=execution["executionArn"])
            if described["status"] != "RUNNING":
                break
            time.sleep(0.1)
        assert described["status"] == "SUCCEEDED", described
        return json.loads(described["output"])


@pytest.mark.slow
def test_evolution_run_agrees_with_moto(home, only_cartpole, tmp_path, monkeypatch):
    event = {"execution_id": "diff", "agent_id": "cartpole-linear"}
    handler_for("discovery")({"action": "discover", "execution_id": "diff"})
    ours_out = local_executor().start(state_machine_arn("evolution-run"), event, "differential")
    ours = outcome(runtime.deps().store, "cartpole-linear")

    monkeypatch.setenv("CHIMERA_HOME", str(tmp_path / "moto-home"))
    runtime.deps.cache_clear()
    handler_for("discovery")({"action": "discover", "execution_id": "diff"})
    moto_out = run_in_moto(asl_path("evolution-run").read_text(), event)
    theirs = outcome(runtime.deps().store, "cartpole-linear")

    assert moto_out == ours_out
    assert theirs == ours
    assert ours["status"] == "succeeded" and ours["generation"] >= 3
