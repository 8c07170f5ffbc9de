"""The performance predictor as data, its forward pass in numpy, and the pre-screen of offspring.

A predictor maps an agent's genome (and context: the generation it was asked in) to its
fitness and, where the history has them, further KPIs. It is trained in torch by a SageMaker
training job (`gpu_jobs/predictor/train.py`; locally the same entrypoint on CPU) and exported
as plain JSON: the standardization of inputs and targets and the weights of a small MLP
(`torch.nn.Linear` layout: `weight` is (out, in)). Layer 7 runs inside a Lambda that never
imports torch, so inference here is numpy: a few matrix products.

Pre-screening (`prescreen`, `screen_trials`): the optimizer asks a pool of candidates, the
predictor ranks them, and only `keep` of them are evaluated. The policy is
**best-predicted plus a random share**:

* `keep - explore` candidates with the best predicted fitness are kept, and
* `explore` more (`explore_fraction` of `keep`, at least one when something is left out)
  are drawn uniformly from the rest.

Why the random share: a model trained on history is biased toward where the history went; the
uniformly drawn candidates are an unbiased sample of what the screen rejects, so their true
fitness shows whether the screen still ranks well (the run can compare them with the kept
ones) and they give the next training set data outside the model's favourite region.
Candidates left out are told to the optimizer as not evaluated (`NOT_EVALUATED`: NaN, which
ranks below every evaluated candidate, as a failed evaluation does). They are never the
run's best and never a champion: only evaluated fitness counts.

Two ways to use it, both through the unchanged ask/tell contract (`tell_trials` takes any
subset of open trials): create the optimizer with a pool of `ratio × λ` and evaluate the `λ`
best predicted (pre-selection: the optimizer believes the rejected were the worst), or keep
the optimizer's λ and evaluate fewer. `bench/predictor_bench.py` measures both against the
same run without a screen.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError, model_validator

from chimera.domain.errors import ValidationFailedError
from chimera.domain.models import FiniteFloat, Frozen
from chimera.domain.optimizers import Fitness, Optimizer, Trial

FORMAT: Literal["chimera-predictor/1"] = "chimera-predictor/1"
CONTEXT_FEATURES = ("generation",)
MAX_UNITS = 4096
MAX_LAYERS = 16
MAX_TARGETS = 64
# A candidate the screen left out: told to the optimizer as not evaluated (ranks last).
NOT_EVALUATED = math.nan


def blob_key(agent_id: str) -> str:
    """Where an agent's current predictor lives in the blob store (S3 artifacts; .chimera/blobs)."""
    return f"predictors/{agent_id}/model.json"


class DenseLayer(Frozen):
    """One `torch.nn.Linear`: `weight` (out, in), `bias` (out)."""

    weight: tuple[tuple[FiniteFloat, ...], ...] = Field(min_length=1, max_length=MAX_UNITS)
    bias: tuple[FiniteFloat, ...] = Field(min_length=1, max_length=MAX_UNITS)


class PredictorMetrics(Frozen):
    """What the training job measured on the held-out rows (never seen in training)."""

    r2: tuple[FiniteFloat, ...] = Field(description="R² per target on the held-out rows")
    within_10pct: tuple[FiniteFloat, ...] = Field(
        description="share of held-out rows predicted within 10 % of the actual, per target"
    )
    n_train: int = Field(ge=1)
    n_test: int = Field(ge=0)
    split: Literal["runs", "rows"] = Field(
        description="held out: whole runs (no genome of a test run seen) or random rows"
    )


