"""Train the performance predictor: an agent's history (genomes → fitness, KPIs) → an MLP.

`train(dataset_dir, model_dir, hyperparameters)` loads the JSON-lines data set
(`gpu_jobs/predictor/dataset.py`), holds out whole runs (a fifth of them, at least one, when
the history has three runs or more; otherwise a fifth of the rows at random: a GA re-asks its
elite, so rows of one run share genomes and a row split would leak them), standardizes inputs
and targets on the training rows, trains a small torch MLP (Adam, MSE, the best epoch on a
validation tenth of the training rows kept), and measures on the held-out rows R² and the
share predicted within 10 % of the actual value, per target (R² is reported as 0 when the
held-out targets do not vary). It writes `model.json` (`chimera.domain.predictor.PredictorModel`:
plain JSON that Layer 7 runs in numpy) and `metrics.json` into `model_dir`, and returns the
metrics.

Hyperparameters (strings, as SageMaker passes them, or numbers): `hidden` ("64,64"),
`activation` (tanh|relu), `epochs` (300), `lr` (0.003), `weight_decay` (0.0001),
`batch_size` (64), `test_fraction` (0.2), `seed` (0), `context` ("generation" or ""),
`device` (cpu|cuda|auto: a GPU when there is one).

Standalone on CPU: `python -m gpu_jobs.predictor.train --data DIR --model-dir DIR`. Under
SageMaker the data is the `training` channel (SM_CHANNEL_TRAINING) and the model directory
SM_MODEL_DIR; `main` reads them when the flags are absent, and the hyperparameters from
`--hyperparameters FILE` (SageMaker's `/opt/ml/input/config/hyperparameters.json`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from chimera.domain.errors import ValidationFailedError
from chimera.domain.predictor import (
    CONTEXT_FEATURES,
    DenseLayer,
    PredictorMetrics,
    PredictorModel,
)

from gpu_jobs.predictor.dataset import Dataset, load_dataset

MODEL_FILE = "model.json"
METRICS_FILE = "metrics.json"
MIN_ROWS = 10
DEFAULTS: dict[str, Any] = {
    "hidden": "64,64",
    "activation": "tanh",
    "epochs": 300,
    "lr": 0.003,
    "weight_decay": 0.0001,
    "batch_size": 64,
    "test_fraction": 0.2,
    "seed": 0,
    "context": "generation",
    "device": "auto",
}


def _params(hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(hyperparameters) - set(DEFAULTS) - {"job"})
    if unknown:
        raise ValidationFailedError(f"hyperparameters.{unknown[0]}", "unknown hyperparameter")
    raw = {**DEFAULTS, **{k: v for k, v in hyperparameters.items() if k != "job"}}
    out: dict[str, Any] = {}
    try:
        out["hidden"] = tuple(int(h) for h in str(raw["hidden"]).split(",") if h.strip())
        if not out["hidden"] or min(out["hidden"]) < 1 or max(out["hidden"]) > 4096:
            raise ValueError("1 to 4096 units a layer")
    except ValueError as exc:
        raise ValidationFailedError("hyperparameters.hidden", f"{raw['hidden']!r}: {exc}") from None
    for name, kind, lo, hi in (
        ("epochs", int, 1, 100_000),
        ("batch_size", int, 1, 1_000_000),
        ("seed", int, 0, 2**63 - 1),
        ("lr", float, 1e-7, 10.0),
        ("weight_decay", float, 0.0, 10.0),
        ("test_fraction", float, 0.05, 0.5),
    ):
        try:
            value = kind(raw[name])
        except (TypeError, ValueError):
            raise ValidationFailedError(
                f"hyperparameters.{name}", f"{raw[name]!r} is not a number"
            ) from None
        if not lo <= value <= hi:
            raise ValidationFailedError(f"hyperparameters.{name}", f"{value} not in [{lo}, {hi}]")
        out[name] = value
    if raw["activation"] not in ("tanh", "relu"):
        raise ValidationFailedError("hyperparameters.activation", f"{raw['activation']!r}")
    out["activation"] = raw["activation"]
    context = tuple(c for c in str(raw["context"]).split(",") if c.strip())
    for c in context:
        if c not in CONTEXT_FEATURES:
            raise ValidationFailedError("hyperparameters.context", f"unknown feature {c!r}")
    out["context"] = context
    device = str(raw["device"])
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValidationFailedError("hyperparameters.device", f"{device!r}: cpu, cuda or auto")
    out["device"] = device
    return out


def split(data: Dataset, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Training and held-out row indices, and how (whole runs, or rows)."""
    rng = np.random.default_rng(seed)
    n = len(data.run_ids)
    runs = sorted(set(data.run_ids))
    if len(runs) >= 3:
        n_test = max(1, round(test_fraction * len(runs)))
        held = set(rng.permutation(runs)[:n_test].tolist())
        test = np.array([i for i in range(n) if data.run_ids[i] in held])
        train = np.array([i for i in range(n) if data.run_ids[i] not in held])
        return train, test, "runs"
    order = rng.permutation(n)
    n_test = max(1, round(test_fraction * n))
    return np.sort(order[n_test:]), np.sort(order[:n_test]), "rows"


