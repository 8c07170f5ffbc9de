"""The refinement function's input from CloudWatch: an alarm's state change, through EventBridge.

AWS documents the shape ("CloudWatch Alarm State Change", source `aws.cloudwatch`, on the
account's default bus; `tests/events/cloudwatch_alarm_guardrail.json` is a sample). Parsed at
the edge: only what the rollback path reads is required, the rest of AWS's fields are kept.
"""

from __future__ import annotations

from typing import Literal

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import BaseModel, ConfigDict, Field, field_validator

from chimera.domain.guardrails import METRICS, NAMESPACE
from chimera.domain.models import Name, Text

ALARM_SOURCE = "aws.cloudwatch"
ALARM_DETAIL_TYPE = "CloudWatch Alarm State Change"


class _Aws(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class AlarmState(_Aws):
    value: Literal["OK", "ALARM", "INSUFFICIENT_DATA"]
    reason: Text = Field(default="", max_length=4000)
    timestamp: str | None = None


class AlarmMetric(_Aws):
    name: str
    namespace: str
    dimensions: dict[str, str] = {}


class AlarmMetricStat(_Aws):
    metric: AlarmMetric


class AlarmMetricQuery(_Aws):
    id: str
    metric_stat: AlarmMetricStat | None = Field(default=None, alias="metricStat")


class AlarmConfiguration(_Aws):
    description: str | None = None
    metrics: list[AlarmMetricQuery] = Field(default=[], max_length=20)


class AlarmDetail(_Aws):
    alarm_name: Name = Field(alias="alarmName")
    state: AlarmState
    previous_state: AlarmState | None = Field(default=None, alias="previousState")
    configuration: AlarmConfiguration

    @field_validator("configuration")
    @classmethod
    def _watches_a_guardrail(cls, configuration: AlarmConfiguration) -> AlarmConfiguration:
        """Only an alarm on a guardrail metric triggers the rollback path."""
        watched = [
            q.metric_stat.metric
            for q in configuration.metrics
            if q.metric_stat is not None
            and q.metric_stat.metric.namespace == NAMESPACE
            and q.metric_stat.metric.name in METRICS
        ]
        if not watched:
            raise ValueError(f"metrics: the alarm watches no {NAMESPACE} guardrail metric")
        return configuration


class AlarmStateChange(EventBridgeModel):
    source: Literal["aws.cloudwatch"]
    detail_type: Literal["CloudWatch Alarm State Change"] = Field(alias="detail-type")
    detail: AlarmDetail  # type: ignore[assignment]


class AlarmCheck(BaseModel):
    """What the rollback path did with one running experiment."""

    experiment_id: str
    agent_id: str
    action: Literal["stopped", "concluded", "left running"]
    reason: str
    metrics: dict[str, float] = {}


class AlarmResult(BaseModel):
    alarm: str
    state: str
    checked: list[AlarmCheck] = []
