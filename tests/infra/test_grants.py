"""Each function's IAM policy is exactly its row of infra_cdk.grants.GRANTS.

The actions each kind of grant may give are written out here, independently of the stack
code: a policy with an action or a resource its row does not declare fails, and so does a
declared grant that is missing.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from chimera.settings import AwsSettings, load_settings

from infra_cdk.grants import GRANTS, Grants

pytestmark = pytest.mark.infra

TABLE_READ = {
    "dynamodb:BatchGetItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:Query",
    "dynamodb:Scan",
}
TABLE_WRITE = {
    "dynamodb:BatchWriteItem",
    "dynamodb:DeleteItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
}
S3_READ = {"s3:GetBucket*", "s3:GetObject*", "s3:List*"}
S3_WRITE = {
    "s3:Abort*",
    "s3:DeleteObject*",
    "s3:PutObject",
    "s3:PutObjectLegalHold",
    "s3:PutObjectRetention",
    "s3:PutObjectTagging",
    "s3:PutObjectVersionTagging",
}
KMS_DECRYPT = {"kms:Decrypt"}
KMS_ENCRYPT = {"kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"}
SQS_CONSUME = {
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "sqs:ReceiveMessage",
}
XRAY = {"xray:PutTelemetryRecords", "xray:PutTraceSegments"}
BASIC_EXECUTION = "service-role/AWSLambdaBasicExecutionRole"


def _render(value: Any, names: dict[str, str]) -> str:
    """A resource as text, logical ids replaced by our names: `<table.Arn>/index/*`."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return f"<{names.get(value['Ref'], value['Ref'])}>"
    if "Fn::GetAtt" in value:
        lid, attr = value["Fn::GetAtt"]
        return f"<{names.get(lid, lid)}.{attr}>"
    if "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(_render(p, names) for p in parts)
    raise AssertionError(f"unexpected resource {value}")


def _expected(g: Grants) -> set[tuple[str, str]]:
    pairs: set[tuple[str, str]] = {(a, "*") for a in XRAY}
    kms: set[str] = set()

    def add(actions: set[str], *resources: str) -> None:
        pairs.update((a, r) for a in actions for r in resources)

    if g.table:
        write = TABLE_WRITE if g.table == "read_write" else set()
        add(TABLE_READ | write, "<table.Arn>", "<table.Arn>/index/*")
        kms |= KMS_DECRYPT | {"kms:DescribeKey"} | (KMS_ENCRYPT if write else set())
    if g.bundles:
        add(S3_READ, "<bundles.Arn>", "<bundles.Arn>/*")
        kms |= KMS_DECRYPT
    if g.artifacts:
        write = S3_WRITE if g.artifacts == "read_write" else set()
        add(S3_READ | write, "<artifacts.Arn>", "<artifacts.Arn>/*")
        kms |= KMS_DECRYPT | (KMS_ENCRYPT if write else set())
    if g.put_events:
        add({"events:PutEvents"}, "<bus.Arn>")
    if g.describe_bus:
        add({"events:DescribeEventBus"}, "<bus.Arn>")
    if g.start_cycle:
        add({"states:StartExecution"}, "<cycle>")
        add(
            {"states:DescribeExecution"},
            "arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:<cycle.Name>:*",
        )
    if g.kpi_queue:
        add(SQS_CONSUME, "<kpi_queue.Arn>")
        kms |= KMS_DECRYPT | KMS_ENCRYPT  # the queue is encrypted with our key
    add(kms, "<key.Arn>")
    return pairs


def _actual(resources: dict[str, Any], role: str, names: dict[str, str]) -> set[tuple[str, str]]:
    pairs = set()
    for policy in resources.values():
        if (
            policy["Type"] != "AWS::IAM::Policy"
            or {"Ref": role} not in policy["Properties"]["Roles"]
        ):
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow" and "Condition" not in statement, statement
            actions = statement["Action"]
            targets = statement["Resource"]
            for action in actions if isinstance(actions, list) else [actions]:
                for target in targets if isinstance(targets, list) else [targets]:
                    pairs.add((action, _render(target, names)))
    return pairs


