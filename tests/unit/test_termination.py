"""Termination criteria: each fires with a reason, composes, and round-trips through JSON."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
from chimera.domain.optimizers import CmaEs, Fitness, GeneticAlgorithm
from chimera.domain.termination import (
    TERMINATIONS,
    AllOf,
    AnyOf,
    EvaluationBudget,
    GenerationBudget,
    Progress,
    Stagnation,
    StepSizeFloor,
    Target,
    Termination,
    standard,
    termination_from_json,
)
from pydantic import ValidationError


@dataclass(frozen=True)
class P:
    best: float
    mean: float = 0.0
    evaluations: int = 10


def hist(*bests: float) -> list[P]:
    return [P(b) for b in bests]


EVERY_KIND: list[Termination] = [
    Target(value=0.9, streak=2),
    GenerationBudget(generations=5),
    EvaluationBudget(evaluations=100),
    Stagnation(generations=3, min_delta=0.01),
    StepSizeFloor(floor=1e-6),
    AnyOf(
        of=(
            Target(value=1.0),
            AllOf(of=(GenerationBudget(generations=2), Stagnation(generations=1))),
        )
    ),
    AllOf(of=(EvaluationBudget(evaluations=5),)),
]


def test_every_registered_kind_is_covered_and_round_trips():
    assert {t.kind for t in EVERY_KIND} == set(TERMINATIONS)
    for t in EVERY_KIND:
        back = termination_from_json(json.loads(json.dumps(t.to_json(), allow_nan=False)))
        assert back == t and type(back) is type(t)


def test_target_needs_its_streak():
    t = Target(value=0.9, streak=3)
    assert t.reason(hist(0.95, 0.95)) is None
    assert t.reason(hist(0.95, 0.8, 0.95, 0.95)) is None
    assert t.reason(hist(0.5, 0.9, 0.95, 0.91)) == "target 0.9 reached 3 times in a row"
    assert Target(value=1.0).reason(hist(1.0)) == "target 1 reached once"


def test_generation_and_evaluation_budgets():
    assert GenerationBudget(generations=3).reason(hist(0, 0)) is None
    assert GenerationBudget(generations=3).reason(hist(0, 0, 0)) == "reached 3 generations"
    assert EvaluationBudget(evaluations=25).reason(hist(0, 0)) is None
    assert EvaluationBudget(evaluations=25).reason(hist(0, 0, 0)) == (
        "spent 30 evaluations (budget 25)"
    )


def test_stagnation():
    s = Stagnation(generations=2)
    assert s.reason(hist(1, 1)) is None  # not enough history
    assert s.reason(hist(1, 2, 3)) is None
    assert s.reason(hist(3, 2, 3)) == "no improvement in 2 generations"
    assert s.reason(hist(1, 3, 2, 2)) == "no improvement in 2 generations"
    assert Stagnation(generations=2, min_delta=0.5).reason(hist(1, 1.2, 1.4)) is not None
    assert Stagnation(generations=2, min_delta=0.5).reason(hist(1, 1.2, 1.6)) is None


def test_step_size_floor_reads_the_optimizer():
    floor = StepSizeFloor(floor=0.5)
    cma = CmaEs.create([(-5.0, 5.0)] * 2, population_size=8, seed=1)
    assert floor.reason([], cma) is None  # sigma starts at 1.5
    for _ in range(30):
        cma.tell([-sum(g * g for g in c.genes) for c in cma.ask()])
    why = floor.reason([], cma)
    assert why is not None and why.startswith("step size") and why.endswith("below 0.5")
    ga = GeneticAlgorithm.create([(-5.0, 5.0)] * 2, population_size=8, seed=1)
    assert floor.reason([], ga) is None and floor.reason([]) is None  # no step size: never


def test_any_of_and_all_of():
    any_ = AnyOf(of=(GenerationBudget(generations=10), Target(value=1.0)))
    assert any_.reason(hist(0.5)) is None
    assert any_.reason(hist(0.5, 1.0)) == "target 1 reached once"
    all_ = AllOf(of=(GenerationBudget(generations=2), Target(value=1.0)))
    assert all_.reason(hist(1.0)) is None
    assert all_.reason(hist(0.0, 0.5)) is None
    assert all_.reason(hist(0.0, 1.0)) == "reached 2 generations and target 1 reached once"


def test_standard_is_layer_six_rule():
    rule = standard(max_generations=50, target=0.9, streak=3, stagnation=30)
    assert rule.reason(hist(*[0.1] * 49)) == "no improvement in 30 generations"
    assert rule.reason(hist(0.1, 0.95, 0.95, 0.95)) == "target 0.9 reached 3 times in a row"
    assert rule.reason(hist(*[float(i) / 100 for i in range(50)])) == "reached 50 generations"
    assert rule.reason(hist(0.1, 0.2)) is None
    assert standard(10).of == (GenerationBudget(generations=10), Stagnation(generations=30))


def test_unknown_or_malformed_criteria_name_the_field():
    with pytest.raises(ValueError, match=r"termination\.kind: unknown termination 'nope'"):
        termination_from_json({"kind": "nope"})
    with pytest.raises(ValueError, match=r"termination\.of\.1\.kind: unknown termination"):
        termination_from_json({"kind": "any-of", "of": [{"kind": "target", "value": 1}, {}]})
    with pytest.raises(ValueError, match="termination: expected an object"):
        termination_from_json("target")
    with pytest.raises(ValidationError, match="generations"):
        termination_from_json({"kind": "generation-budget", "generations": 0})
    with pytest.raises(ValidationError, match="value"):
        Target(value=math.nan)
    with pytest.raises(ValidationError, match="extra"):
        termination_from_json({"kind": "stagnation", "generations": 3, "patience": 1})
    with pytest.raises(ValidationError, match="of"):
        AnyOf(of=())


def test_progress_summarizes_a_generation():
    fits = [
        Fitness((1.0,), (0.0,)),
        Fitness((3.0,), (0.0,)),
        Fitness((99.0,), (1.0,)),  # infeasible: not counted
        Fitness((math.nan,), (0.0,)),  # failed
    ]
    p = Progress.of(fits)
    assert (p.best, p.mean, p.std, p.evaluations, p.feasible) == (3.0, 2.0, 1.0, 4, 2)
    assert Progress.of(fits, "min").best == 1.0
    none = Progress.of([Fitness((math.nan,))])
    assert (none.best, none.feasible, none.evaluations) == (-1e300, 0, 1)
    assert GenerationBudget(generations=1).reason([p]) == "reached 1 generations"
