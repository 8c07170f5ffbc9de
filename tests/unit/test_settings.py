"""Settings: a discriminated model whose required fields fail at start-up, naming the variable."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from chimera.domain.errors import ValidationFailedError
from chimera.settings import AwsSettings, LocalSettings, load_settings

AWS = {
    "CHIMERA_BACKEND": "aws",
    "CHIMERA_TABLE_NAME": "t",
    "CHIMERA_BUS_NAME": "b",
    "CHIMERA_BUNDLE_BUCKET": "bundles",
    "CHIMERA_ARTIFACT_BUCKET": "artifacts",
}


def test_local_is_the_default():
    settings = load_settings({})
    assert isinstance(settings, LocalSettings) and settings.home == Path(".chimera")


def test_aws_reads_its_fields():
    settings = load_settings({**AWS, "CHIMERA_EVALUATOR_MEMORY_MB": "2048"})
    assert isinstance(settings, AwsSettings) and settings.evaluator_memory_mb == 2048


@pytest.mark.parametrize("missing", sorted(k for k in AWS if k != "CHIMERA_BACKEND"))
def test_a_missing_aws_field_is_named(missing):
    env = {k: v for k, v in AWS.items() if k != missing}
    with pytest.raises(ValidationFailedError) as err:
        load_settings(env)
    assert err.value.field == missing


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"CHIMERA_BACKEND": "gcp"}, "CHIMERA_BACKEND"),
        ({"CHIMERA_BUDGET_USD": "-1"}, "CHIMERA_BUDGET_USD"),
        ({**AWS, "CHIMERA_EVALUATOR_ARCHITECTURE": "sparc"}, "CHIMERA_EVALUATOR_ARCHITECTURE"),
    ],
)
def test_bad_values_are_named(env, field):
    with pytest.raises(ValidationFailedError) as err:
        load_settings(env)
    assert err.value.field == field


def test_the_canary_reads_its_analysis_from_the_environment():
    canary = load_settings({"CHIMERA_CANARY_ANALYSIS": "sprt", "CHIMERA_CANARY_POWER": "0.9"})
    config = canary.canary(margin=5.0)
    assert (config.analysis, config.power) == ("sprt", 0.9)
    assert config.sprt_hypotheses() == (-5.0, 0.0)  # worse by the margin against no worse
    lower = config.model_copy(update={"higher_is_better": False, "mde": 2.0})
    assert lower.sprt_hypotheses() == (5.0, 3.0)


def test_an_sprt_canary_needs_power_above_alpha_and_an_effect():
    sprt = {"CHIMERA_CANARY_ANALYSIS": "sprt"}
    with pytest.raises(ValidationFailedError) as err:
        load_settings({**sprt, "CHIMERA_CANARY_POWER": "0.01"}).canary(margin=1.0)
    assert err.value.field == "CHIMERA_CANARY_POWER"
    with pytest.raises(ValidationFailedError) as err:
        load_settings(sprt).canary(margin=0.0)  # a suite without a margin plans no effect
    assert err.value.field == "mde"
    with pytest.raises(ValidationFailedError) as err:
        load_settings(sprt).canary(margin=-1.0)
    assert err.value.field == "margin"


def test_the_lambda_package_never_imports_the_local_backend():
    """chimera_local is not shipped: only runtime's local branch may name it, lazily."""
    root = Path(__file__).resolve().parents[2] / "layers_shared" / "chimera"
    offenders = []
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n.split(".")[0] == "chimera_local" for n in names):
                lazy = path.name == "runtime.py" and node.col_offset > 0
                if not lazy:
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []


def test_kpi_times_are_kept_in_utc():
    from datetime import UTC, datetime, timedelta, timezone

    from chimera.domain.models import KpiRecord

    base = dict(agent_id="a", genome_version=1, job_id="j", suite="s", success=False)
    base |= {"reason": "r", "latency_ms": 1.0, "fuel": 0}
    naive = KpiRecord(**base, recorded_at=datetime(2026, 11, 21, 12, 0))
    east = KpiRecord(
        **base, recorded_at=datetime(2026, 11, 21, 17, 0, tzinfo=timezone(timedelta(hours=5)))
    )
    assert naive.recorded_at == east.recorded_at == datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    assert naive.recorded_at.utcoffset() == east.recorded_at.utcoffset() == timedelta(0)