def _names(synthesized) -> dict[str, str]:
    stack = synthesized.stack
    storage = stack.node.find_child("Storage")
    events = stack.node.find_child("Events")
    workflows = stack.node.find_child("Workflows")
    constructs = {
        "table": storage.table,
        "bundles": storage.bundles,
        "artifacts": storage.artifacts,
        "key": storage.key,
        "bus": events.bus,
        "kpi_queue": events.kpi_queue,
        "cycle": workflows.optimization_cycle,
    }
    return {synthesized.logical_id(c): name for name, c in constructs.items()}


@pytest.mark.parametrize("name", sorted(GRANTS))
def test_policy_is_the_declared_grants(synthesized, name):
    resources = synthesized.resources
    fn = synthesized.stack.node.find_child("Functions").every[name]
    fn_props = resources[synthesized.logical_id(fn)]["Properties"]
    role = fn_props["Role"]["Fn::GetAtt"][0]
    managed = resources[role]["Properties"]["ManagedPolicyArns"]
    assert [json.dumps(m) for m in managed] == [
        json.dumps(m) for m in managed if BASIC_EXECUTION in json.dumps(m)
    ]
    assert len(managed) == 1
    actual = _actual(resources, role, _names(synthesized))
    expected = _expected(GRANTS[name])
    assert actual - expected == set(), f"{name} has undeclared grants"
    assert expected - actual == set(), f"{name} lacks declared grants"
    assert not any(a == "*" or a.endswith(":*") for a, _ in actual)


def test_only_the_api_and_direct_publishers_may_put_events():
    assert {n for n, g in GRANTS.items() if g.put_events} == {"Execution", "Api"}
    assert {n for n, g in GRANTS.items() if g.start_cycle} == {"Api"}
    # Only discovery reads the bundles; what runs is the module version it copied by digest.
    assert {n for n, g in GRANTS.items() if g.bundles} == {"Discovery"}
    assert {n for n, g in GRANTS.items() if g.artifacts == "read_write"} == {
        "Discovery",
        "Evolution",
        "Execution",  # stages a Distributed Map's shards, reads its results
        "Refinement",  # predictor-training: exports history, installs the trained model
        "Optimizer",
    }


def test_functions_get_the_settings_they_need(synthesized):
    """Artifact bucket, bus and the evaluator's size everywhere; the cycle ARN on the API."""
    resources = synthesized.resources
    names = _names(synthesized)
    functions = synthesized.stack.node.find_child("Functions")
    execution = resources[synthesized.logical_id(functions.by_name["Execution"])]["Properties"]
    for name, fn in functions.every.items():
        props = resources[synthesized.logical_id(fn)]["Properties"]
        env = props["Environment"]["Variables"]
        assert _render(env["CHIMERA_ARTIFACT_BUCKET"], names) == "<artifacts>", name
        assert _render(env["CHIMERA_TABLE_NAME"], names) == "<table>", name
        assert _render(env["CHIMERA_BUS_NAME"], names) == "<bus>", name
        assert env["CHIMERA_EVALUATOR_MEMORY_MB"] == str(execution["MemorySize"]), name
        assert [env["CHIMERA_EVALUATOR_ARCHITECTURE"]] == execution["Architectures"], name
        assert props["Architectures"] == execution["Architectures"], name
        settings = load_settings({k: _render(v, names) for k, v in env.items()})
        assert isinstance(settings, AwsSettings), name
        assert settings.evaluator_memory_mb == execution["MemorySize"], name
        cycle = env.get("CHIMERA_CYCLE_STATE_MACHINE_ARN")
        assert (cycle is not None) == (name == "Api"), name
        if cycle is not None:
            assert _render(cycle, names) == "<cycle>"
