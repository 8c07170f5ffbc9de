"""The predictor's training path as it runs: history stored by real evolution runs (driven task
by task through the handlers, as the state machines call them) → the exporter → the training
entrypoint in a subprocess, standalone and under SageMaker's conventions → a model that
Layer 7's numpy code reads from the blob store and screens with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from chimera import runtime
from chimera.domain.predictor import blob_key, parse_model, prescreen
from chimera.runtime import deps

from chimera_local.workflows import handler_for
from gpu_jobs.predictor.dataset import export_history, load_dataset

AGENT = "cartpole-linear"
REPO = Path(__file__).resolve().parents[2]


def _call(package: str, event: dict[str, Any]) -> dict[str, Any]:
    return handler_for(package)(json.loads(json.dumps(event)))


def _run(execution_id: str, generations: int) -> str:
    ex = {"execution_id": execution_id}
    choice = _call("meta_evolution", {"action": "choose", **ex, "agent_id": AGENT})
    choice |= {"population_size": 8, "max_generations": generations}
    run_id = _call("evolution", {"action": "start", **ex, "agent_id": AGENT, "choice": choice})[
        "run_id"
    ]
    proceed = True
    while proceed:
        asked = _call("evolution", {"action": "ask", **ex, "run_id": run_id})
        for shard in asked["shards"]:
            _call("execution", {"action": "evaluate", **shard})
        gen = asked["generation"]
        _call("evolution", {"action": "tell", **ex, "run_id": run_id, "generation": gen})
        proceed = _call("meta_evolution", {"action": "adapt", **ex, "run_id": run_id})["proceed"]
    _call("evolution", {"action": "finish", **ex, "run_id": run_id, "reason": "history"})
    return run_id


def _train(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpu_jobs.predictor.train", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def history(home, only_cartpole, tmp_path) -> tuple[Any, list[str], Path]:
    runtime.deps.cache_clear()
    _call("discovery", {"action": "discover", "execution_id": "h0"})
    assert _call("validation", {"action": "validate", "execution_id": "h0", "agent_id": AGENT})[
        "ok"
    ]
    runs = [_run(f"h{i}", generations=3) for i in range(3)]
    return deps(), runs, tmp_path


def test_history_exports_trains_and_screens(history):
    ports, runs, tmp = history
    data_dir, model_dir = tmp / "data", tmp / "model"
    rows = export_history(ports.store, AGENT, data_dir)
    # Every evaluated candidate of every told generation, as stored, and nothing else.
    stored = [
        (run_id, n, ind)
        for run_id in runs
        for n in range(ports.store.get_run(run_id).generation)
        for ind in ports.store.get_generation(run_id, n).individuals
        if ind.fitness is not None
    ]
    assert rows == len(stored) == 3 * 3 * 8
    lines = [json.loads(x) for x in (data_dir / "history.jsonl").read_text().splitlines()]
    assert [(x["run_id"], x["generation"], tuple(x["genes"]), x["fitness"]) for x in lines] == [
        (r, n, ind.genes, ind.fitness) for r, n, ind in stored
    ]
    assert {x["suite"] for x in lines} == {"cartpole-v1"}
    names = [g.name for g in ports.store.get_agent(AGENT).manifest.genome]
    assert all(x["gene_names"] == names for x in lines)

    # Standalone on CPU, as `python -m gpu_jobs.predictor.train --data DIR --model-dir DIR`.
    done = _train(["--data", str(data_dir), "--model-dir", str(model_dir), "--set", "epochs=20"])
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    assert metrics["split"] == "runs" and metrics["runs"] == 3 and metrics["rows"] == rows
    assert metrics["n_test"] == 24 and metrics["n_train"] == 48  # one whole run held out
    assert metrics["targets"] == ["fitness"]
    written = json.loads((model_dir / "metrics.json").read_text())
    assert written["r2"] == metrics["r2"] and written["within_10pct"] == metrics["within_10pct"]

    # The model goes to the blob store under the agent's key; Layer 7 reads it back with
    # numpy only and screens the optimizer's candidates with it.
    ports.store.blobs.put(blob_key(AGENT), (model_dir / "model.json").read_bytes())
    model = parse_model(ports.store.blobs.get(blob_key(AGENT)))
    assert model.suite == "cartpole-v1" and list(model.genes) == names  # a run checks them
    data = load_dataset(data_dir)
    predicted = model.predict_fitness(data.genes, generation=1)
    assert predicted.shape == (rows,) and np.isfinite(predicted).all()
    assert len(prescreen(data.genes[:16], model, 8, np.random.default_rng(0))) == 8


def test_sagemaker_conventions_and_bad_data(history):
    ports, _, tmp = history
    channel, model_dir = tmp / "opt/ml/input/data/training", tmp / "opt/ml/model"
    export_history(ports.store, AGENT, channel)
    hyper = tmp / "hyperparameters.json"
    hyper.write_text(json.dumps({"job": "predictor", "epochs": "10", "hidden": "16"}))
    env = {"SM_CHANNEL_TRAINING": str(channel), "SM_MODEL_DIR": str(model_dir)}
    done = _train(["--hyperparameters", str(hyper)], env)
    assert done.returncode == 0, done.stderr
    model = parse_model((model_dir / "model.json").read_text())
    assert [len(layer.bias) for layer in model.layers] == [16, 1]

    # A line that is not a row fails the job naming the file, line and field.
    with (channel / "history.jsonl").open("a") as f:
        f.write(json.dumps({"suite": "cartpole-v1", "genes": [1, 2, 3, 4, "x"], "fitness": 1}))
    done = _train(["--hyperparameters", str(hyper)], env)
    assert done.returncode == 2
    assert f"history.jsonl:{3 * 3 * 8 + 1}.genes" in done.stderr
    # Rows that name other genes than the rest: one model cannot name its inputs.
    lines = (channel / "history.jsonl").read_text().splitlines()[:-1]
    renamed = {**json.loads(lines[0]), "gene_names": ["a", "b", "c", "d", "e"]}
    (channel / "history.jsonl").write_text("\n".join([*lines, json.dumps(renamed)]) + "\n")
    done = _train(["--hyperparameters", str(hyper)], env)
    assert done.returncode == 2 and "data.gene_names" in done.stderr
    short = {**json.loads(lines[0]), "gene_names": ["a"]}
    (channel / "history.jsonl").write_text("\n".join([*lines, json.dumps(short)]) + "\n")
    done = _train(["--hyperparameters", str(hyper)], env)
    assert done.returncode == 2 and f"history.jsonl:{len(lines) + 1}.gene_names" in done.stderr
    (channel / "history.jsonl").write_text("\n".join(lines) + "\n")
    hyper.write_text(json.dumps({"epochs": "many"}))
    done = _train(["--hyperparameters", str(hyper)], env)
    assert done.returncode == 2 and "hyperparameters.epochs" in done.stderr
