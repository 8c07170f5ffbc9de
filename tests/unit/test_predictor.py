"""The predictor as data: numpy's forward pass equals torch's, bad models are refused naming the
field, and the pre-screen keeps what its policy says and tells the optimizer the rest."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from chimera.domain.errors import ValidationFailedError
from chimera.domain.optimizers import CmaEs, GeneticAlgorithm
from chimera.domain.predictor import PredictorModel, parse_model, prescreen, screen_trials

from gpu_jobs.predictor.dataset import Dataset
from gpu_jobs.predictor.train import fit


def _dataset(n: int = 400, genes: int = 5, runs: int = 5, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, size=(n, genes))
    fitness = 10 - (x**2).sum(axis=1) + 0.5 * x[:, 0]  # a bowl, as a fitness landscape is
    kpi = np.abs(x[:, 1]) * 2.0
    return Dataset(
        agent_id="a",
        suite="s",
        genes=x,
        generation=rng.integers(0, 20, size=n).astype(float),
        targets=np.stack([fitness, kpi], axis=1),
        target_names=("fitness", "kpi"),
        run_ids=tuple(f"r{i % runs}" for i in range(n)),
    )


@pytest.fixture(scope="module")
def trained() -> tuple[PredictorModel, torch.nn.Module, Dataset]:
    data = _dataset()
    model, net = fit(data, {"epochs": 150, "hidden": "32,16", "seed": 3})
    return model, net, data


def test_numpy_forward_equals_torch_forward(trained):
    model, net, _ = trained
    rng = np.random.default_rng(1)
    genes = rng.uniform(-4, 4, size=(257, 5))
    generation = 7
    x = model.inputs(genes, generation)
    xs = (x - np.array(model.x_mean)) / np.array(model.x_std)
    with torch.no_grad():
        want = net(torch.as_tensor(xs, dtype=torch.float32)).numpy().astype(np.float64)
    want = want * np.array(model.y_std) + np.array(model.y_mean)
    got = model.predict(genes, generation)
    assert got.shape == (257, 2)
    # torch computes in float32, numpy in float64: equal to float32's precision.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(model.y_std))
    # The JSON round trip (what the blob store holds) predicts the same.
    again = parse_model(model.model_dump_json())
    np.testing.assert_array_equal(again.predict(genes, generation), got)


def test_training_learns_and_reports_held_out_metrics(trained):
    model, _, data = trained
    m = model.metrics
    assert m is not None and m.split == "runs"  # five runs: one held out whole
    assert m.n_train + m.n_test == len(data.run_ids) and m.n_test == 80
    assert m.r2[0] > 0.8, m  # a bowl is easy to learn; an untrained net scores about 0
    assert 0.0 <= m.within_10pct[0] <= 1.0
    assert model.targets == ("fitness", "kpi") and model.context == ("generation",)


def _doc(model: PredictorModel) -> dict:
    return json.loads(model.model_dump_json())


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            lambda d: d["layers"][0].update(bias=d["layers"][0]["bias"][:-1]),
            "predictor.layers.0.bias",
        ),
        (lambda d: d["layers"][1]["weight"][2].pop(), "predictor.layers.1.weight.2"),
        (lambda d: d["x_std"].__setitem__(1, 0.0), "predictor.x_std.1"),
        (lambda d: d["y_mean"].pop(), "predictor.y_mean"),
        (lambda d: d.update(activation="gelu"), "predictor.activation"),
        (lambda d: d.update(format="other/9"), "predictor.format"),
        (
            lambda d: d["layers"][0]["weight"][0].__setitem__(0, "x"),
            "predictor.layers.0.weight.0.0",
        ),
        (lambda d: d.pop("genes"), "predictor.genes"),
        (lambda d: d["metrics"].update(r2=[0.5]), "predictor.metrics.r2"),
    ],
)
def test_a_bad_model_is_refused_naming_the_field(trained, change, field):
    doc = _doc(trained[0])
    change(doc)
    with pytest.raises(ValidationFailedError) as err:
        parse_model(doc)
    assert err.value.field == field, err.value


def test_non_finite_weights_and_non_json_are_refused(trained):
    text = trained[0].model_dump_json().replace('"bias":[', '"bias":[NaN,', 1)
    with pytest.raises(ValidationFailedError) as err:
        parse_model(text)
    assert err.value.field.startswith("predictor.layers.0.bias"), err.value
    with pytest.raises(ValidationFailedError, match="not JSON"):
        parse_model(b"{")
    with pytest.raises(ValidationFailedError) as err:
        trained[0].predict(np.zeros((2, 4)))
    assert err.value.field == "genes"


def test_prescreen_keeps_the_best_predicted_and_a_random_share(trained):
    model = trained[0]
    rng = np.random.default_rng(5)
    candidates = rng.uniform(-3, 3, size=(40, 5))
    predicted = model.predict_fitness(candidates)
    ranked = list(np.argsort(-predicted))
    kept = prescreen(candidates, model, 20, np.random.default_rng(0))
    assert kept == sorted(kept) and len(set(kept)) == 20
    assert set(ranked[:18]) <= set(kept)  # 20 - round(0.1 * 20) best predicted
    drawn = set(kept) - set(ranked[:18])
    assert len(drawn) == 2 and drawn <= set(ranked[18:])
    # The random share is the rng's: another draw keeps another share, the best stay.
    draws = {tuple(prescreen(candidates, model, 20, np.random.default_rng(s))) for s in range(8)}
    assert len(draws) > 1
    # Minimizing ranks the other way; no exploration keeps exactly the best predicted.
    assert prescreen(candidates, model, 5, rng, explore_fraction=0.0) == sorted(ranked[:5])
    low = prescreen(candidates, model, 5, rng, direction="min", explore_fraction=0.0)
    assert low == sorted(ranked[-5:])
    assert prescreen(candidates, model, 40, rng) == list(range(40))
    assert len(prescreen(candidates, model, 1, rng)) == 1


@pytest.mark.parametrize(("keep", "field"), [(0, "keep"), (True, "keep"), (2.0, "keep")])
def test_prescreen_refuses_bad_arguments(trained, keep, field):
    with pytest.raises(ValidationFailedError) as err:
        prescreen(np.zeros((4, 5)), trained[0], keep, np.random.default_rng(0))
    assert err.value.field == field
    with pytest.raises(ValidationFailedError) as err:
        prescreen(np.zeros((0, 5)), trained[0], 1, np.random.default_rng(0))
    assert err.value.field == "candidates"


@pytest.mark.parametrize("kind", [CmaEs, GeneticAlgorithm])
def test_screen_trials_tells_the_rest_as_not_evaluated(trained, kind):
    """Through the ask/tell contract as Layer 7 drives it: the kept trials are evaluated and
    told; the generation completes; a left-out candidate is never the best."""
    model = trained[0]
    opt = kind.create([(-3.0, 3.0)] * 5, 16, seed=4)
    for generation in range(3):
        trials = opt.ask_trials()
        kept = screen_trials(opt, trials, model, 6, np.random.default_rng(generation))
        assert len(kept) == 6 and {t.id for t in kept} <= {t.id for t in trials}
        assert {t.id for t in opt.ask_trials()} == {t.id for t in kept}  # only these are open
        true = {t.id: 10 - sum(g * g for g in t.genes) for t in kept}
        opt.tell_trials(true)
        assert opt.generation == generation + 1  # the whole generation was told
        best = opt.best_trial
        assert best is not None and best.id in true or best.generation < generation
        told = opt.state["last_told"]["fitness"]
        assert sum(math.isnan(float(f["objectives"][0])) for f in told) == 10
    state = json.dumps(opt.state, allow_nan=False)  # still strict JSON
    assert "nan" in state
