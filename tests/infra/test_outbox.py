"""The table's secondary index and stream, the artifact bucket, and the outbox pipe."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match

pytestmark = pytest.mark.infra


def test_table_has_gsi1_and_a_new_image_stream(synthesized):
    (table,) = synthesized.template.find_resources("AWS::DynamoDB::Table").values()
    props = table["Properties"]
    assert props["GlobalSecondaryIndexes"] == [
        {
            "IndexName": "gsi1",
            "KeySchema": [
                {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }
    ]
    assert {"AttributeName": "gsi1pk", "AttributeType": "S"} in props["AttributeDefinitions"]
    assert {"AttributeName": "gsi1sk", "AttributeType": "S"} in props["AttributeDefinitions"]
    assert props["StreamSpecification"] == {"StreamViewType": "NEW_IMAGE"}


def test_artifact_bucket_is_encrypted_private_logged_and_ssl_only(synthesized):
    storage = synthesized.stack.node.find_child("Storage")
    artifacts = synthesized.resources[synthesized.logical_id(storage.artifacts)]["Properties"]
    key = synthesized.logical_id(storage.key)
    (rule,) = artifacts["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {
        "KMSMasterKeyID": {"Fn::GetAtt": [key, "Arn"]},
        "SSEAlgorithm": "aws:kms",
    }
    assert artifacts["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert artifacts["LoggingConfiguration"]["LogFilePrefix"] == "artifacts/"
    assert artifacts["LifecycleConfiguration"]["Rules"]
    synthesized.template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": synthesized.logical_id(storage.artifacts)},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            },
        },
    )


def test_pipe_forwards_inserted_outbox_items_to_the_bus(synthesized):
    stack = synthesized.stack
    table = synthesized.logical_id(stack.node.find_child("Storage").table)
    bus = synthesized.logical_id(stack.node.find_child("Events").bus)
    (pipe,) = synthesized.template.find_resources("AWS::Pipes::Pipe").values()
    props = pipe["Properties"]
    assert props["Source"] == {"Fn::GetAtt": [table, "StreamArn"]}
    assert props["Target"] == {"Fn::GetAtt": [bus, "Arn"]}
    (only,) = props["SourceParameters"]["FilterCriteria"]["Filters"]
    assert json.loads(only["Pattern"]) == {
        "eventName": ["INSERT"],
        "dynamodb": {"NewImage": {"pk": {"S": [{"prefix": "OUTBOX#"}]}}},
    }
    stream = props["SourceParameters"]["DynamoDBStreamParameters"]
    assert stream["StartingPosition"] == "TRIM_HORIZON"
    assert "Arn" in stream["DeadLetterConfig"]
    target = props["TargetParameters"]
    assert target["EventBridgeEventBusParameters"] == {
        "Source": "chimera",
        "DetailType": "$.dynamodb.NewImage.detail_type.S",
    }
    assert target["InputTemplate"] == "<$.dynamodb.NewImage.detail.S>"


def test_pipe_role_reads_the_stream_and_puts_events_only(synthesized):
    stack = synthesized.stack
    outbox = stack.node.find_child("Outbox")
    names = {
        synthesized.logical_id(stack.node.find_child("Storage").table): "table",
        synthesized.logical_id(stack.node.find_child("Storage").key): "key",
        synthesized.logical_id(stack.node.find_child("Events").bus): "bus",
        synthesized.logical_id(outbox.dead_letters): "dead_letters",
        synthesized.logical_id(outbox.node.find_child("Logs")): "logs",
    }
    role = synthesized.logical_id(outbox.role)
    resources = synthesized.resources
    assert resources[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Action": "sts:AssumeRole",
            "Effect": "Allow",
            "Principal": {"Service": "pipes.amazonaws.com"},
        }
    ]
    assert "ManagedPolicyArns" not in resources[role]["Properties"]
    granted: dict[tuple[str, str], set[str]] = {}
    for policy in resources.values():
        if policy["Type"] == "AWS::IAM::Policy" and {"Ref": role} in policy["Properties"]["Roles"]:
            for st in policy["Properties"]["PolicyDocument"]["Statement"]:
                actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
                res = st["Resource"]
                if isinstance(res, dict):
                    lid, attr = res["Fn::GetAtt"]
                    res = f"{names[lid]}.{attr}"
                granted[res] = granted.get(res, set()) | set(actions)
    assert granted == {
        "*": {"dynamodb:ListStreams"},  # no resource-level permission exists for it
        "table.StreamArn": {
            "dynamodb:DescribeStream",
            "dynamodb:GetRecords",
            "dynamodb:GetShardIterator",
        },
        "bus.Arn": {"events:PutEvents"},
        # Decrypt the stream; encrypt what goes to the (KMS-encrypted) dead-letter queue.
        "key.Arn": {
            "kms:Decrypt",
            "kms:DescribeKey",
            "kms:Encrypt",
            "kms:GenerateDataKey*",
            "kms:ReEncrypt*",
        },
        "dead_letters.Arn": {"sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"},
        "logs.Arn": {"logs:CreateLogStream", "logs:PutLogEvents"},
    }