class PredictorModel(Frozen):
    """A trained predictor, as the training job writes it and Layer 7 reads it."""

    format: Literal["chimera-predictor/1"] = FORMAT
    agent_id: str | None = Field(default=None, max_length=64)
    suite: str = Field(min_length=1, max_length=128)
    genes: tuple[str, ...] = Field(min_length=1, max_length=MAX_UNITS)
    context: tuple[Literal["generation"], ...] = ()
    targets: tuple[str, ...] = Field(min_length=1, max_length=MAX_TARGETS)
    activation: Literal["tanh", "relu"] = "tanh"
    x_mean: tuple[FiniteFloat, ...]
    x_std: tuple[FiniteFloat, ...]
    y_mean: tuple[FiniteFloat, ...]
    y_std: tuple[FiniteFloat, ...]
    layers: tuple[DenseLayer, ...] = Field(min_length=1, max_length=MAX_LAYERS)
    metrics: PredictorMetrics | None = None

    @model_validator(mode="after")
    def _shapes(self) -> PredictorModel:
        n_in = len(self.genes) + len(self.context)
        n_out = len(self.targets)
        for name, values, want in (
            ("x_mean", self.x_mean, n_in),
            ("x_std", self.x_std, n_in),
            ("y_mean", self.y_mean, n_out),
            ("y_std", self.y_std, n_out),
        ):
            if len(values) != want:
                raise ValueError(f"{name}: expected {want} values, got {len(values)}")
        for name, values in (("x_std", self.x_std), ("y_std", self.y_std)):
            for i, v in enumerate(values):
                if v <= 0:
                    raise ValueError(f"{name}.{i}: a deviation must be positive, got {v}")
        width = n_in
        for k, layer in enumerate(self.layers):
            rows = len(layer.weight)
            if len(layer.bias) != rows:
                raise ValueError(f"layers.{k}.bias: expected {rows} values, got {len(layer.bias)}")
            for r, row in enumerate(layer.weight):
                if len(row) != width:
                    raise ValueError(
                        f"layers.{k}.weight.{r}: expected {width} inputs, got {len(row)}"
                    )
            width = rows
        if width != n_out:
            raise ValueError(f"layers.{len(self.layers) - 1}.weight: {width} outputs, not {n_out}")
        if self.metrics is not None:
            for name in ("r2", "within_10pct"):
                got = len(getattr(self.metrics, name))
                if got != n_out:
                    raise ValueError(f"metrics.{name}: expected {n_out} values, got {got}")
        return self

    # -- inference ---------------------------------------------------------------------------
    def inputs(self, genes: np.ndarray, generation: int | float = 0) -> np.ndarray:
        """The model's raw input rows: the genes, then the context features."""
        x = np.asarray(genes, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != len(self.genes):
            raise ValidationFailedError(
                "genes", f"expected rows of {len(self.genes)} genes, got shape {x.shape}"
            )
        if not np.isfinite(x).all():
            raise ValidationFailedError("genes", "a gene is NaN or infinite")
        if self.context:
            ctx = np.full((x.shape[0], len(self.context)), float(generation))
            x = np.concatenate([x, ctx], axis=1)
        return x

    def predict(self, genes: np.ndarray, generation: int | float = 0) -> np.ndarray:
        """Predicted targets, shape (n, len(targets)), in the targets' own units."""
        h = (self.inputs(genes, generation) - np.asarray(self.x_mean)) / np.asarray(self.x_std)
        act = np.tanh if self.activation == "tanh" else _relu
        last = len(self.layers) - 1
        for k, layer in enumerate(self.layers):
            h = h @ np.asarray(layer.weight).T + np.asarray(layer.bias)
            if k < last:
                h = act(h)
        return h * np.asarray(self.y_std) + np.asarray(self.y_mean)

    def predict_fitness(self, genes: np.ndarray, generation: int | float = 0) -> np.ndarray:
        """The first target (fitness), shape (n,)."""
        return self.predict(genes, generation)[:, 0]


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def parse_model(data: bytes | str | Mapping[str, Any]) -> PredictorModel:
    """A predictor from its JSON; a bad one is a ValidationFailedError naming the field."""
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise ValidationFailedError("predictor", f"not JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise ValidationFailedError("predictor", "not a JSON object")
    try:
        return PredictorModel.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if not where and ": " in msg:  # the shape checks name their own field
            where, msg = msg.split(": ", 1)
        raise ValidationFailedError(f"predictor.{where}" if where else "predictor", msg) from None


# -- the pre-screen ----------------------------------------------------------------------------
def prescreen(
    candidates: np.ndarray | Sequence[Sequence[float]],
    model: PredictorModel,
    keep: int,
    rng: np.random.Generator,
    *,
    generation: int = 0,
    direction: Literal["max", "min"] = "max",
    explore_fraction: float = 0.1,
) -> list[int]:
    """Indices (ascending) of the `keep` candidates to evaluate.

    `keep - explore` best predicted, plus `explore = max(1, round(explore_fraction * keep))`
    drawn uniformly from the rest (none when nothing is left out, or when keep is 1).
    """
    x = np.asarray(candidates, dtype=np.float64)
    n = x.shape[0] if x.ndim == 2 else 0
    if n == 0:
        raise ValidationFailedError("candidates", "no candidates to screen")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValidationFailedError("keep", f"at least 1 candidate, got {keep!r}")
    if not 0.0 <= explore_fraction <= 1.0:
        raise ValidationFailedError("explore_fraction", f"{explore_fraction} is not in [0, 1]")
    if keep >= n:
        return list(range(n))
    predicted = model.predict_fitness(x, generation)
    if direction == "min":
        predicted = -predicted
    explore = explored(n, keep, explore_fraction)
    order = np.argsort(-predicted, kind="stable")  # best predicted first; ties by position
    best = order[: keep - explore]
    rest = order[keep - explore :]
    drawn = rng.choice(rest, size=explore, replace=False) if explore else np.array([], int)
    return sorted(int(i) for i in np.concatenate([best, drawn]))


def explored(n: int, keep: int, explore_fraction: float = 0.1) -> int:
    """How many of the `keep` candidates `prescreen` draws at random from `n` (the rest are
    the best predicted): none when nothing is left out, else `max(1, round(fraction * keep))`
    (none for a fraction of 0), and never the best predicted one's place."""
    if keep >= n or explore_fraction <= 0:
        return 0
    return min(max(1, round(explore_fraction * keep)), keep - 1)


def screen_trials(
    optimizer: Optimizer,
    trials: Sequence[Trial],
    model: PredictorModel,
    keep: int,
    rng: np.random.Generator,
    *,
    explore_fraction: float = 0.1,
) -> list[Trial]:
    """What Layer 7's ask calls: the trials to evaluate; the rest are told as not evaluated.

    `trials` are the optimizer's open trials (`optimizer.ask_trials()`); the ones left out are
    told at once (`tell_trials`, NaN: they rank last, as a failed evaluation does), so the
    generation completes when the kept ones are told. The optimizer's state changes: store it
    with the kept candidates.
    """
    if not trials:
        raise ValidationFailedError("trials", "no trials to screen")
    genes = np.array([t.genes for t in trials], dtype=np.float64)
    direction = optimizer.state["objectives"][0]
    kept = prescreen(
        genes,
        model,
        keep,
        rng,
        generation=optimizer.generation,
        direction=direction,
        explore_fraction=explore_fraction,
    )
    chosen = set(kept)
    n_obj = len(optimizer.state["objectives"])
    n_con = int(optimizer.state["constraints"])
    left_out = Fitness((NOT_EVALUATED,) * n_obj, (NOT_EVALUATED,) * n_con)
    rejected = {t.id: left_out for i, t in enumerate(trials) if i not in chosen}
    if rejected:
        optimizer.tell_trials(rejected)
    return [trials[i] for i in kept]
