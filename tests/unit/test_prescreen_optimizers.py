"""A pre-screened generation, as Layer 7's ask makes it and its tell completes it, advances every
optimizer plug-in a suite may use: the screen tells the rejected candidates as not evaluated,
the tell of the kept ones (told through `tell_trials`, in shards' order) completes the
generation, the rejected ones are never the best, and the screen of a generation is the same
for the same (run seed, generation) seed — what a retried ask relies on."""

from __future__ import annotations

import numpy as np
import pytest
from chimera.domain.errors import ValidationFailedError
from chimera.domain.models import GeneSpec
from chimera.domain.optimizers import OPTIMIZERS, Optimizer
from chimera.domain.predictor import (
    DenseLayer,
    PredictorModel,
    explored,
    screen_trials,
)
from chimera.domain.suites import SUITES
from chimera.settings import load_settings

GENOME = [GeneSpec(name=f"g{i}", low=-5.0, high=5.0, default=0.0) for i in range(4)]


def sphere(genes: tuple[float, ...]) -> float:
    """What the toy problem maximizes: the negated squared distance from (1, 1, 1, 1)."""
    return -float(np.sum((np.asarray(genes) - 1.0) ** 2))


def model_of_sphere() -> PredictorModel:
    """A real predictor with hand-set weights (a tanh layer, then a sum): it ranks candidates by
    sum(tanh(g / 4)), which is not the true fitness; a screen need not be right to be told
    correctly."""
    genes = tuple(g.name for g in GENOME)
    hidden = tuple(tuple(0.25 if j == i else 0.0 for j in range(4)) for i in range(4))
    return PredictorModel(
        agent_id=None,
        suite="toy",
        genes=genes,
        targets=("fitness",),
        x_mean=(0.0,) * 4,
        x_std=(1.0,) * 4,
        y_mean=(0.0,),
        y_std=(1.0,),
        layers=(
            DenseLayer(weight=hidden, bias=(0.0,) * 4),
            DenseLayer(weight=((1.0,) * 4,), bias=(0.0,)),
        ),
    )


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_a_screened_generation_told_through_tell_trials_advances_the_optimizer(kind):
    optimizer = OPTIMIZERS[kind].create(GENOME, 12, seed=7, x0=[0.0] * 4)
    model = model_of_sphere()
    all_kept: set[int] = set()
    for number in range(4):
        state = Optimizer.restore(optimizer.state)  # as ask restores it from the run
        trials = state.ask_trials()
        assert len(trials) == 12 and state.generation == number
        kept = screen_trials(state, trials, model, keep=6, rng=np.random.default_rng([7, number]))
        assert len(kept) == 6
        # What ask stores: the kept trials, and the state after the rejected ones were told.
        stored = Optimizer.restore(state.state)
        assert [t.id for t in stored.ask_trials()] == [t.id for t in kept]
        assert stored.generation == number  # not complete until the kept ones are told
        # tell: the kept ones, in two shards, each through tell_trials.
        stored.tell_trials({t.id: sphere(t.genes) for t in kept[:3]})
        assert stored.generation == number
        stored.tell_trials({t.id: sphere(t.genes) for t in kept[3:]})
        assert stored.generation == number + 1
        # The generation as told: the kept ones' fitness, the rejected ones' NaN ("nan").
        last = stored.state["last_told"]
        kept_ids = {t.id for t in kept}
        all_kept |= kept_ids
        assert [f["objectives"][0] for f in last["fitness"]] == [
            sphere(t.genes) if t.id in kept_ids else "nan" for t in trials
        ]
        assert last["first"] == trials[0].id
        # Only evaluated candidates are ever the best.
        best_trial = stored.best_trial
        assert best_trial is not None and best_trial.id in all_kept
        assert stored.best[1] == max(sphere(t.genes) for t in kept) or number > 0
        assert stored.best[1] >= max(sphere(t.genes) for t in kept)
        optimizer = stored
    # The next generation is asked from the updated search (not the same candidates again).
    assert optimizer.ask_trials()[0].id == 4 * 12


def test_the_screen_is_the_same_for_the_same_seed_and_differs_for_another():
    optimizer = OPTIMIZERS["cma-es"].create(GENOME, 24, seed=3)
    model = model_of_sphere()

    def screened(seed: list[int]) -> list[int]:
        state = Optimizer.restore(dict(optimizer.state))
        kept = screen_trials(state, state.ask_trials(), model, 12, np.random.default_rng(seed))
        return [t.id for t in kept]

    assert screened([3, 0]) == screened([3, 0])
    draws = {tuple(screened([3, g])) for g in range(8)}
    assert len(draws) > 1  # only the random share differs: 11 best predicted, 1 drawn
    common = set.intersection(*(set(d) for d in draws))
    assert len(common) >= 11
    assert explored(24, 12) == 1 and explored(24, 24) == 0 and explored(24, 1) == 0


def test_suites_opt_in_with_a_share_and_the_deployment_switch_names_its_variable():
    shares = {name: suite.prescreen_keep for name, suite in SUITES.items()}
    assert shares == {"cartpole-v1": 0.5, "breast-cancer": None}
    assert all(s is None or 0 < s <= 1 for s in shares.values())
    assert load_settings({}).prescreen == "on"
    assert load_settings({"CHIMERA_PRESCREEN": "off"}).prescreen == "off"
    with pytest.raises(ValidationFailedError) as err:
        load_settings({"CHIMERA_PRESCREEN": "sometimes"})
    assert err.value.field == "CHIMERA_PRESCREEN"