def r2_score(actual: np.ndarray, predicted: np.ndarray) -> float:
    ss_res = float(((actual - predicted) ** 2).sum())
    ss_tot = float(((actual - actual.mean()) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0


def within(actual: np.ndarray, predicted: np.ndarray, fraction: float = 0.1) -> float:
    return float((np.abs(predicted - actual) <= fraction * np.abs(actual)).mean())


def _std(x: np.ndarray) -> np.ndarray:
    s = x.std(axis=0)
    return np.where(s > 1e-12, s, 1.0)


def _mlp(n_in: int, hidden: tuple[int, ...], n_out: int, activation: str) -> torch.nn.Sequential:
    act = torch.nn.Tanh if activation == "tanh" else torch.nn.ReLU
    layers: list[torch.nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [torch.nn.Linear(width, h), act()]
        width = h
    layers.append(torch.nn.Linear(width, n_out))
    return torch.nn.Sequential(*layers)


def _export(net: torch.nn.Sequential) -> tuple[DenseLayer, ...]:
    return tuple(
        DenseLayer(
            weight=tuple(tuple(float(v) for v in row) for row in m.weight.detach().cpu().tolist()),
            bias=tuple(float(v) for v in m.bias.detach().cpu().tolist()),
        )
        for m in net
        if isinstance(m, torch.nn.Linear)
    )


def fit(
    data: Dataset, hyperparameters: Mapping[str, Any]
) -> tuple[PredictorModel, torch.nn.Module]:
    """The trained predictor as data (with held-out metrics), and the torch module itself."""
    p = _params(hyperparameters)
    n = len(data.run_ids)
    if n < MIN_ROWS:
        raise ValidationFailedError("data", f"{n} rows: at least {MIN_ROWS} to train and test")
    torch.manual_seed(p["seed"])
    rng = np.random.default_rng(p["seed"])
    train_rows, test_rows, how = split(data, p["test_fraction"], p["seed"])
    x = data.genes
    if p["context"]:
        x = np.concatenate([x, data.generation[:, None]], axis=1)
    y = data.targets
    x_mean, x_std = x[train_rows].mean(axis=0), _std(x[train_rows])
    y_mean, y_std = y[train_rows].mean(axis=0), _std(y[train_rows])
    xs = torch.as_tensor((x - x_mean) / x_std, dtype=torch.float32)
    ys = torch.as_tensor((y - y_mean) / y_std, dtype=torch.float32)

    shuffled = rng.permutation(train_rows)
    n_val = max(1, len(shuffled) // 10) if len(shuffled) >= 10 else 0
    val_rows, fit_rows = shuffled[:n_val], shuffled[n_val:]
    device = torch.device(p["device"])
    net = _mlp(x.shape[1], p["hidden"], y.shape[1], p["activation"]).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])
    x_fit, y_fit = xs[fit_rows].to(device), ys[fit_rows].to(device)
    x_val, y_val = xs[val_rows].to(device), ys[val_rows].to(device)
    best_loss, best_state = float("inf"), None
    for _ in range(p["epochs"]):
        net.train()
        order = torch.randperm(len(fit_rows), device=device)
        for start in range(0, len(fit_rows), p["batch_size"]):
            batch = order[start : start + p["batch_size"]]
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(x_fit[batch]), y_fit[batch])
            loss.backward()
            opt.step()
        if n_val:
            net.eval()
            with torch.no_grad():
                val = float(torch.nn.functional.mse_loss(net(x_val), y_val))
            if val < best_loss:
                best_loss = val
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval().cpu()

    with torch.no_grad():
        pred = net(xs[test_rows]).numpy().astype(np.float64) * y_std + y_mean
    actual = y[test_rows]
    metrics = PredictorMetrics(
        r2=tuple(r2_score(actual[:, t], pred[:, t]) for t in range(y.shape[1])),
        within_10pct=tuple(within(actual[:, t], pred[:, t]) for t in range(y.shape[1])),
        n_train=len(train_rows),
        n_test=len(test_rows),
        split=how,  # type: ignore[arg-type]
    )
    # The manifest's names where the history gives them (a run checks its agent against them);
    # by position for a data set that does not name them.
    gene_names = data.gene_names or tuple(f"g{i}" for i in range(data.genes.shape[1]))
    model = PredictorModel(
        agent_id=data.agent_id,
        suite=data.suite,
        genes=gene_names,
        context=p["context"],
        targets=data.target_names,
        activation=p["activation"],
        x_mean=tuple(float(v) for v in x_mean),
        x_std=tuple(float(v) for v in x_std),
        y_mean=tuple(float(v) for v in y_mean),
        y_std=tuple(float(v) for v in y_std),
        layers=_export(net),
        metrics=metrics,
    )
    return model, net


def train(
    dataset_dir: Path | str, model_dir: Path | str, hyperparameters: Mapping[str, Any]
) -> dict[str, Any]:
    """Train on the data set under `dataset_dir`, write the model and metrics to `model_dir`."""
    _params(hyperparameters)  # a misconfigured job fails before it reads any data
    data = load_dataset(Path(dataset_dir))
    model, _ = fit(data, hyperparameters)
    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MODEL_FILE).write_text(model.model_dump_json())
    assert model.metrics is not None
    metrics = {
        "targets": list(model.targets),
        **model.metrics.model_dump(),
        "rows": len(data.run_ids),
        "runs": len(set(data.run_ids)),
    }
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("SM_CHANNEL_TRAINING"))
    parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR"))
    parser.add_argument("--hyperparameters", help="a JSON file of hyperparameters")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    if not args.data or not args.model_dir:
        parser.error("--data and --model-dir (or SM_CHANNEL_TRAINING and SM_MODEL_DIR)")
    hyper: dict[str, Any] = {}
    if args.hyperparameters:
        hyper.update(json.loads(Path(args.hyperparameters).read_text()))
    for item in args.set:
        name, _, value = item.partition("=")
        hyper[name] = value
    try:
        metrics = train(args.data, args.model_dir, hyper)
    except ValidationFailedError as exc:
        print(f"predictor: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(metrics), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
