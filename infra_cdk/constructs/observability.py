"""A CloudWatch dashboard per concern, and alarms an operator (or a rollback) acts on."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct


class Observability(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        functions: dict[str, lambda_.Function],
        machines: dict[str, sfn.StateMachine],
        dead_letters: sqs.IQueue,
        kpi_queue: sqs.IQueue,
    ) -> None:
        super().__init__(scope, id)
        period = Duration.minutes(5)
        self.dashboard = cw.Dashboard(self, "Dashboard", dashboard_name="Chimera")
        self.dashboard.add_widgets(
            cw.TextWidget(
                markdown="# Chimera\nLayers, workflows, KPI ingest and evolution progress.",
                width=24,
                height=2,
            )
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Layer invocations",
                width=12,
                left=[
                    fn.metric_invocations(period=period, label=name)
                    for name, fn in functions.items()
                ],
            ),
            cw.GraphWidget(
                title="Layer errors",
                width=12,
                left=[
                    fn.metric_errors(period=period, label=name) for name, fn in functions.items()
                ],
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Layer p95 duration (ms)",
                width=12,
                left=[
                    fn.metric_duration(period=period, statistic="p95", label=name)
                    for name, fn in functions.items()
                ],
            ),
            cw.GraphWidget(
                title="Workflows",
                width=12,
                left=[
                    m.metric_succeeded(period=period, label=f"{n} succeeded")
                    for n, m in machines.items()
                ]
                + [
                    m.metric_failed(period=period, label=f"{n} failed") for n, m in machines.items()
                ],
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="KPI ingest queue",
                width=12,
                left=[
                    kpi_queue.metric_approximate_number_of_messages_visible(period=period),
                    dead_letters.metric_approximate_number_of_messages_visible(period=period),
                ],
            ),
            cw.GraphWidget(
                title="Best fitness per generation",
                width=12,
                left=[
                    cw.Metric(
                        namespace="Chimera",
                        metric_name="BestFitness",
                        statistic="Maximum",
                        period=period,
                    )
                ],
            ),
        )
        self.alarms = [
            cw.Alarm(
                self,
                f"{name}Failed",
                metric=m.metric_failed(period=period),
                threshold=1,
                evaluation_periods=1,
                alarm_description=f"{name} executions failed",
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            for name, m in machines.items()
        ] + [
            cw.Alarm(
                self,
                "KpiDeadLetters",
                metric=dead_letters.metric_approximate_number_of_messages_visible(period=period),
                threshold=1,
                evaluation_periods=1,
                alarm_description="KPI records could not be ingested",
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
        ]
