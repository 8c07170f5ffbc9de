"""The canary's second rollback path: CloudWatch alarms on the guardrail metrics, and a rule
that hands their ALARM state changes to the refinement function.

Experiments come and go, alarms are static: the refinement function publishes, after each KPI
batch, every touched running experiment's guardrails (EMF, `chimera.domain.guardrails`), one
value per experiment under its `service` dimension; each alarm watches the Maximum over a
minute against the deployment's margin (`settings.canary().guardrails`), missing data
(no canary running) not breaching. Its change to ALARM reaches the refinement function through
EventBridge's default bus (where CloudWatch puts alarm events), which re-checks every running
experiment from its rollups and rolls back those that breach
(`chimera.services.experiments.stop_for_alarm`). The rule's target is the function itself:
EventBridge retries a failed delivery, and a second delivery stops nothing twice.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from chimera.domain.guardrails import (
    ALARMED,
    DIMENSIONS,
    ERROR_RATE_EXCESS,
    ERROR_RATE_EXCESS_BOUND,
    LATENCY_RATIO,
    METRICS,
    NAMESPACE,
    alarm_thresholds,
)
from chimera.domain.models import GuardrailConfig
from chimera.services.alarm_contracts import ALARM_DETAIL_TYPE, ALARM_SOURCE
from constructs import Construct

PERIOD = Duration.minutes(1)
DESCRIPTIONS = {
    ERROR_RATE_EXCESS_BOUND: "A running canary's candidate fails more often than its incumbent "
    "by more than the error-rate margin (always-valid lower bound of the excess)",
    LATENCY_RATIO: "A running canary's candidate has a latency p95 over its incumbent's by more "
    "than the latency margin",
}


class GuardrailAlarms(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        refinement: lambda_.IFunction,
        guardrails: GuardrailConfig,
        canary: sfn.StateMachine,
        dashboard: cw.Dashboard,
    ) -> None:
        super().__init__(scope, id)
        thresholds = alarm_thresholds(guardrails)
        self.metrics = {
            name: cw.Metric(
                namespace=NAMESPACE,
                metric_name=name,
                dimensions_map=DIMENSIONS,
                statistic="Maximum",
                period=PERIOD,
            )
            for name in METRICS
        }
        self.alarms = {
            name: cw.Alarm(
                self,
                name.removeprefix("Guardrail"),
                metric=self.metrics[name],
                threshold=thresholds[name],
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=1,
                datapoints_to_alarm=1,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
                alarm_description=f"{DESCRIPTIONS[name]}: the refinement function re-checks "
                "every running canary and rolls back those that breach",
            )
            for name in ALARMED
        }
        self.rule = events.Rule(
            self,
            "AlarmToRollback",
            description="Guardrail alarms into ALARM: the refinement function's rollback path",
            event_pattern=events.EventPattern(
                source=[ALARM_SOURCE],
                detail_type=[ALARM_DETAIL_TYPE],
                detail={
                    "alarmName": [a.alarm_name for a in self.alarms.values()],
                    "state": {"value": ["ALARM"]},
                },
            ),
            targets=[
                targets.LambdaFunction(
                    refinement, retry_attempts=8, max_event_age=Duration.hours(2)
                )
            ],
        )
        annotations = {
            name: cw.HorizontalAnnotation(value=thresholds[name], label=f"{name} alarm")
            for name in ALARMED
        }
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Canary guardrails (largest over running experiments)",
                width=12,
                left=[self.metrics[ERROR_RATE_EXCESS], self.metrics[ERROR_RATE_EXCESS_BOUND]],
                left_annotations=[annotations[ERROR_RATE_EXCESS_BOUND]],
                right=[self.metrics[LATENCY_RATIO]],
                right_annotations=[annotations[LATENCY_RATIO]],
            ),
            cw.GraphWidget(
                title="Canary rollouts",
                width=8,
                left=[
                    canary.metric_started(period=Duration.minutes(5), label="started"),
                    canary.metric_succeeded(period=Duration.minutes(5), label="ended"),
                    canary.metric_failed(period=Duration.minutes(5), label="aborted (rolled back)"),
                ],
            ),
            cw.AlarmStatusWidget(
                title="Guardrail alarms", width=4, alarms=list(self.alarms.values())
            ),
        )
