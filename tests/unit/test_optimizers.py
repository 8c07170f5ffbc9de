"""Conformance: every optimizer plug-in subclasses OptimizerConformance.

A new plug-in adds `class TestMine(OptimizerConformance): cls = Mine` (and adjusts the
tolerances if its search is slower); everything below must hold for it.
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from chimera.domain.errors import ValidationFailedError
from chimera.domain.genome import GeneSpec, check_genes
from chimera.domain.optimizers import (
    FAILED,
    OPTIMIZERS,
    CmaEs,
    Fitness,
    GeneticAlgorithm,
    Optimizer,
    dense_ranks,
    rank_key,
    register,
)

BOUNDS = [(-5.0, 5.0)] * 4
MIXED = [
    GeneSpec(name="w", low=-5, high=5),
    GeneSpec(name="layers", type="int", low=1, high=6, default=2),
    GeneSpec(name="act", type="categorical", choices=["relu", "tanh", "gelu"]),
    GeneSpec(name="rate", low=0.0, high=1.0, default=0.5),
]


def sphere(genes) -> float:  # maximize the negative sphere, optimum 0 at x = 1
    return -float(sum((g - 1.0) ** 2 for g in genes))


def roundtrip(opt: Optimizer) -> Optimizer:
    """Through strict JSON, as the store keeps it."""
    return Optimizer.restore(json.loads(json.dumps(opt.state, allow_nan=False)))


def run(opt: Optimizer, generations: int, fitness=sphere) -> Optimizer:
    for _ in range(generations):
        opt.tell([fitness(c.genes) for c in opt.ask()])
    return opt


class OptimizerConformance:
    cls: type[Optimizer]
    sphere_target = -0.05  # best fitness expected after 40 generations of 12
    constrained_target = -1.2  # sphere with x[0] >= 2 (optimum -1) after 40 generations

    def make(self, seed: int = 3, **kw) -> Optimizer:
        return self.cls.create(BOUNDS, population_size=12, seed=seed, **kw)

    # registry and seeding ----------------------------------------------------------------
    def test_is_registered_under_its_kind(self):
        assert OPTIMIZERS[self.cls.kind] is self.cls
        assert type(Optimizer.restore(self.make().state)) is self.cls

    def test_ask_is_seeded_and_repeatable(self):
        a, b = self.make(), self.make()
        for _ in range(3):
            assert a.ask() == b.ask()
            run(a, 1)
            run(b, 1)
        assert self.make(1).ask() != self.make(2).ask()

    def test_owns_a_numpy_generator_in_its_json_state(self):
        opt = self.make()
        assert isinstance(opt.rng, np.random.Generator)
        json.dumps(opt.state, allow_nan=False)
        before = opt.state["rng"]
        run(opt, 2)
        assert opt.state["rng"] != before  # it drew from its own generator

    def test_leaves_global_generators_alone(self):
        random.seed(11)
        np.random.seed(11)
        expected = (random.random(), np.random.random())
        random.seed(11)
        np.random.seed(11)
        opt = run(self.make(), 2)
        opt = roundtrip(opt)
        trials = opt.ask_trials()
        opt.tell_trials({t.id: sphere(t.genes) for t in trials})
        opt.ask()
        assert (random.random(), np.random.random()) == expected

    # idempotent ask, state round trip ----------------------------------------------------
    def test_ask_twice_before_tell_returns_the_same(self):
        opt = self.make()
        assert opt.ask() == opt.ask()
        assert opt.ask_trials() == opt.ask_trials()
        assert [t.genes for t in opt.ask_trials()] == [c.genes for c in opt.ask()]
        assert len({t.id for t in opt.ask_trials()}) == len(opt.ask())

    def test_ask_trials_n_returns_at_most_n(self):
        opt = self.make()
        two = opt.ask_trials(2)
        assert len(two) == 2 and two == opt.ask_trials()[:2]
        with pytest.raises(ValueError, match="n: at least 1"):
            opt.ask_trials(0)

    def test_state_round_trips_through_json_at_any_point(self):
        a = self.make()
        b = roundtrip(a)  # fresh
        assert a.ask() == b.ask()
        b = roundtrip(a)  # asked, nothing told
        assert a.ask() == b.ask()
        trials = a.ask_trials()
        part = {t.id: sphere(t.genes) for t in trials[:5]}
        a.tell_trials(part)
        b = roundtrip(a)  # mid-generation, five told
        assert a.ask_trials() == b.ask_trials() and len(b.ask_trials()) == len(trials) - 5
        rest = {t.id: sphere(t.genes) for t in trials[5:]}
        a.tell_trials(rest)
        b.tell_trials(rest)
        for _ in range(3):
            assert a.ask() == b.ask()
            assert a.best == b.best
            run(a, 1)
            b = run(roundtrip(b), 1)
        assert a.state == b.state

    # per-trial tell ----------------------------------------------------------------------
    def test_per_trial_tell_in_any_order_equals_one_batch_tell(self):
        batch, single = self.make(), self.make()
        order = np.random.default_rng(5)
        for _ in range(4):
            cands = batch.ask()
            batch.tell([sphere(c.genes) for c in cands])
            trials = single.ask_trials()
            assert [t.genes for t in trials] == [c.genes for c in cands]
            for i in order.permutation(len(trials)):
                single.tell_trials({trials[i].id: sphere(trials[i].genes)})
                single = roundtrip(single)
        assert batch.state == single.state
        assert batch.ask() == single.ask()

    def test_generation_updates_only_when_all_are_told(self):
        opt = self.make()
        trials = opt.ask_trials()
        opt.tell_trials({t.id: sphere(t.genes) for t in trials[:-1]})
        assert opt.generation == 0 and opt.best == (None, None)
        assert opt.ask_trials() == trials[-1:]
        assert opt.ask_trials()[0].fitness is None
        opt.tell_trials({trials[-1].id: sphere(trials[-1].genes)})
        assert opt.generation == 1 and opt.best[1] is not None
        assert {t.id for t in opt.ask_trials()}.isdisjoint({t.id for t in trials})

    def test_telling_a_trial_twice(self):
        opt = self.make()
        trials = opt.ask_trials()
        first = trials[0]
        opt.tell_trials({first.id: 1.0})
        opt.tell_trials({first.id: 1.0})  # same value: harmless
        with pytest.raises(ValueError, match=rf"trials\.{first.id}: already told"):
            opt.tell_trials({first.id: 2.0})
        opt.tell_trials({t.id: sphere(t.genes) for t in trials[1:]})
        state = json.dumps(opt.state)
        opt.tell_trials({first.id: 1.0})  # the told generation, same value: harmless
        assert json.dumps(opt.state) == state
        with pytest.raises(ValueError, match=rf"trials\.{first.id}: already told"):
            opt.tell_trials({first.id: 3.0})

    def test_a_failed_tell_records_nothing(self):
        opt = self.make()
        trials = opt.ask_trials()
        state = json.dumps(opt.state)
        with pytest.raises(ValueError, match=r"trials\.9999: not an open trial"):
            opt.tell_trials({trials[0].id: 1.0, 9999: 1.0})
        assert json.dumps(opt.state) == state

    # bounds, gene types, incumbent -------------------------------------------------------
    def test_candidates_respect_bounds(self):
        opt = self.make()
        for _ in range(5):
            cands = opt.ask()
            assert all(-5 <= g <= 5 for c in cands for g in c.genes)
            opt.tell([sphere(c.genes) for c in cands])

    def test_candidates_respect_gene_types(self):
        opt = self.cls.create(MIXED, population_size=12, seed=4, x0=[0.0, 2, 1, 0.5])
        seen = set()
        for _ in range(8):
            trials = opt.ask_trials()
            for t in trials:
                check_genes(MIXED, t.genes)  # ints whole, categorical a valid index
                seen.add(t.genes[2])
            opt.tell_trials({t.id: -abs(t.genes[1] - 4) - t.genes[0] ** 2 for t in trials})
        genes, _ = opt.best
        assert genes is not None
        check_genes(MIXED, genes)
        assert len(seen) >= 2  # the categorical gene is searched

    def test_improves_on_sphere(self):
        opt = self.make()
        first = max(sphere(c.genes) for c in opt.ask())
        run(opt, 40)
        _, best = opt.best
        assert best is not None and best > self.sphere_target and best > first

    def test_minimizes_a_declared_min_objective(self):
        opt = self.make(objectives=("min",))
        first = min(-sphere(c.genes) for c in opt.ask())
        run(opt, 30, fitness=lambda g: -sphere(g))
        _, best = opt.best
        assert best is not None and best < -self.sphere_target and best < first

    def test_starts_from_incumbent(self):
        near = self.cls.create(BOUNDS, population_size=8, seed=1, x0=[1.0, 1.0, 1.0, 1.0])
        far = self.cls.create(BOUNDS, population_size=8, seed=1, x0=[-4.0, -4.0, -4.0, -4.0])
        mean = lambda opt: np.mean([c.genes for c in opt.ask()], axis=0)  # noqa: E731
        assert np.abs(mean(near) - 1.0).max() < np.abs(mean(far) - 1.0).min()

    # constraints and failed evaluations --------------------------------------------------
    def test_a_feasible_candidate_beats_an_infeasible_one(self):
        opt = self.make(constraints=1)
        trials = opt.ask_trials()
        feasible = trials[4]
        results = {t.id: Fitness((100.0 + i,), (1.0 + i,)) for i, t in enumerate(trials)}
        results[feasible.id] = Fitness((-100.0,), (0.0,))
        opt.tell_trials(results)
        best = opt.best_trial
        assert best is not None and best.id == feasible.id and best.fitness.feasible
        assert opt.best == (feasible.genes, -100.0)

    def test_infeasible_ones_rank_by_violation(self):
        opt = self.make(constraints=2)
        trials = opt.ask_trials()
        results = {t.id: Fitness((float(i),), (5.0, 5.0 - 0.1 * i)) for i, t in enumerate(trials)}
        results[trials[2].id] = Fitness((-50.0,), (0.5, -3.0))  # least violation
        opt.tell_trials(results)
        assert opt.best_trial is not None and opt.best_trial.id == trials[2].id

    def test_respects_a_constraint(self):
        opt = self.make(constraints=1)
        for _ in range(40):
            trials = opt.ask_trials()
            opt.tell_trials(
                {t.id: Fitness((sphere(t.genes),), (2.0 - t.genes[0],)) for t in trials}
            )
        best = opt.best_trial
        assert best is not None and best.fitness is not None and best.fitness.feasible
        assert best.genes[0] >= 2.0 and best.fitness.objectives[0] > self.constrained_target

    def test_failed_evaluations_rank_last_and_state_stays_strict_json(self):
        opt = self.make()
        trials = opt.ask_trials()
        results: dict[int, float] = {t.id: math.nan for t in trials}
        results[trials[1].id] = -math.inf
        results[trials[3].id] = math.inf
        opt.tell_trials(results)
        json.dumps(opt.state, allow_nan=False)
        assert opt.best == (trials[3].genes, math.inf)
        opt = roundtrip(opt)
        opt.tell([math.nan] * len(opt.ask()))
        assert opt.best[1] == math.inf
        only_failed = self.make()
        only_failed.tell([math.nan] * len(only_failed.ask()))
        assert only_failed.best[1] == FAILED and only_failed.best_trial.fitness.failed

    def test_state_stays_small(self):
        opt = run(self.make(), 3)
        assert len(json.dumps(opt.state)) < 20_000

    # wrong input -------------------------------------------------------------------------
    def test_tell_checks_its_input(self):
        opt = self.make()
        with pytest.raises(ValueError, match="tell: nothing was asked"):
            opt.tell([0.0] * 12)
        trials = opt.ask_trials()
        with pytest.raises(ValueError, match="expected 12"):
            opt.tell([0.0])
        with pytest.raises(ValueError, match=r"trials\.\d+: expected 1 objective"):
            opt.tell_trials({trials[0].id: Fitness((1.0, 2.0))})
        with pytest.raises(ValueError, match=r"trials\.\d+: expected 0 constraint"):
            opt.tell_trials({trials[0].id: Fitness((1.0,), (0.0,))})
        with pytest.raises(ValueError, match=r"trials\.\d+: fitness: 'x' is neither"):
            opt.tell_trials({trials[0].id: "x"})  # type: ignore[dict-item]
        with pytest.raises(ValueError, match="a trial id is an integer"):
            opt.tell_trials({"0": 1.0})  # type: ignore[dict-item]
        with pytest.raises(ValueError, match=r"trials\.-1: not an open trial"):
            opt.tell_trials({-1: 1.0})

    def test_create_checks_its_input(self):
        cases = [
            ({"bounds": []}, "bounds: at least one gene"),
            ({"bounds": [(1.0, 1.0)]}, r"bounds\[0\]: low must be"),
            ({"bounds": [(0.0, math.inf)]}, r"bounds\[0\]"),
            ({"population_size": 1}, "population_size: at least 2"),
            ({"seed": 1.5}, "seed: expected an integer"),
            ({"x0": [0.0]}, "x0: expected 4 values"),
            ({"x0": [0.0, math.nan, 0.0, 0.0]}, r"x0\[1\]"),
            ({"objectives": ("up",)}, r"objectives\[0\]"),
            ({"objectives": ()}, "objectives: "),
            ({"constraints": -1}, "constraints: "),
            ({"no_such_param": 1}, "params.no_such_param: unknown"),
        ]
        for override, message in cases:
            kw = {"bounds": BOUNDS, "population_size": 12, "seed": 3} | override
            with pytest.raises(ValueError, match=message):
                self.cls.create(**kw)

    def test_step_size_is_none_or_positive(self):
        step = run(self.make(), 2).step_size
        assert step is None or step > 0


class TestGeneticAlgorithm(OptimizerConformance):
    cls = GeneticAlgorithm
    sphere_target = -0.5
    constrained_target = -2.0

    def test_lineage_names_parents(self):
        opt = run(self.make(), 1)
        children = opt.ask()
        assert all(c.parents and all(0 <= p < 12 for p in c.parents) for c in children)


class TestCmaEs(OptimizerConformance):
    cls = CmaEs

    def test_step_size_shrinks_as_it_converges(self):
        opt = self.make()
        start = opt.step_size
        run(opt, 40)
        assert start is not None and opt.step_size is not None and opt.step_size < start / 3


# -- module-level parts of the contract ------------------------------------------------------
def test_unknown_kind_names_the_field():
    with pytest.raises(ValueError, match="optimizer_state.kind: unknown optimizer 'nope'"):
        Optimizer.restore({"kind": "nope"})


def test_an_older_state_version_is_refused_by_name():
    state = GeneticAlgorithm.create(BOUNDS, population_size=4, seed=1).state | {"version": 1}
    with pytest.raises(ValueError, match="optimizer_state.version"):
        Optimizer.restore(state)


def test_a_kind_registers_once():
    class Impostor(GeneticAlgorithm):
        kind = "ga"

    with pytest.raises(ValueError, match="kind: 'ga' is already registered"):
        register(Impostor)
    assert OPTIMIZERS["ga"] is GeneticAlgorithm


def test_fitness_from_a_float_and_through_json():
    assert Fitness.of(2) == Fitness((2.0,))
    f = Fitness((math.nan, -math.inf), (math.inf, -1.0))
    back = Fitness.from_json(json.loads(json.dumps(f.to_json(), allow_nan=False)))
    assert back.to_json() == f.to_json() and back.failed
    assert Fitness.of({"objectives": [1.0], "constraints": [0.5]}).violation == 0.5
    with pytest.raises(ValueError, match=r"fitness.objectives: at least one"):
        Fitness(())
    with pytest.raises(ValueError, match=r"fitness.constraints\[0\]"):
        Fitness((1.0,), (True,))
    with pytest.raises(ValueError, match="fitness: not a fitness object"):
        Fitness.from_json({"value": 1})


def test_deb_ranking():
    feasible_low = Fitness((-10.0,), (0.0, -1.0))
    feasible_high = Fitness((5.0,), (-2.0,))
    slightly_off = Fitness((99.0,), (0.1,))
    far_off = Fitness((99.0,), (3.0,))
    failed = Fitness((math.nan,))
    order = [failed, far_off, slightly_off, feasible_low, feasible_high]
    keys = [rank_key(f) for f in order]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert rank_key(Fitness((1.0,)), "min") > rank_key(Fitness((2.0,)), "min")
    assert dense_ranks([(0.0, 2.0), (-1.0, 0.0), (0.0, 2.0), (0.0, 3.0)]) == [1, 0, 1, 2]


def test_gene_spec_bounds_drive_the_space():
    opt = CmaEs.create(MIXED, population_size=6, seed=1)
    assert [s.type for s in opt.specs] == ["float", "int", "categorical", "float"]
    assert opt.bounds == [(-5.0, 5.0), (1.0, 6.0), (0.0, 2.0), (0.0, 1.0)]
    with pytest.raises(ValidationFailedError, match="genes.act"):
        check_genes(MIXED, [0.0, 2.0, 3.0, 0.5])
