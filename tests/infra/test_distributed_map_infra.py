"""The synthesized evolution-segment holds the Distributed Map, and its role may do what a
Distributed Map does (AWS's documented policy): read the items and write the results in the
artifact bucket under its key, start its own child executions, describe and stop them."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

pytestmark = pytest.mark.infra


def _segment(synthesized) -> tuple[str, dict[str, Any]]:
    machines = synthesized.template.find_resources("AWS::StepFunctions::StateMachine")
    (logical,) = (
        name
        for name, m in machines.items()
        if "EvaluateShardsDistributed" in m["Properties"]["DefinitionString"]
    )
    return logical, machines[logical]["Properties"]


def test_the_segment_holds_the_distributed_map(synthesized):
    _, props = _segment(synthesized)
    state = json.loads(props["DefinitionString"])["States"]["EvaluateShardsDistributed"]
    assert state["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert state["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
    assert state["ItemReader"]["ReaderConfig"] == {"InputType": "JSON"}
    assert state["ResultWriter"]["Resource"] == "arn:aws:states:::s3:putObject"
    assert state["ToleratedFailurePercentage"] == 10
    task = state["ItemProcessor"]["States"]["EvaluateShard"]
    assert task["Resource"] == "${ExecutionFunctionArn}" and task["Retry"]
    assert state["Next"] == "CollectShards" and state["Catch"][0]["Next"] == "RecordFailure"


def _statements(synthesized, role: str) -> list[dict[str, Any]]:
    out = []
    for policy in synthesized.template.find_resources("AWS::IAM::Policy").values():
        props = policy["Properties"]
        if {"Ref": role} in props["Roles"]:
            out += props["PolicyDocument"]["Statement"]
    return out


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def test_the_segments_role_may_run_its_distributed_map(synthesized):
    logical, props = _segment(synthesized)
    role = props["RoleArn"]["Fn::GetAtt"][0]
    statements = _statements(synthesized, role)
    artifacts = synthesized.logical_id(synthesized.stack.node.find_child("Storage").artifacts)
    key = synthesized.logical_id(synthesized.stack.node.find_child("Storage").key)

    def granted(action: str) -> list[Any]:
        return [s["Resource"] for s in statements if action in _actions(s)]

    objects = {"Fn::Join": ["", [{"Fn::GetAtt": [artifacts, "Arn"]}, "/*"]]}
    for action in ("s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"):
        assert objects in granted(action), action
    assert objects in granted("s3:ListMultipartUploadParts")
    assert {"Fn::GetAtt": [key, "Arn"]} in granted("kms:GenerateDataKey")
    assert {"Ref": logical} in granted("states:StartExecution")  # its own children
    (children,) = granted("states:StopExecution")
    assert children == granted("states:DescribeExecution")[-1]
    text = json.dumps(children)
    assert re.search(rf'"Fn::GetAtt": \["{logical}", "Name"\]\}}, "/\*"', text), text
