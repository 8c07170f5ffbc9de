"""The guardrail alarms in the synthesized template: their metrics are the ones the refinement
function prints (namespace, name, its service dimension), their thresholds the margins its own
environment gives it, and their ALARM state changes reach it through a rule it is permitted to
be invoked by. The sample alarm event the functional tests deliver matches that rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from chimera.domain.guardrails import ALARMED, LATENCY_RATIO, METRICS, NAMESPACE, alarm_thresholds
from chimera.settings import load_settings

pytestmark = pytest.mark.infra

SAMPLE = Path(__file__).resolve().parents[1] / "events" / "cloudwatch_alarm_guardrail.json"


def _refinement(synthesized: Any) -> tuple[str, dict[str, Any]]:
    fn = synthesized.stack.node.find_child("Functions").by_name["Refinement"]
    logical = synthesized.logical_id(fn)
    return logical, synthesized.resources[logical]["Properties"]


def _alarms(synthesized: Any) -> dict[str, dict[str, Any]]:
    alarms = synthesized.template.find_resources(
        "AWS::CloudWatch::Alarm", {"Properties": {"Namespace": NAMESPACE}}
    )
    return {a["Properties"]["MetricName"]: {"id": k, **a["Properties"]} for k, a in alarms.items()}


def _rule(synthesized: Any) -> tuple[str, dict[str, Any]]:
    rules = synthesized.template.find_resources(
        "AWS::Events::Rule", {"Properties": {"EventPattern": {"source": ["aws.cloudwatch"]}}}
    )
    ((logical, rule),) = rules.items()
    return logical, rule["Properties"]


def test_one_alarm_per_guardrail_on_the_published_metric_at_the_deployed_margin(synthesized):
    _, props = _refinement(synthesized)
    variables = props["Environment"]["Variables"]
    # The settings the deployed function reads (tokens stand in for the resource names).
    env = {k: v if isinstance(v, str) else "resolved-at-deploy" for k, v in variables.items()}
    thresholds = alarm_thresholds(load_settings(env).canary().guardrails)
    alarms = _alarms(synthesized)
    assert set(alarms) == set(ALARMED) and set(ALARMED) < set(METRICS)
    for name, alarm in alarms.items():
        assert alarm["Threshold"] == thresholds[name]
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
        assert alarm["Statistic"] == "Maximum"  # the worst running experiment
        assert alarm["TreatMissingData"] == "notBreaching"  # no canary running
        assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == 1
        # Powertools' `service` dimension is the function's POWERTOOLS_SERVICE_NAME.
        assert alarm["Dimensions"] == [
            {"Name": "service", "Value": variables["POWERTOOLS_SERVICE_NAME"]}
        ]
    assert thresholds[LATENCY_RATIO] == 1.5  # the default margin, 50 % over the incumbent


def test_the_alarms_state_changes_invoke_the_refinement_function(synthesized):
    refinement, _ = _refinement(synthesized)
    logical, rule = _rule(synthesized)
    pattern = rule["EventPattern"]
    assert "EventBusName" not in rule  # the default bus, where CloudWatch puts alarm events
    assert pattern["detail-type"] == ["CloudWatch Alarm State Change"]
    assert pattern["detail"]["state"] == {"value": ["ALARM"]}
    names = sorted(json.dumps(n) for n in pattern["detail"]["alarmName"])
    assert names == sorted(json.dumps({"Ref": a["id"]}) for a in _alarms(synthesized).values())
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [refinement, "Arn"]}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    permissions = synthesized.template.find_resources(
        "AWS::Lambda::Permission",
        {"Properties": {"SourceArn": {"Fn::GetAtt": [logical, "Arn"]}}},
    )
    ((_, permission),) = permissions.items()
    assert permission["Properties"] == {
        "Action": "lambda:InvokeFunction",
        "FunctionName": {"Fn::GetAtt": [refinement, "Arn"]},
        "Principal": "events.amazonaws.com",
        "SourceArn": {"Fn::GetAtt": [logical, "Arn"]},
    }


def test_the_refinement_role_gets_no_metrics_api(synthesized):
    """EMF metrics are log lines: the function needs no cloudwatch:PutMetricData."""
    text = json.dumps(synthesized.template.find_resources("AWS::IAM::Policy"))
    assert "cloudwatch:" not in text


def test_the_sample_alarm_event_matches_the_rule(synthesized):
    _, rule = _rule(synthesized)
    pattern = rule["EventPattern"]
    sample = json.loads(SAMPLE.read_text())
    assert sample["source"] in pattern["source"]
    assert sample["detail-type"] in pattern["detail-type"]
    assert sample["detail"]["state"]["value"] in pattern["detail"]["state"]["value"]
    (query,) = sample["detail"]["configuration"]["metrics"]
    metric = query["metricStat"]["metric"]
    alarm = _alarms(synthesized)[metric["name"]]
    assert metric["namespace"] == alarm["Namespace"]
    assert [{"Name": k, "Value": v} for k, v in metric["dimensions"].items()] == alarm["Dimensions"]
    assert query["metricStat"]["period"] == alarm["Period"]
    assert query["metricStat"]["stat"] == alarm["Statistic"]


def test_the_dashboard_shows_the_guardrails_and_the_canaries(synthesized):
    dashboards = synthesized.template.find_resources("AWS::CloudWatch::Dashboard")
    body = json.dumps(dashboards)
    for name in METRICS:
        assert name in body
    assert "Canary rollouts" in body and "Guardrail alarms" in body
    alarms = synthesized.template.find_resources(
        "AWS::CloudWatch::Alarm", {"Properties": {"MetricName": "ExecutionsFailed"}}
    )
    canary = synthesized.logical_id(synthesized.stack.node.find_child("Workflows").canary_rollout)
    assert any(canary in json.dumps(a["Properties"]["Dimensions"]) for a in alarms.values())
