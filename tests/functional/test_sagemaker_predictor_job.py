"""`job=predictor` as SageMaker runs it: `python -m gpu_jobs.sagemaker.train train` in a
subprocess, the container's `/opt/ml` laid out under a temporary root (CHIMERA_SM_ROOT):
hyperparameters.json (strings), inputdataconfig.json naming the `training` channel, its data in
input/data/training/, the model and checkpoint dirs.

* Good data: exit 0, model.json (that `parse_model` reads) and metrics.json in the model dir
  (SageMaker tars it into model.tar.gz), the hyperparameters applied (the hidden layer's width).
* A second attempt on the same checkpoint dir (a spot restart after the training finished)
  does not train again and still leaves the same model in a fresh model dir.
* Bad input exits 2 with the field named in output/failure (DescribeTrainingJob's
  FailureReason): no training channel, an empty one, an unknown or a malformed hyperparameter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from chimera.domain.predictor import parse_model

from gpu_jobs.predictor.dataset import write_rows

REPO = Path(__file__).resolve().parents[2]


def _rows(n_runs: int = 4, per_run: int = 40) -> list[dict]:
    """A history whose fitness is a smooth function of three genes (learnable)."""
    rng = np.random.default_rng(7)
    rows = []
    for r in range(n_runs):
        for i in range(per_run):
            genes = rng.uniform(-1, 1, 3)
            fitness = 100 + 40 * genes[0] - 25 * genes[1] ** 2 + 10 * genes[2]
            rows.append(
                {
                    "agent_id": "synthetic",
                    "suite": "cartpole-v1",
                    "run_id": f"run-{r}",
                    "generation": i // 8,
                    "genes": [float(g) for g in genes],
                    "fitness": float(fitness),
                    "kpis": {},
                }
            )
    return rows


def _layout(root: Path, hyperparameters: dict[str, str], channels: dict[str, list[dict]]) -> None:
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "inputdataconfig.json").write_text(
        json.dumps({c: {"TrainingInputMode": "File"} for c in channels})
    )
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]})
    )
    for name, rows in channels.items():
        target = root / "input" / "data" / name
        target.mkdir(parents=True, exist_ok=True)
        if rows:
            write_rows(rows, target)


def _run(root: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env |= {"CHIMERA_SM_ROOT": str(root), "SM_NUM_GPUS": "0"}
    return subprocess.run(
        [sys.executable, "-m", "gpu_jobs.sagemaker.train", "train"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_trains_the_predictor_into_the_model_dir_and_resumes_without_retraining(tmp_path):
    root = tmp_path / "opt-ml"
    _layout(root, {"job": "predictor", "epochs": "40", "hidden": "16"}, {"training": _rows()})
    done = _run(root)
    assert done.returncode == 0, done.stderr
    model = parse_model((root / "model" / "model.json").read_bytes())
    assert [len(layer.bias) for layer in model.layers] == [16, 1]
    assert model.agent_id == "synthetic" and model.suite == "cartpole-v1" and len(model.genes) == 3
    metrics = json.loads((root / "model" / "metrics.json").read_text())
    assert metrics["rows"] == 160 and metrics["runs"] == 4 and metrics["split"] == "runs"
    assert model.metrics is not None and model.metrics.r2[0] == metrics["r2"][0]
    assert metrics["r2"][0] > 0.5  # the function is smooth: a working trainer learns it
    summary = json.loads((root / "model" / "summary.json").read_text())
    assert summary["job"] == "predictor" and summary["device"] == "cpu"
    assert summary["attempts"] == 1 and summary["result"]["r2"] == metrics["r2"]
    first = (root / "model" / "model.json").read_bytes()

    # A restarted container: a fresh model dir, the checkpoint dir synced back. The data is
    # gone from the channel, so training again would fail: the result is taken as done.
    shutil.rmtree(root / "model")
    shutil.rmtree(root / "input" / "data" / "training")
    _layout(root, {"job": "predictor", "epochs": "40", "hidden": "16"}, {"training": _rows()[:5]})
    again = _run(root)
    assert again.returncode == 0, again.stderr
    assert (root / "model" / "model.json").read_bytes() == first
    assert json.loads((root / "model" / "summary.json").read_text())["attempts"] == 2


@pytest.mark.parametrize(
    ("hyperparameters", "channels", "field"),
    [
        ({"job": "predictor"}, {}, "channels.training"),
        ({"job": "predictor"}, {"validation": _rows()}, "channels.training"),
        ({"job": "predictor"}, {"training": []}, "channels.training"),
        ({"job": "predictor", "epoch": "3"}, {"training": _rows()}, "hyperparameters.epoch"),
        ({"job": "predictor", "epochs": "many"}, {"training": _rows()}, "hyperparameters.epochs"),
        ({"job": "predictor", "hidden": "0"}, {"training": _rows()}, "hyperparameters.hidden"),
        ({"job": "predictors"}, {"training": _rows()}, "hyperparameters.job"),
    ],
)
def test_bad_input_fails_the_job_naming_the_field(tmp_path, hyperparameters, channels, field):
    root = tmp_path / "opt-ml"
    _layout(root, hyperparameters, channels)
    done = _run(root)
    assert done.returncode == 2, done.stderr
    failure = (root / "output" / "failure").read_text()
    assert failure.startswith(f"ValidationFailedError: {field}:"), failure
    assert not (root / "model" / "model.json").exists()
