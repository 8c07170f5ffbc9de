"""The synthesized predictor-training state machine: the checked-in file with
`sagemaker:createTrainingJob.sync` (managed spot, the `training` channel, a checkpoint URI, the
image and SageMaker role of evolution-run's SageMaker placement), a role that may do exactly
what it needs (invoke Refinement and Resources (layer 8's reserve and commit), create/describe/stop its own predictor-* training jobs, pass
the SageMaker role to SageMaker only, the .sync rule, its logs and traces) and nothing else,
started by a rule on EvolutionRunCompleted with the agent's id."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytestmark = pytest.mark.infra


def _machine(synthesized) -> tuple[str, dict[str, Any]]:
    machines = synthesized.template.find_resources("AWS::StepFunctions::StateMachine")
    (logical,) = (
        name
        for name, m in machines.items()
        if '"InstallPredictor"' in m["Properties"]["DefinitionString"]
    )
    return logical, machines[logical]["Properties"]


def _statements(synthesized, role: str) -> list[dict[str, Any]]:
    out = []
    for policy in synthesized.template.find_resources("AWS::IAM::Policy").values():
        props = policy["Properties"]
        if {"Ref": role} in props["Roles"]:
            out += props["PolicyDocument"]["Statement"]
    return out


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_the_machine_trains_on_sagemaker_with_evolution_runs_image_and_role(synthesized, repo):
    _, props = _machine(synthesized)
    text = (repo / "statemachines" / "predictor-training.asl.json").read_text()
    assert props["DefinitionString"] == text  # deployed as written
    train = json.loads(text)["States"]["Train"]
    assert train["Resource"] == "arn:aws:states:::sagemaker:createTrainingJob.sync"
    params = train["Parameters"]
    assert params["EnableManagedSpotTraining"] is True
    assert params["CheckpointConfig"]["S3Uri.$"] == "$.export.checkpoint_uri"
    (channel,) = params["InputDataConfig"]
    assert channel["ChannelName"] == "training"
    assert channel["DataSource"]["S3DataSource"]["S3Uri.$"] == "$.export.training_data"

    subs = props["DefinitionSubstitutions"]
    machines = synthesized.template.find_resources("AWS::StepFunctions::StateMachine")
    (run,) = (
        m["Properties"]
        for m in machines.values()
        if "RunSegmentOnSageMaker" in m["Properties"]["DefinitionString"]
    )
    for name in ("TrainingImageUri", "SageMakerRoleArn", "ChimeraArtifactBucket"):
        assert subs[name] == run["DefinitionSubstitutions"][name], name
    functions = synthesized.stack.node.find_child("Functions").by_name
    for name in ("Refinement", "Resources"):
        assert subs[f"{name}FunctionArn"] == {
            "Fn::GetAtt": [synthesized.logical_id(functions[name]), "Arn"]
        }
    # Layer 8 prices what Train runs: its instance type and stopping condition, as written
    states = json.loads(text)["States"]
    reserve = states["ReserveTraining"]["Parameters"]
    assert reserve["instance_type"] == params["ResourceConfig"]["InstanceType"]
    assert reserve["max_runtime_s"] == params["StoppingCondition"]["MaxRuntimeInSeconds"]
    assert reserve["max_wait_s"] == params["StoppingCondition"]["MaxWaitTimeInSeconds"]
    assert train["Catch"][0]["Next"] == "SettleFailedTraining" and train["Next"] == "CommitTraining"


def test_its_role_holds_only_what_the_machine_needs(synthesized):
    logical, props = _machine(synthesized)
    role = props["RoleArn"]["Fn::GetAtt"][0]
    statements = _statements(synthesized, role)
    actions = {a for s in statements for a in _list(s["Action"])}
    assert actions == {
        "lambda:InvokeFunction",
        "sagemaker:CreateTrainingJob",
        "sagemaker:DescribeTrainingJob",
        "sagemaker:StopTrainingJob",
        "sagemaker:AddTags",
        "iam:PassRole",
        "events:PutTargets",
        "events:PutRule",
        "events:DescribeRule",
        # CloudWatch Logs delivery and X-Ray tracing, as every state machine here has
        "logs:CreateLogDelivery",
        "logs:GetLogDelivery",
        "logs:UpdateLogDelivery",
        "logs:DeleteLogDelivery",
        "logs:ListLogDeliveries",
        "logs:PutResourcePolicy",
        "logs:DescribeResourcePolicies",
        "logs:DescribeLogGroups",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "xray:GetSamplingRules",
        "xray:GetSamplingTargets",
    }

    def resources(action: str) -> list[Any]:
        return [r for s in statements if action in _list(s["Action"]) for r in _list(s["Resource"])]

    functions = synthesized.stack.node.find_child("Functions").by_name
    invoked = json.dumps(resources("lambda:InvokeFunction"))
    for name, fn in functions.items():  # layer 5's steps and layer 8's reserve and commit
        assert (synthesized.logical_id(fn) in invoked) == (name in ("Refinement", "Resources"))

    (jobs,) = {json.dumps(r) for r in resources("sagemaker:CreateTrainingJob")}
    assert jobs.endswith(':training-job/predictor-*"]]}'), jobs
    (passed,) = [s for s in statements if "iam:PassRole" in _list(s["Action"])]
    gpu = synthesized.stack.node.find_child("Gpu")
    assert passed["Resource"] == {"Fn::GetAtt": [synthesized.logical_id(gpu.sagemaker_role), "Arn"]}
    assert passed["Condition"] == {
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
    }
    rules = json.dumps(resources("events:PutRule"))
    assert "rule/StepFunctionsGetEventsForSageMakerTrainingJobsRule" in rules


def test_evolution_run_completed_starts_it_with_the_agent(synthesized):
    logical, _ = _machine(synthesized)
    rules = synthesized.template.find_resources("AWS::Events::Rule")
    (rule,) = (
        r["Properties"]
        for r in rules.values()
        if any(t["Arn"] == {"Ref": logical} for t in r["Properties"].get("Targets", []))
    )
    assert rule["EventPattern"] == {"source": ["chimera"], "detail-type": ["EvolutionRunCompleted"]}
    (target,) = rule["Targets"]
    transformer = target["InputTransformer"]
    assert transformer["InputPathsMap"] == {"detail-agent_id": "$.detail.agent_id"}
    assert json.loads(transformer["InputTemplate"].replace("<detail-agent_id>", '"a"')) == {
        "agent_id": "a"
    }
