"""Layer 7's optimizers: DEAP behind ask/tell, with state that serializes to JSON.

Roles are kept apart (STYLE.md): an optimizer only asks and tells. It never evaluates; the
evaluator (a Step Functions Map, a Batch job, or in process) does that with the candidates
it asked for, and the store keeps the JSON state between calls. Fitness is maximized.

DEAP's global `creator` classes are avoided: a small local Individual/Fitness pair serves its
operators. DEAP draws from the global `random` and `numpy.random` generators, so each ask runs
inside `_seeded`, which swaps the optimizer's own generator state in and out.
"""

from __future__ import annotations

import abc
import contextlib
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from deap import base, cma, tools

Bounds = list[tuple[float, float]]


@dataclass(frozen=True)
class Candidate:
    genes: tuple[float, ...]
    parents: tuple[int, ...] = ()


class _Fitness(base.Fitness):
    weights = (1.0,)


class _Individual(list):  # type: ignore[type-arg]
    def __init__(self, genes: Sequence[float], index: int = -1) -> None:
        super().__init__(genes)
        self.fitness = _Fitness()
        self.slot = index  # position in the parent population (`index` is list.index)
        self.parents: tuple[int, ...] = (index,) if index >= 0 else ()


@contextlib.contextmanager
def _seeded(state: dict[str, Any]) -> Iterator[None]:
    """Run DEAP with this optimizer's generators; the caller's generators are left as they were."""
    outer_py, outer_np = random.getstate(), np.random.get_state()
    try:
        py = state["py_rng"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        npr = state["np_rng"]
        np.random.set_state((npr[0], np.asarray(npr[1], dtype=np.uint32), npr[2], npr[3], npr[4]))
        yield
        v, internal, gauss = random.getstate()
        state["py_rng"] = [v, list(internal), gauss]
        name, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
        state["np_rng"] = [name, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)]
    finally:
        random.setstate(outer_py)
        np.random.set_state(outer_np)


def _rng_state(seed: int) -> dict[str, Any]:
    py = random.Random(seed).getstate()
    name, keys, pos, has_gauss, cached = np.random.RandomState(seed).get_state()  # type: ignore[misc]
    return {
        "py_rng": [py[0], list(py[1]), py[2]],
        "np_rng": [name, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)],
    }


class Optimizer(abc.ABC):
    """Ask/tell over a bounded real vector. `state` is plain JSON; `restore` rebuilds."""

    kind: ClassVar[str]

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    # construction ------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        bounds: Bounds,
        population_size: int,
        seed: int,
        x0: Sequence[float] | None = None,
        **params: Any,
    ) -> Optimizer:
        state: dict[str, Any] = {
            "kind": cls.kind,
            "bounds": [list(b) for b in bounds],
            "population_size": population_size,
            "params": cls.default_params(bounds) | params,
            "x0": list(x0) if x0 is not None else None,
            "generation": 0,
            "pending": None,
            "best_genes": None,
            "best_fitness": None,
            **_rng_state(seed),
        }
        opt = cls(state)
        opt._init_state()
        return opt

    @staticmethod
    def restore(state: dict[str, Any]) -> Optimizer:
        cls = OPTIMIZERS.get(str(state.get("kind")))
        if cls is None:
            raise ValueError(f"optimizer_state.kind: unknown optimizer {state.get('kind')!r}")
        return cls(state)

    @staticmethod
    def default_params(bounds: Bounds) -> dict[str, Any]:
        return {}

    def _init_state(self) -> None:  # noqa: B027 - optional hook
        pass

    # the protocol ------------------------------------------------------------------------
    def ask(self) -> list[Candidate]:
        """The next candidates. Asking again before tell returns the same ones."""
        if self.state["pending"] is None:
            with _seeded(self.state):
                self.state["pending"] = self._ask()
        return [
            Candidate(tuple(self._clip(c["genes"])), tuple(c["parents"]))
            for c in self.state["pending"]
        ]

    def tell(self, fitnesses: Sequence[float]) -> None:
        pending = self.state["pending"]
        if pending is None:
            raise ValueError("tell: nothing was asked")
        if len(fitnesses) != len(pending):
            raise ValueError(f"tell: expected {len(pending)} fitnesses, got {len(fitnesses)}")
        fit = [float(f) if math.isfinite(f) else -1e300 for f in fitnesses]
        best = int(np.argmax(fit))
        if self.state["best_fitness"] is None or fit[best] > self.state["best_fitness"]:
            self.state["best_fitness"] = fit[best]
            self.state["best_genes"] = self._clip(pending[best]["genes"])
        with _seeded(self.state):
            self._tell(pending, fit)
        self.state["pending"] = None
        self.state["generation"] += 1

    @property
    def best(self) -> tuple[tuple[float, ...] | None, float | None]:
        genes = self.state["best_genes"]
        return (tuple(genes) if genes is not None else None, self.state["best_fitness"])

    # helpers -----------------------------------------------------------------------------
    @property
    def bounds(self) -> Bounds:
        return [(float(lo), float(hi)) for lo, hi in self.state["bounds"]]

    def _clip(self, genes: Sequence[float]) -> list[float]:
        return [min(max(float(g), lo), hi) for g, (lo, hi) in zip(genes, self.bounds, strict=True)]

    def _initial(self, n: int) -> list[list[float]]:
        """A first population: the incumbent (x0) and samples around it, else uniform."""
        x0 = self.state["x0"]
        out = []
        for i in range(n):
            if x0 is not None and i == 0:
                out.append(list(x0))
            elif x0 is not None:
                out.append(
                    self._clip(
                        [
                            random.gauss(x, 0.1 * (hi - lo))
                            for x, (lo, hi) in zip(x0, self.bounds, strict=True)
                        ]
                    )
                )
            else:
                out.append([random.uniform(lo, hi) for lo, hi in self.bounds])
        return out

    @abc.abstractmethod
    def _ask(self) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def _tell(self, pending: list[dict[str, Any]], fitnesses: list[float]) -> None: ...


