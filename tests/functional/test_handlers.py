"""Handlers at the edge: bad input names the field and stores nothing; predict emits a KPI."""

from __future__ import annotations

import json

import pytest
from chimera.domain.errors import ValidationFailedError
from chimera.runtime import deps

from chimera_local.workflows import handler_for


@pytest.fixture
def bootstrapped(home, only_cartpole):
    handler_for("discovery")({"action": "discover", "execution_id": "e"})
    handler_for("validation")(
        {"action": "validate", "execution_id": "e", "agent_id": "cartpole-linear"}
    )
    choice = handler_for("meta_evolution")(
        {"action": "choose", "execution_id": "e", "agent_id": "cartpole-linear"}
    )
    handler_for("evolution")(
        {"action": "start", "execution_id": "e", "agent_id": "cartpole-linear", "choice": choice}
    )
    return deps().store


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"action": "predict", "agent_id": "cartpole-linear", "job_id": "j"}, "observation"),
        (
            {"action": "predict", "agent_id": "Bad Id!", "job_id": "j", "observation": [0.0]},
            "agent_id",
        ),
        (
            {
                "action": "predict",
                "agent_id": "cartpole-linear",
                "job_id": "j",
                "observation": [0.0, 0.0],
            },
            "observation",
        ),
        ({"action": "teleport"}, "action"),
        (
            {
                "action": "evaluate",
                "run_id": "r",
                "generation": -1,
                "shard": 0,
                "start": 0,
                "stop": 1,
            },
            "generation",
        ),
    ],
)
def test_bad_input_names_the_field_and_stores_nothing(bootstrapped, event, field):
    before = bootstrapped.list_kpis("cartpole-linear")
    with pytest.raises(ValidationFailedError) as err:
        handler_for("execution")(event)
    assert err.value.field == field
    assert bootstrapped.list_kpis("cartpole-linear") == before


def test_predict_routes_by_alias_and_records_a_kpi(bootstrapped):
    answer = handler_for("execution")(
        {
            "action": "predict",
            "agent_id": "cartpole-linear",
            "job_id": "job-1",
            "observation": [0, 0, 0.1, 0],
        }
    )
    assert answer["genome_version"] == 1 and answer["output"] == {"output": 0.0}
    # KpiRecorded went over the local bus to layer 5, which stored it once.
    (kpi,) = bootstrapped.list_kpis("cartpole-linear")
    assert kpi.job_id == "job-1" and kpi.success and kpi.fuel > 0
    handler_for("execution")(
        {
            "action": "predict",
            "agent_id": "cartpole-linear",
            "job_id": "job-1",
            "observation": [0, 0, 0.1, 0],
        }
    )
    assert len(bootstrapped.list_kpis("cartpole-linear")) == 1  # idempotent by job id


def test_bad_manifest_is_rejected_with_its_field(home, only_cartpole):
    bad = only_cartpole / "broken"
    bad.mkdir()
    (bad / "manifest.json").write_text(
        '{"agent_id": "broken", "suite": "cartpole-v1", '
        '"obs_len": 4, "genome": [{"name": "a", "low": 1, "high": 0}]}'
    )
    out = handler_for("discovery")({"action": "discover", "execution_id": "e"})
    assert out["agents"] == ["cartpole-linear"]
    assert out["rejected"][0]["bundle"] == "broken"
    assert out["rejected"][0]["error"].startswith("manifest.genome.0")


def test_kpis_from_sqs_report_partial_batch_failures(bootstrapped, repo):
    """EventBridge envelopes inside an SQS batch: bad ones fail alone, duplicates are no-ops.
    (KPIs are of a known agent and genome version: bootstrapped makes cartpole-linear v1.)"""
    batch = json.loads((repo / "tests" / "events" / "sqs_kpi_batch.json").read_text())
    answer = handler_for("refinement")(batch)
    assert answer == {
        "batchItemFailures": [
            {"itemIdentifier": "2e1424d4-f796-459a-8184-9c92662be6da"},
            {"itemIdentifier": "8f2c3b1e-5d6a-4f7b-9c0d-1e2f3a4b5c6d"},
        ]
    }
    assert [k.job_id for k in deps().store.list_kpis("cartpole-linear")] == ["job-42"]
