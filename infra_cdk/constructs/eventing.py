"""The custom bus and the rules from chimera.domain.events.ROUTES (the one routing table)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from chimera.domain.events import ROUTES, SOURCE
from constructs import Construct


class Eventing(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        key: kms.IKey,
        refinement: lambda_.Function,
        cycle: sfn.StateMachine,
    ) -> None:
        super().__init__(scope, id)
        self.bus = events.EventBus(self, "Bus", description="Chimera domain events")
        self.dead_letters = sqs.Queue(
            self,
            "KpiDeadLetters",
            encryption_master_key=key,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self.kpi_queue = sqs.Queue(
            self,
            "KpiQueue",
            encryption_master_key=key,
            enforce_ssl=True,
            visibility_timeout=Duration.minutes(6),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letters, max_receive_count=5),
        )
        key.grant_encrypt_decrypt(refinement)
        refinement.add_event_source(
            sources.SqsEventSource(
                self.kpi_queue,
                batch_size=100,
                max_batching_window=Duration.seconds(5),
                report_batch_item_failures=True,
            )
        )
        for route in ROUTES:
            if route.target == "refinement-ingest":
                target: events.IRuleTarget = targets.SqsQueue(self.kpi_queue)
            else:
                target = targets.SfnStateMachine(
                    cycle, input=events.RuleTargetInput.from_object(route.input or {})
                )
            if route.schedule is not None:
                # Schedules live on the default bus (EventBridge's rule).
                events.Rule(
                    self,
                    route.name.title().replace("-", ""),
                    description=f"{route.name}: {route.schedule}",
                    schedule=events.Schedule.expression(route.schedule),
                    targets=[target],
                )
            else:
                events.Rule(
                    self,
                    route.name.title().replace("-", ""),
                    event_bus=self.bus,
                    description=route.name,
                    event_pattern=events.EventPattern(
                        source=[SOURCE], detail_type=list(route.detail_types)
                    ),
                    targets=[target],
                )
