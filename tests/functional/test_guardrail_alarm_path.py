"""The cloud's second rollback path: guardrail metrics from the SQS batch path, a CloudWatch
alarm on them, and its "CloudWatch Alarm State Change" event back to the refinement function.

Everything the refinement function is given arrives as AWS delivers it: SQS batches of
KpiRecorded envelopes (the KPI queue), and the alarm's EventBridge event
(tests/events/cloudwatch_alarm_guardrail.json, AWS's documented shape). CloudWatch itself is
the only part played by the test: it reads the EMF lines the batch printed and, when one is
over the alarm's threshold (the deployment's margin), delivers the alarm event — twice, as
EventBridge may.
"""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from chimera.domain.errors import ValidationFailedError
from chimera.domain.events import KpiRecorded
from chimera.domain.guardrails import (
    ERROR_RATE_EXCESS,
    ERROR_RATE_EXCESS_BOUND,
    LATENCY_RATIO,
    NAMESPACE,
    SERVICE,
    alarm_thresholds,
)
from chimera.domain.models import (
    Alias,
    ExperimentStatus,
    Genome,
    KpiRecord,
    Verdict,
)
from chimera.domain.statistics import Moments, non_inferiority
from chimera.runtime import deps
from chimera.services.jobs import Fault
from live_agents import start_live_cartpole

AGENT = "cartpole-linear"
GOOD = (0.0, 0.5, 10.0, 2.0, 0.0)  # balances the pole for long
EVENTS = Path(__file__).resolve().parents[1] / "events"


# -- what AWS delivers -------------------------------------------------------------------------
def _sqs_batch(records: list[KpiRecord]) -> dict[str, Any]:
    """An SQS batch of the KPI queue: each body is a KpiRecorded event's EventBridge envelope."""
    messages = []
    for record in records:
        envelope = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "KpiRecorded",
            "source": "chimera",
            "account": "123456789012",
            "time": record.recorded_at.isoformat(),
            "region": "us-east-1",
            "resources": [],
            "detail": KpiRecorded(record=record).model_dump(mode="json"),
        }
        messages.append(
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": "AQEB" + uuid.uuid4().hex,
                "body": json.dumps(envelope),
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1795262400000",
                    "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                    "ApproximateFirstReceiveTimestamp": "1795262400123",
                },
                "messageAttributes": {},
                "md5OfBody": "0" * 32,
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:Chimera-EventsKpiQueue",
                "awsRegion": "us-east-1",
            }
        )
    return {"Records": messages}


def _alarm_event(state: str = "ALARM", event_id: str | None = None) -> dict[str, Any]:
    event = json.loads((EVENTS / "cloudwatch_alarm_guardrail.json").read_text())
    event["detail"]["state"]["value"] = state
    if event_id is not None:
        event["id"] = event_id
    return dict(event)


def _refinement(event: dict[str, Any]) -> Any:
    from chimera_local.workflows import handler_for

    return handler_for("refinement")(event)


def _emf(out: str) -> list[dict[str, Any]]:
    """The EMF lines (CloudWatch's embedded metric format) printed on stdout, each metric's
    values (a list in EMF) unwrapped: one value per experiment and line."""
    lines = []
    for line in out.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and "_aws" in doc:
            for metric in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                (doc[metric["Name"]],) = doc[metric["Name"]]
            lines.append(doc)
    return lines


def _events(home: Path, kind: str) -> list[dict[str, Any]]:
    path = home / "events.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e["detail-type"] == kind]


def _start(name: str, candidate: int, incumbent: int) -> dict[str, Any]:
    step = _refinement(
        {
            "action": "start_experiment",
            "execution_id": name,
            "agent_id": AGENT,
            "run_id": f"{name}-run",
            "candidate_version": candidate,
            "incumbent_version": incumbent,
            "config": deps().settings.canary().model_dump(mode="json"),
        }
    )
    return dict(step)