class GeneticAlgorithm(Optimizer):
    """Generational GA: elitism, tournament selection, blend crossover, Gaussian mutation."""

    kind = "ga"

    @staticmethod
    def default_params(bounds: Bounds) -> dict[str, Any]:
        return {
            "tournsize": 3,
            "cxpb": 0.6,
            "mutpb": 0.3,
            "indpb": 0.3,
            "alpha": 0.3,
            "sigma_frac": 0.1,
            "elite": 2,
        }

    def _init_state(self) -> None:
        self.state["population"] = None  # list of {"genes", "fitness"} of the last told gen

    def _ask(self) -> list[dict[str, Any]]:
        n = self.state["population_size"]
        pop = self.state["population"]
        if pop is None:
            return [{"genes": g, "parents": []} for g in self._initial(n)]
        p = self.state["params"]
        parents = []
        for i, ind in enumerate(pop):
            x = _Individual(ind["genes"], i)
            x.fitness.values = (ind["fitness"],)
            parents.append(x)
        elite = tools.selBest(parents, min(p["elite"], n))
        chosen = tools.selTournament(parents, n - len(elite), tournsize=p["tournsize"])
        offspring = [_Individual(list(x), x.slot) for x in chosen]
        sigma = [p["sigma_frac"] * (hi - lo) for lo, hi in self.bounds]
        for a, b in zip(offspring[::2], offspring[1::2], strict=False):
            if random.random() < p["cxpb"]:
                tools.cxBlend(a, b, p["alpha"])
                a.parents = b.parents = tuple(sorted({*a.parents, *b.parents}))
        for x in offspring:
            if random.random() < p["mutpb"]:
                tools.mutGaussian(x, mu=0.0, sigma=sigma, indpb=p["indpb"])
        kept = [{"genes": list(x), "parents": [x.slot]} for x in elite]
        return kept + [{"genes": self._clip(x), "parents": list(x.parents)} for x in offspring]

    def _tell(self, pending: list[dict[str, Any]], fitnesses: list[float]) -> None:
        self.state["population"] = [
            {"genes": c["genes"], "fitness": f} for c, f in zip(pending, fitnesses, strict=True)
        ]


class CmaEs(Optimizer):
    """DEAP's CMA-ES (Hansen). Out-of-bounds samples are evaluated clipped and penalized."""

    kind = "cma-es"

    @staticmethod
    def default_params(bounds: Bounds) -> dict[str, Any]:
        width = float(np.mean([hi - lo for lo, hi in bounds]))
        return {"sigma": 0.15 * width, "penalty": 1.0}

    def _init_state(self) -> None:
        lo = np.array([b[0] for b in self.bounds])
        hi = np.array([b[1] for b in self.bounds])
        x0 = self.state["x0"]
        centroid = np.array(x0, dtype=float) if x0 is not None else (lo + hi) / 2
        dim = len(centroid)
        self.state["cma"] = {
            "centroid": centroid.tolist(),
            "sigma": self.state["params"]["sigma"],
            "pc": [0.0] * dim,
            "ps": [0.0] * dim,
            "C": np.identity(dim).tolist(),
            "update_count": 0,
        }

    def _strategy(self) -> cma.Strategy:
        s = self.state["cma"]
        strat = cma.Strategy(
            centroid=s["centroid"],
            sigma=s["sigma"],
            lambda_=self.state["population_size"],
            cmatrix=np.array(s["C"]),
        )
        strat.pc = np.array(s["pc"])
        strat.ps = np.array(s["ps"])
        strat.update_count = s["update_count"]
        return strat

    def _ask(self) -> list[dict[str, Any]]:
        samples = self._strategy().generate(lambda x: list(map(float, x)))
        return [{"genes": g, "parents": []} for g in samples]

    def _tell(self, pending: list[dict[str, Any]], fitnesses: list[float]) -> None:
        strat = self._strategy()
        population = []
        for c, f in zip(pending, fitnesses, strict=True):
            ind = _Individual(c["genes"])
            overshoot = np.subtract(c["genes"], self._clip(c["genes"]))
            ind.fitness.values = (
                f - self.state["params"]["penalty"] * float(overshoot @ overshoot),
            )
            population.append(ind)
        strat.update(population)
        self.state["cma"] = {
            "centroid": strat.centroid.tolist(),
            "sigma": float(strat.sigma),
            "pc": strat.pc.tolist(),
            "ps": strat.ps.tolist(),
            "C": strat.C.tolist(),
            "update_count": int(strat.update_count),
        }


OPTIMIZERS: dict[str, type[Optimizer]] = {cls.kind: cls for cls in (GeneticAlgorithm, CmaEs)}
