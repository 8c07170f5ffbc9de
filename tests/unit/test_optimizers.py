"""Conformance: every optimizer plug-in subclasses OptimizerConformance."""

from __future__ import annotations

import json
import random

import numpy as np
from chimera.domain.optimizers import CmaEs, GeneticAlgorithm, Optimizer

BOUNDS = [(-5.0, 5.0)] * 4


def sphere(genes) -> float:  # maximize the negative sphere, optimum 0 at x = 1
    return -float(sum((g - 1.0) ** 2 for g in genes))


class OptimizerConformance:
    cls: type[Optimizer]
    sphere_target = -0.05  # best fitness expected after 40 generations of 12

    def make(self, seed: int = 3) -> Optimizer:
        return self.cls.create(BOUNDS, population_size=12, seed=seed)

    def test_ask_is_seeded_and_repeatable(self):
        assert self.make().ask() == self.make().ask()
        assert self.make(1).ask() != self.make(2).ask()

    def test_ask_twice_before_tell_returns_the_same(self):
        opt = self.make()
        assert opt.ask() == opt.ask()

    def test_state_round_trips_through_json(self):
        a = self.make()
        for _ in range(3):
            a.tell([sphere(c.genes) for c in a.ask()])
        b = Optimizer.restore(json.loads(json.dumps(a.state)))
        assert a.ask() == b.ask()
        fit = [sphere(c.genes) for c in a.ask()]
        a.tell(fit)
        b.tell(fit)
        assert a.ask() == b.ask()

    def test_leaves_global_generators_alone(self):
        random.seed(11)
        np.random.seed(11)
        expected = (random.random(), np.random.random())
        random.seed(11)
        np.random.seed(11)
        opt = self.make()
        opt.tell([sphere(c.genes) for c in opt.ask()])
        assert (random.random(), np.random.random()) == expected

    def test_candidates_respect_bounds(self):
        opt = self.make()
        for _ in range(5):
            cands = opt.ask()
            assert all(-5 <= g <= 5 for c in cands for g in c.genes)
            opt.tell([sphere(c.genes) for c in cands])

    def test_improves_on_sphere(self):
        opt = self.make()
        first = None
        for _ in range(40):
            fit = [sphere(c.genes) for c in opt.ask()]
            first = first if first is not None else max(fit)
            opt.tell(fit)
        _, best = opt.best
        assert best is not None and best > self.sphere_target and best > first

    def test_starts_from_incumbent(self):
        near = self.cls.create(BOUNDS, population_size=8, seed=1, x0=[1.0, 1.0, 1.0, 1.0])
        far = self.cls.create(BOUNDS, population_size=8, seed=1, x0=[-4.0, -4.0, -4.0, -4.0])
        mean = lambda opt: np.mean([c.genes for c in opt.ask()], axis=0)  # noqa: E731
        assert np.abs(mean(near) - 1.0).max() < np.abs(mean(far) - 1.0).min()

    def test_tell_checks_its_input(self):
        opt = self.make()
        opt.ask()
        try:
            opt.tell([0.0])
        except ValueError as exc:
            assert "expected 12" in str(exc)
        else:  # pragma: no cover
            raise AssertionError("tell accepted a wrong-sized fitness list")


class TestGeneticAlgorithm(OptimizerConformance):
    cls = GeneticAlgorithm
    sphere_target = -0.5

    def test_lineage_names_parents(self):
        opt = self.make()
        opt.tell([sphere(c.genes) for c in opt.ask()])
        children = opt.ask()
        assert all(c.parents and all(0 <= p < 12 for p in c.parents) for c in children)


class TestCmaEs(OptimizerConformance):
    cls = CmaEs


def test_unknown_kind_names_the_field():
    try:
        Optimizer.restore({"kind": "nope"})
    except ValueError as exc:
        assert "optimizer_state.kind" in str(exc)
