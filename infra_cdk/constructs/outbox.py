"""The outbox publisher: an EventBridge Pipe from the table's stream to the Chimera bus.

A use case that changes state writes its events as OUTBOX# items in the same DynamoDB
transaction as the change; the pipe forwards each inserted one to the bus (at least once,
after the transaction commits), so no function needs events:PutEvents to publish them.
An outbox item carries `detail_type` (the event's DetailType) and `detail` (the event's
detail as JSON text); the pipe's input template passes that text through as the detail.
"""

from __future__ import annotations

import json

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_pipes as pipes
from aws_cdk import aws_sqs as sqs
from chimera.domain.events import SOURCE
from constructs import Construct

OUTBOX_PREFIX = "OUTBOX#"
# Only new outbox items: updates, deletions (and TTL expiry) of them publish nothing.
FILTER_PATTERN = {
    "eventName": ["INSERT"],
    "dynamodb": {"NewImage": {"pk": {"S": [{"prefix": OUTBOX_PREFIX}]}}},
}
DETAIL_TYPE_PATH = "$.dynamodb.NewImage.detail_type.S"  # a dynamic path parameter
# A template that is exactly one JSON path: the target receives the value itself, here the
# JSON text of the detail (EventBridge Pipes input transformation).
DETAIL_TEMPLATE = "<$.dynamodb.NewImage.detail.S>"


class Outbox(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        table: dynamodb.ITable,
        bus: events.IEventBus,
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, id)
        if table.table_stream_arn is None:
            raise ValueError("the outbox needs the table's stream (StreamViewType.NEW_IMAGE)")
        # Records the pipe could not deliver after its retries: kept for replay, alarmed on.
        self.dead_letters = sqs.Queue(
            self, "DeadLetters", encryption_master_key=key, enforce_ssl=True
        )
        log_group = logs.LogGroup(
            self,
            "Logs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("pipes.amazonaws.com"),
            description="Chimera outbox pipe: reads the table's stream, puts events on the bus",
        )
        table.grant_stream_read(self.role)
        bus.grant_put_events_to(self.role)
        self.dead_letters.grant_send_messages(self.role)
        log_group.grant_write(self.role)
        self.pipe = pipes.CfnPipe(
            self,
            "Pipe",
            description="Chimera outbox: OUTBOX# items inserted in the table -> the Chimera bus",
            role_arn=self.role.role_arn,
            source=table.table_stream_arn,
            source_parameters=pipes.CfnPipe.PipeSourceParametersProperty(
                dynamo_db_stream_parameters=pipes.CfnPipe.PipeSourceDynamoDBStreamParametersProperty(
                    starting_position="TRIM_HORIZON",
                    batch_size=10,
                    maximum_retry_attempts=10,
                    dead_letter_config=pipes.CfnPipe.DeadLetterConfigProperty(
                        arn=self.dead_letters.queue_arn
                    ),
                ),
                filter_criteria=pipes.CfnPipe.FilterCriteriaProperty(
                    filters=[pipes.CfnPipe.FilterProperty(pattern=json.dumps(FILTER_PATTERN))]
                ),
            ),
            target=bus.event_bus_arn,
            target_parameters=pipes.CfnPipe.PipeTargetParametersProperty(
                event_bridge_event_bus_parameters=pipes.CfnPipe.PipeTargetEventBridgeEventBusParametersProperty(
                    source=SOURCE,
                    detail_type=DETAIL_TYPE_PATH,
                ),
                input_template=DETAIL_TEMPLATE,
            ),
            log_configuration=pipes.CfnPipe.PipeLogConfigurationProperty(
                level="ERROR",
                cloudwatch_logs_log_destination=pipes.CfnPipe.CloudwatchLogsLogDestinationProperty(
                    log_group_arn=log_group.log_group_arn
                ),
            ),
        )
        # The role's policy must exist before the pipe starts reading the stream.
        self.pipe.node.add_dependency(self.role)
