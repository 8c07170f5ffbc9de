"""Layer 8's price of a predictor-training job (chimera.domain.prices.training_cost) and the
shape it counts from the deployed file (resources.TRAINING_SHAPE)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chimera.domain.errors import ValidationFailedError
from chimera.domain.prices import TrainingWork, flow_shape, load_prices, training_cost
from chimera.services.resources import DEFAULT_EPOCHS, TRAINING_FACTS, TRAINING_SHAPE

ASL = json.loads(
    (Path(__file__).resolve().parents[2] / "statemachines/predictor-training.asl.json").read_text()
)
TABLE = load_prices()
WORK = TrainingWork(rows=480, epochs=60, seconds_per_row_epoch=1e-4, max_runtime_s=3600)


def test_the_shape_is_counted_from_the_file_on_both_paths():
    assert flow_shape(ASL, facts=TRAINING_FACTS) == TRAINING_SHAPE
    # The failure path (Train's Catch: SettleFailedTraining, RecordFailure, Failed) is as long.
    failing = json.loads(json.dumps(ASL))
    train = failing["States"]["Train"]
    train["Next"] = train["Catch"][0]["Next"]
    assert train["Next"] == "SettleFailedTraining"
    assert flow_shape(failing, facts=TRAINING_FACTS) == TRAINING_SHAPE
    # Refused by the budget: no job.
    refused = flow_shape(ASL, facts={**TRAINING_FACTS, "$.reservation.reserved": False})
    assert refused.segment_jobs == 0 and refused.per_segment < TRAINING_SHAPE.per_segment


def test_the_default_epochs_are_the_trainers():
    train = pytest.importorskip("gpu_jobs.predictor.train")
    assert train.DEFAULTS["epochs"] == DEFAULT_EPOCHS


def test_estimate_actual_and_cap():
    spot = TABLE.instance("sagemaker-spot")
    usd_s = spot.usd_per_hour / 3600
    estimate = training_cost(TABLE, "sagemaker-spot", WORK, TRAINING_SHAPE)
    run_s = spot.startup_s + 480 * 60 * 1e-4
    assert estimate.compute_usd - run_s * usd_s == pytest.approx(
        4 * 0.1 * 1769 / 1024 * TABLE.lambda_.usd_per_gb_second["x86_64"]
    )
    assert estimate.rework_usd > 0 and estimate.jobs == 1 and estimate.transitions == 8
    # The actual is the billable seconds, whatever rows and epochs said; no re-work on top.
    actual = training_cost(
        TABLE, "sagemaker-spot", WORK.model_copy(update={"billable_s": 10.0}), TRAINING_SHAPE
    )
    orchestration = estimate.usd - run_s * usd_s - estimate.rework_usd
    assert actual.rework_usd == 0
    assert actual.usd == pytest.approx(10 * usd_s + orchestration)
    # A job is stopped at MaxRuntimeInSeconds: the estimate never prices more.
    huge = WORK.model_copy(update={"rows": 10_000_000, "epochs": 1000})
    capped = training_cost(TABLE, "sagemaker-spot", huge, TRAINING_SHAPE)
    worst = training_cost(
        TABLE, "sagemaker-spot", WORK.model_copy(update={"billable_s": 3600.0}), TRAINING_SHAPE
    )
    assert capped.usd == pytest.approx(worst.usd) and capped.rework_usd == 0


def test_refusals_name_the_field():
    with pytest.raises(ValidationFailedError) as batch:
        training_cost(TABLE, "batch-gpu-spot", WORK, TRAINING_SHAPE)
    assert batch.value.field == "placement"
    with pytest.raises(ValidationFailedError) as unknown:
        training_cost(TABLE, "sagemaker-p5", WORK, TRAINING_SHAPE)
    assert unknown.value.field == "placement"
    with pytest.raises(ValidationFailedError) as arch:
        training_cost(TABLE, "sagemaker-spot", WORK, TRAINING_SHAPE, architecture="mips")
    assert arch.value.field == "lambda_architecture"