def _records(name: str, version: int, latencies: list[float], failed: set[int]) -> list[KpiRecord]:
    now = deps().clock.now()
    return [
        KpiRecord(
            agent_id=AGENT,
            genome_version=version,
            job_id=f"{name}-v{version}-{i}",
            suite="cartpole-v1",
            success=i not in failed,
            score=None if i in failed else 500.0,
            reason="trap: unreachable" if i in failed else None,
            latency_ms=ms,
            fuel=1000,
            recorded_at=now,
            experiment_id=name,
            step=0,
        )
        for i, ms in enumerate(latencies)
    ]


def _moments(xs: list[float]) -> Moments:
    a = np.asarray(xs, dtype=float)
    return Moments(n=len(a), mean=float(a.mean()), m2=float(((a - a.mean()) ** 2).sum()))


# -- the metrics -------------------------------------------------------------------------------
def test_an_sqs_batch_publishes_the_guardrails_of_its_experiment(
    home: Path, only_cartpole: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each batch prints one EMF line per running experiment it touched, with the values from
    the experiment's rollups: here checked against the raw records the batches carried. The
    latency ratio appears once both arms have the guardrail's min_samples; a batch of jobs no
    experiment routed prints nothing; the candidate within its margins is left running when
    the alarm nevertheless fires, delivered twice."""
    start_live_cartpole("setup")
    deps().store.add_genome(Genome(agent_id=AGENT, version=2, genes=GOOD))
    _start("sqs-canary", candidate=2, incumbent=1)
    guard = deps().store.get_experiment("sqs-canary").config.guardrails
    n = 60
    assert n >= guard.min_samples > n // 2
    inc_ms = [10.0 + i for i in range(n)]
    cand_ms = [10.5 + 1.02 * i for i in range(n)]  # within the latency margin
    inc_failed, cand_failed = {0, 20, 40}, {3, 9, 15, 45}  # 5 % against 6.7 %
    incumbent = _records("sqs-canary", 1, inc_ms, inc_failed)
    candidate = _records("sqs-canary", 2, cand_ms, cand_failed)
    capsys.readouterr()

    half = n // 2
    first = _refinement(_sqs_batch(incumbent[:half] + candidate[:half]))
    assert first == {"batchItemFailures": []}
    (line,) = _emf(capsys.readouterr().out)
    assert line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == NAMESPACE
    assert line["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    assert line["service"] == SERVICE and line["experiment_id"] == "sqs-canary"
    assert LATENCY_RATIO not in line  # fewer than min_samples jobs per arm yet
    assert line[ERROR_RATE_EXCESS] == pytest.approx(
        len({i for i in cand_failed if i < half}) / half
        - len({i for i in inc_failed if i < half}) / half,
        abs=1e-12,
    )

    _refinement(_sqs_batch(incumbent[half:] + candidate[half:]))
    (line,) = _emf(capsys.readouterr().out)
    names = {m["Name"] for m in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert names == {ERROR_RATE_EXCESS, ERROR_RATE_EXCESS_BOUND, LATENCY_RATIO}
    inc_err = [1.0 if i in inc_failed else 0.0 for i in range(n)]
    cand_err = [1.0 if i in cand_failed else 0.0 for i in range(n)]
    assert line[ERROR_RATE_EXCESS] == pytest.approx(4 / 60 - 3 / 60, abs=1e-12)
    config = deps().store.get_experiment("sqs-canary").config
    bound = non_inferiority(
        _moments(inc_err),
        _moments(cand_err),
        margin=guard.error_rate_margin,
        alpha=config.alpha,
        kind="proportion",
        higher_is_better=False,
    ).lower
    assert line[ERROR_RATE_EXCESS_BOUND] == pytest.approx(bound, rel=1e-9)
    ratio = np.percentile(cand_ms, 95) / np.percentile(inc_ms, 95)
    assert line[LATENCY_RATIO] == pytest.approx(ratio, rel=0.03)  # DDSketch: 1 % per quantile
    thresholds = alarm_thresholds(deps().settings.canary().guardrails)
    assert line[LATENCY_RATIO] < thresholds[LATENCY_RATIO]
    assert line[ERROR_RATE_EXCESS_BOUND] < thresholds[ERROR_RATE_EXCESS_BOUND]

    # Jobs no experiment routed: stored, and no metric.
    plain = [r.model_copy(update={"experiment_id": None, "step": None}) for r in incumbent]
    plain = [r.model_copy(update={"job_id": "plain-" + r.job_id}) for r in plain]
    assert _refinement(_sqs_batch(plain[:10])) == {"batchItemFailures": []}
    assert _emf(capsys.readouterr().out) == []

    # The alarm fires anyway (another experiment, a noisy minute): this one stays running.
    for _ in range(2):
        result = _refinement(_alarm_event())
        assert [c["action"] for c in result["checked"]] == ["left running"]
    exp = deps().store.get_experiment("sqs-canary")
    assert exp.status == ExperimentStatus.RUNNING
    assert deps().store.get_alias(AGENT).weights == {2: 0.2, 1: 0.8}  # type: ignore[union-attr]
    alarm = _alarm_event()["detail"]["alarmName"]
    (decision,) = deps().store.list_decisions(f"alarm:{alarm}")  # the second wrote nothing
    assert "1 running experiment(s) checked, 0 breaching" in decision.summary
    assert _events(home, "GenomeRolledBack") == []


def test_a_batch_whose_metrics_cannot_be_read_is_still_stored(
    home: Path,
    only_cartpole: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The metrics are read after the batch is stored: if the rollups cannot be read then
    (throttled), the batch still succeeds (its records are kept, SQS deletes them), no metric
    line is printed, and the failure is logged; the canary's next Analyze still judges."""
    from chimera.domain.errors import UnavailableError

    start_live_cartpole("setup")
    store = deps().store
    store.add_genome(Genome(agent_id=AGENT, version=2, genes=GOOD))
    _start("unread", candidate=2, incumbent=1)
    records = _records("unread", 1, [10.0] * 5, set()) + _records("unread", 2, [11.0] * 5, set())

    def throttled(experiment_id: str) -> Any:
        raise UnavailableError(f"rollups of {experiment_id}: throttled")

    monkeypatch.setattr(store, "experiment_rollups", throttled)
    capsys.readouterr()
    assert _refinement(_sqs_batch(records)) == {"batchItemFailures": []}
    assert _emf(capsys.readouterr().out) == []
    (logged,) = [r for r in caplog.records if r.getMessage() == "guardrail metrics not published"]
    assert logged.exc_info is not None and "throttled" in str(logged.exc_info[1])
    kept = {(k.genome_version, k.job_id) for k in store.list_kpis(AGENT)}
    assert {(r.genome_version, r.job_id) for r in records} <= kept


# -- the rollback path -------------------------------------------------------------------------
def test_a_guardrail_alarm_rolls_a_slow_canary_back_and_its_execution_ends(
    home: Path, only_cartpole: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A canary of a candidate whose jobs are 300 ms slower runs through the deployed ASL. In
    its first bake the traffic generator drives live jobs; their KpiRecorded events reach the
    refinement function as SQS batches, whose EMF lines show the latency ratio over the
    alarm's threshold; CloudWatch's alarm event then arrives, twice. The alias is back on the
    incumbent with one GenomeRolledBack and one ExperimentConcluded, and the execution, at its
    next Analyze, finds the experiment stopped and ends in Concluded (no RollBack, no Abort)."""
    from chimera_local.traffic import drive
    from chimera_local.workflows import local_executor, state_machine_arn

    start_live_cartpole("setup")
    store = deps().store
    store.add_genome(Genome(agent_id=AGENT, version=2, genes=GOOD))
    alias = store.get_alias(AGENT)
    assert alias is not None
    store.set_alias(Alias(agent_id=AGENT, weights={2: 1.0}, revision=alias.revision + 1))
    store.add_genome(Genome(agent_id=AGENT, version=3, genes=GOOD, parent_version=2))
    thresholds = alarm_thresholds(deps().settings.canary().guardrails)
    seen: list[dict[str, Any]] = []
    alarm_results: list[dict[str, Any]] = []

    def bake(seconds: float) -> None:
        """The first Wait: jobs flow, CloudWatch reads their metrics and the alarm fires."""
        if alarm_results:
            deps().clock.advance(seconds)
            return
        before = len(_events(home, "KpiRecorded"))
        drive(deps(), AGENT, jobs=400, rate=400 / seconds, fault=Fault(slow={3: 300.0}))
        records = [
            KpiRecord.model_validate(e["detail"]["record"])
            for e in _events(home, "KpiRecorded")[before:]
        ]
        assert {r.experiment_id for r in records} == {"canary-alarm"}
        for i in range(0, len(records), 100):  # the event source's batch size
            assert _refinement(_sqs_batch(records[i : i + 100])) == {"batchItemFailures": []}
        seen.extend(_emf(capsys.readouterr().out))
        ratio = seen[-1][LATENCY_RATIO]
        assert ratio > thresholds[LATENCY_RATIO]  # CloudWatch: OK -> ALARM
        alarm_results.append(_refinement(_alarm_event(event_id="e-1")))
        alarm_results.append(_refinement(_alarm_event(event_id="e-1")))  # delivered twice

    states: list[str] = []
    executor = local_executor(on_state=lambda execution, state, data: states.append(state))
    executor.sleep = bake
    config = deps().settings.canary().model_dump(mode="json")
    executor.start(
        state_machine_arn("canary-rollout"),
        {
            "agent_id": AGENT,
            "run_id": "alarm-run",
            "candidate_version": 3,
            "incumbent_version": 2,
            "config": config,
        },
        name="canary-alarm",
    )

    first, second = alarm_results
    (check,) = first["checked"]
    alarm = first["alarm"]
    assert check["experiment_id"] == "canary-alarm" and check["action"] == "stopped"
    assert check["metrics"][LATENCY_RATIO] > thresholds[LATENCY_RATIO]
    assert second["checked"] == []  # nothing running any more
    exp = store.get_experiment("canary-alarm")
    assert exp.status == ExperimentStatus.STOPPED and exp.verdict == Verdict.ROLLED_BACK
    assert (exp.reason or "").startswith(f"alarm {alarm}: guardrail: latency p95")
    assert store.get_alias(AGENT).weights == {2: 1.0}  # type: ignore[union-attr]
    back = _events(home, "GenomeRolledBack")
    assert [(e["detail"]["from_version"], e["detail"]["to_version"]) for e in back] == [(3, 2)]
    concluded = _events(home, "ExperimentConcluded")
    assert [e["detail"]["verdict"] for e in concluded] == ["rolled-back"]
    assert alarm in concluded[0]["detail"]["reason"]

    history = executor.history("canary-alarm")
    assert history.status == "SUCCEEDED"
    assert states[-3:] == ["Analyze", "Decide", "Concluded"], states
    assert "RollBack" not in states and "Abort" not in states
    decisions = [d.summary for d in store.list_decisions("canary-alarm")]
    assert any("stopped: rolled-back" in s and alarm in s for s in decisions), decisions
    (summary,) = store.list_decisions(f"alarm:{alarm}")
    assert "1 breaching" in summary.summary and "canary-alarm" in summary.summary
    assert _emf(capsys.readouterr().out) == []  # the state machine's tasks publish nothing


def test_an_analysis_racing_the_alarm_ends_the_execution_cleanly(
    home: Path, only_cartpole: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The alarm's stop lands between an Analyze's read and its write: the analysis's write is
    refused (the experiment's revision moved) and it answers `stopped`, as if it had read the
    stop first, instead of failing into the Abort path."""
    from chimera_local.traffic import drive

    start_live_cartpole("setup")
    store = deps().store
    store.add_genome(Genome(agent_id=AGENT, version=2, genes=GOOD))
    step = _start("race", candidate=2, incumbent=1)
    drive(deps(), AGENT, jobs=400, rate=400 / step["bake_s"], fault=Fault(slow={2: 300.0}))
    save = store.save_experiment
    calls: list[Any] = []

    def alarm_first(*args: Any, **kwargs: Any) -> Any:
        if not calls:
            calls.append(None)
            calls[0] = _refinement(_alarm_event())  # the concurrent delivery
        return save(*args, **kwargs)

    monkeypatch.setattr(store, "save_experiment", alarm_first)
    analyze = {
        "action": "analyze",
        "execution_id": "race",
        "experiment_id": "race",
        "step": step["step"],
        "bake": step["bake"],
    }
    answer = _refinement(analyze)
    assert calls and calls[0]["checked"][0]["action"] == "stopped"
    assert answer["decision"] == "stopped", answer
    assert answer["reason"].startswith("alarm ")
    assert store.list_experiment_points("race") == []  # the analysis wrote nothing
    assert _refinement(analyze) == answer  # and a retry answers the same
    assert len(_events(home, "GenomeRolledBack")) == 1


def test_a_shift_racing_a_stop_ends_the_execution_cleanly(
    home: Path, only_cartpole: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same race at ShiftWeight: the stop lands between its read and its write, the
    shift's write is refused and it answers `stopped` (not Abort); a retry answers the same."""
    from chimera.services import experiments

    start_live_cartpole("setup")
    store = deps().store
    store.add_genome(Genome(agent_id=AGENT, version=2, genes=GOOD))
    step = _start("race-shift", candidate=2, incumbent=1)
    save = store.save_experiment
    stopped: list[Any] = []

    def stop_first(*args: Any, **kwargs: Any) -> Any:
        if not stopped:
            stopped.append(None)  # the stop's own save goes straight through
            stopped[0] = experiments.stop(deps(), "race-shift", "operator", "op")
        return save(*args, **kwargs)

    monkeypatch.setattr(store, "save_experiment", stop_first)
    shift = {"action": "shift", "execution_id": "race-shift", "experiment_id": "race-shift"}
    shift |= {"step": step["step"]}
    answer = _refinement(shift)
    assert stopped and answer["decision"] == "stopped", answer
    assert store.get_alias(AGENT).weights == {1: 1.0}  # type: ignore[union-attr]
    assert _refinement(shift) == answer
    assert len(_events(home, "GenomeRolledBack")) == 1


# -- bad events --------------------------------------------------------------------------------
def _without(event: dict[str, Any], *path: str) -> dict[str, Any]:
    event = copy.deepcopy(event)
    node = event
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return event


def _on_cpu(event: dict[str, Any]) -> dict[str, Any]:
    """The same alarm, but on another service's metric."""
    event = copy.deepcopy(event)
    metric = {"name": "CPUUtilization", "namespace": "AWS/EC2", "dimensions": {}}
    event["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"] = metric
    return event


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda e: _without(e, "detail", "alarmName"), "detail.alarmName"),
        (lambda e: _without(e, "detail", "state"), "detail.state"),
        (lambda e: e | {"detail-type": "EC2 Instance State-change Notification"}, "detail-type"),
        (
            _on_cpu,
            "detail.configuration",
        ),
    ],
)
def test_a_bad_alarm_event_is_refused_naming_the_field(home: Path, change: Any, field: str) -> None:
    with pytest.raises(ValidationFailedError, match=field.replace(".", r"\.")):
        _refinement(change(_alarm_event()))
    assert deps().store.list_experiments() == []


def test_an_alarm_back_to_ok_changes_nothing(home: Path) -> None:
    assert _refinement(_alarm_event("OK"))["checked"] == []
    alarm = _alarm_event()["detail"]["alarmName"]
    assert deps().store.list_decisions(f"alarm:{alarm}") == []
