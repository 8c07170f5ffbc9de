"""Layer 7's optimizer contract, and DEAP's GA and CMA-ES behind it.

Roles are kept apart (STYLE.md): an optimizer only asks and tells. It never evaluates; the
evaluator (a Step Functions Map, a Batch job, or in process) does that with the trials it
asked for, and the store keeps the JSON state between calls.

The contract every plug-in keeps (tests/unit/test_optimizers.py checks it):

- The search space is a genome schema (GeneSpecs) or plain float bounds. Genes travel as
  floats; an optimizer only asks values valid for each gene's type (int genes whole, a
  categorical gene an index into its choices).
- Fitness is a vector of objectives (each maximized, or minimized where declared) and of
  constraint values (<= 0 is feasible). A plain float is one maximized objective. A NaN
  anywhere marks a failed evaluation: it ranks below every evaluation that did not fail.
- Ask/tell works per trial: trials have ids; `tell_trials` takes any subset of the open ones,
  in any order; a generational optimizer updates once its whole generation is told. Asking
  again before telling returns the same open trials; telling a trial again with the same
  fitness is harmless, with another fitness an error naming the trial.
- Each plug-in owns a `numpy.random.Generator` whose state is part of its JSON state. DEAP
  draws from the global `random` and `numpy.random`; those are seeded from the plug-in's
  generator only inside `_deap_globals`, and the caller's are put back after.
- `state` is strict JSON (no NaN or infinity: non-finite fitness values are strings) and
  `Optimizer.restore(state)` rebuilds any plug-in through the one registry, `OPTIMIZERS`.
"""

from __future__ import annotations

import abc
import contextlib
import math
import numbers
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
from deap import base, cma, tools

from chimera.domain.genome import GeneSpec

Bounds = list[tuple[float, float]]
Direction = Literal["max", "min"]
STATE_VERSION = 2
FAILED = -1e300  # what `best` reports for a failed (NaN) evaluation, as before


# -- fitness ---------------------------------------------------------------------------------
def _num_to_json(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)  # "nan", "inf", "-inf"


def _num_from_json(x: float | str) -> float:
    return float(x)


@dataclass(frozen=True)
class Fitness:
    """What one evaluation measured: objectives, and constraints (<= 0 is feasible)."""

    objectives: tuple[float, ...]
    constraints: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.objectives:
            raise ValueError("fitness.objectives: at least one objective")
        for name, values in (("objectives", self.objectives), ("constraints", self.constraints)):
            for i, v in enumerate(values):
                if isinstance(v, bool) or not isinstance(v, numbers.Real):
                    raise ValueError(f"fitness.{name}[{i}]: {v!r} is not a number")
        object.__setattr__(self, "objectives", tuple(float(v) for v in self.objectives))
        object.__setattr__(self, "constraints", tuple(float(v) for v in self.constraints))

    @classmethod
    def of(cls, value: FitnessLike) -> Fitness:
        """A Fitness from a Fitness, a float (one maximized objective) or its JSON form."""
        if isinstance(value, Fitness):
            return value
        if isinstance(value, Mapping):
            return cls.from_json(value)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"fitness: {value!r} is neither a number nor a Fitness")
        return cls((float(value),))

    @property
    def failed(self) -> bool:
        return any(math.isnan(v) for v in (*self.objectives, *self.constraints))

    @property
    def violation(self) -> float:
        """Total constraint violation: 0 when feasible, infinite when the evaluation failed."""
        if self.failed:
            return math.inf
        return float(sum(max(c, 0.0) for c in self.constraints))

    @property
    def feasible(self) -> bool:
        return self.violation == 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"objectives": [_num_to_json(v) for v in self.objectives]}
        if self.constraints:
            out["constraints"] = [_num_to_json(v) for v in self.constraints]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fitness:
        try:
            return cls(
                tuple(_num_from_json(v) for v in data["objectives"]),
                tuple(_num_from_json(v) for v in data.get("constraints", ())),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"fitness: not a fitness object: {data!r}") from exc


FitnessLike = Fitness | float | int | Mapping[str, Any]


def rank_key(fitness: Fitness, direction: Direction = "max") -> tuple[float, float]:
    """Deb's feasibility rules for one objective, as a key where larger is better.

    A feasible candidate beats an infeasible one; two feasible ones compare by the objective;
    two infeasible ones by total violation. A failed evaluation (NaN) comes last.
    """
    violation = fitness.violation
    if violation > 0:
        return (-violation, 0.0)
    value = fitness.objectives[0]
    return (0.0, value if direction == "max" else -value)


def dense_ranks(keys: Sequence[tuple[float, float]]) -> list[int]:
    """0 for the worst key, equal keys share a rank: what DEAP's selection and CMA-ES need."""
    order = {k: i for i, k in enumerate(sorted(set(keys)))}
    return [order[k] for k in keys]


# -- trials ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """The legacy view of a trial: genes and the parents' indices in the last generation."""

    genes: tuple[float, ...]
    parents: tuple[int, ...] = ()


@dataclass(frozen=True)
class Trial:
    id: int
    genes: tuple[float, ...]
    parents: tuple[int, ...] = ()
    generation: int = 0
    fitness: Fitness | None = field(default=None, compare=False)


# -- the plug-in's own generator, and DEAP's globals -----------------------------------------
def _rng_to_json(rng: np.random.Generator) -> dict[str, Any]:
    s = rng.bit_generator.state  # PCG64: 128-bit integers, kept as hex (JSON readers differ)
    return {
        "bit_generator": s["bit_generator"],
        "state": hex(s["state"]["state"]),
        "inc": hex(s["state"]["inc"]),
        "has_uint32": int(s["has_uint32"]),
        "uinteger": int(s["uinteger"]),
    }


def _rng_from_json(data: Mapping[str, Any]) -> np.random.Generator:
    if data.get("bit_generator") != "PCG64":
        raise ValueError(f"optimizer_state.rng: unsupported {data.get('bit_generator')!r}")
    bg = np.random.PCG64()
    bg.state = {
        "bit_generator": "PCG64",
        "state": {"state": int(data["state"], 16), "inc": int(data["inc"], 16)},
        "has_uint32": int(data["has_uint32"]),
        "uinteger": int(data["uinteger"]),
    }
    return np.random.Generator(bg)


@contextlib.contextmanager
def _deap_globals(rng: np.random.Generator) -> Iterator[None]:
    """Seed DEAP's global generators from `rng` for one call; the caller's are put back."""
    outer_py, outer_np = random.getstate(), np.random.get_state()
    try:
        random.seed(int(rng.integers(2**63)))
        np.random.seed(rng.integers(2**32, size=4, dtype=np.uint32))
        yield
    finally:
        random.setstate(outer_py)
        np.random.set_state(outer_np)


# -- the search space ------------------------------------------------------------------------
def _space(space: Sequence[GeneSpec] | Sequence[tuple[float, float]]) -> list[GeneSpec]:
    """GeneSpecs from a genome schema or from plain float bounds (named x0, x1, ...)."""
    if not space:
        raise ValueError("bounds: at least one gene")
    specs = []
    for i, item in enumerate(space):
        if isinstance(item, GeneSpec):
            specs.append(item)
            continue
        try:
            lo, hi = (float(v) for v in item)  # type: ignore[attr-defined]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bounds[{i}]: expected (low, high), got {item!r}") from exc
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
            raise ValueError(f"bounds[{i}]: low must be finite and below high, got {item!r}")
        specs.append(GeneSpec(name=f"x{i}", low=lo, high=hi, default=lo))
    return specs


_O = TypeVar("_O", bound="Optimizer")


class Optimizer(abc.ABC):
    """Ask/tell over a genome; `state` is strict JSON and `restore` rebuilds the plug-in.

    A subclass sets `kind`, optionally `default_params`, `_init_state` and `step_size`, and
    implements `_ask` (one generation of raw candidates) and `_tell` (update from ranks).
    """

    kind: ClassVar[str]
    max_objectives: ClassVar[int] = 1

    def __init__(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"optimizer_state.version: expected {STATE_VERSION}, got {state.get('version')!r}"
            )
        self.state = state
        self._rng = _rng_from_json(state["rng"])

    # construction ------------------------------------------------------------------------
    @classmethod
    def create(
        cls: type[_O],
        bounds: Sequence[GeneSpec] | Sequence[tuple[float, float]],
        population_size: int,
        seed: int,
        x0: Sequence[float] | None = None,
        *,
        objectives: Sequence[Direction] = ("max",),
        constraints: int = 0,
        **params: Any,
    ) -> _O:
        """A fresh optimizer over `bounds` (a genome schema or float bounds).

        `objectives` declares each objective's direction; `constraints` how many constraint
        values every fitness carries; `params` override the plug-in's `default_params`.
        """
        specs = _space(bounds)
        if isinstance(population_size, bool) or not isinstance(population_size, int):
            raise ValueError(f"population_size: expected an integer, got {population_size!r}")
        if population_size < 2:
            raise ValueError(f"population_size: at least 2, got {population_size}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed: expected an integer, got {seed!r}")
        directions = list(objectives)
        if not 1 <= len(directions) <= cls.max_objectives:
            raise ValueError(
                f"objectives: {cls.kind} takes 1 to {cls.max_objectives}, got {len(directions)}"
            )
        for i, d in enumerate(directions):
            if d not in ("max", "min"):
                raise ValueError(f"objectives[{i}]: 'max' or 'min', got {d!r}")
        if isinstance(constraints, bool) or not isinstance(constraints, int) or constraints < 0:
            raise ValueError(f"constraints: a count >= 0, got {constraints!r}")
        defaults = cls.default_params(specs)
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise ValueError(f"params.{unknown[0]}: unknown parameter of {cls.kind}")
        start = None
        if x0 is not None:
            if len(x0) != len(specs):
                raise ValueError(f"x0: expected {len(specs)} values, got {len(x0)}")
            start = []
            for i, (spec, v) in enumerate(zip(specs, x0, strict=True)):
                try:
                    start.append(spec.repair(float(v)))
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"x0[{i}]: {v!r} is not a finite number") from exc
        state: dict[str, Any] = {
            "version": STATE_VERSION,
            "kind": cls.kind,
            "bounds": [[s.low, s.high] for s in specs],
            "ints": [i for i, s in enumerate(specs) if s.type == "int"],
            "categoricals": [i for i, s in enumerate(specs) if s.type == "categorical"],
            "objectives": directions,
            "constraints": constraints,
            "population_size": population_size,
            "params": defaults | params,
            "x0": start,
            "generation": 0,
            "next_trial": 0,
            "pending": None,  # the open generation: [{"id", "genes", "parents", "fitness"?}]
            "last_told": None,  # the last told generation: {"first": id, "fitness": [...]}
            "best": None,  # {"trial", "genes", "fitness"}
            "rng": _rng_to_json(np.random.default_rng(seed)),
        }
        opt = cls(state)
        opt._init_state()
        opt._save_rng()
        return opt

    @staticmethod
    def restore(state: dict[str, Any]) -> Optimizer:
        cls = OPTIMIZERS.get(str(state.get("kind")))
        if cls is None:
            raise ValueError(f"optimizer_state.kind: unknown optimizer {state.get('kind')!r}")
        return cls(state)

    @staticmethod
    def default_params(specs: Sequence[GeneSpec]) -> dict[str, Any]:
        return {}

    def _init_state(self) -> None:  # noqa: B027 - optional hook
        pass

    # the per-trial protocol --------------------------------------------------------------
    def ask_trials(self, n: int | None = None) -> list[Trial]:
        """Open (asked, not yet told) trials, at most `n`; the same ones until told.

        A generational optimizer opens a whole generation when none is open and never more
        than one, so it may return fewer than `n`.
        """
        if n is not None and n < 1:
            raise ValueError(f"n: at least 1, got {n}")
        if self.state["pending"] is None:
            raw = self._ask()
            first = self.state["next_trial"]
            self.state["pending"] = [
                {"id": first + i, "genes": c["genes"], "parents": c["parents"]}
                for i, c in enumerate(raw)
            ]
            self.state["next_trial"] = first + len(raw)
            self._save_rng()
        open_ = [self._trial(p) for p in self.state["pending"] if "fitness" not in p]
        return open_ if n is None else open_[:n]

    def tell_trials(self, results: Mapping[int, FitnessLike]) -> None:
        """Record fitness for any open trials; the generation updates once all are told.

        All-or-nothing: on any error nothing is recorded.
        """
        pending = self.state["pending"]
        by_id = {p["id"]: p for p in pending or ()}
        last = self.state["last_told"]
        checked: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for trial_id, value in results.items():
            where = f"trials.{trial_id}"
            if isinstance(trial_id, bool) or not isinstance(trial_id, numbers.Integral):
                raise ValueError(f"{where}: a trial id is an integer")
            trial_id = int(trial_id)
            try:
                fitness = self._check_fitness(Fitness.of(value))
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from exc
            told = fitness.to_json()
            if trial_id in by_id:
                entry = by_id[trial_id]
                if "fitness" in entry and entry["fitness"] != told:
                    raise ValueError(f"{where}: already told {entry['fitness']}, now {told}")
                checked.append((entry, told))
            elif last is not None and 0 <= trial_id - last["first"] < len(last["fitness"]):
                before = last["fitness"][trial_id - last["first"]]
                if before != told:
                    raise ValueError(f"{where}: already told {before}, now {told}")
            else:
                raise ValueError(f"{where}: not an open trial")
        for entry, told in checked:
            entry["fitness"] = told
        if pending and all("fitness" in p for p in pending):
            self._complete(pending)

    # the generational convenience (the contract callers use today) -----------------------
    def ask(self) -> list[Candidate]:
        """The whole open generation (told trials included). Asking again returns the same."""
        self.ask_trials()
        return [
            Candidate(tuple(self._repair(p["genes"])), tuple(p["parents"]))
            for p in self.state["pending"]
        ]

    def tell(self, fitnesses: Sequence[FitnessLike]) -> None:
        """One fitness per candidate of `ask()`, in the same order."""
        pending = self.state["pending"]
        if pending is None:
            raise ValueError("tell: nothing was asked")
        if len(fitnesses) != len(pending):
            raise ValueError(f"tell: expected {len(pending)} fitnesses, got {len(fitnesses)}")
        self.tell_trials({p["id"]: f for p, f in zip(pending, fitnesses, strict=True)})

    # what callers read -------------------------------------------------------------------
    @property
    def best(self) -> tuple[tuple[float, ...] | None, float | None]:
        """The best genes so far and their first objective (FAILED for a failed evaluation)."""
        best = self.state["best"]
        if best is None:
            return None, None
        value = Fitness.from_json(best["fitness"]).objectives[0]
        return tuple(best["genes"]), (FAILED if math.isnan(value) else value)

    @property
    def best_trial(self) -> Trial | None:
        best = self.state["best"]
        if best is None:
            return None
        return Trial(
            id=best["trial"],
            genes=tuple(best["genes"]),
            generation=best["generation"],
            fitness=Fitness.from_json(best["fitness"]),
        )

    @property
    def generation(self) -> int:
        """Generations told so far."""
        return int(self.state["generation"])

    @property
    def step_size(self) -> float | None:
        """The optimizer's own search radius in gene units, where it has one (CMA-ES)."""
        return None

    @property
    def specs(self) -> list[GeneSpec]:
        ints, cats = set(self.state["ints"]), set(self.state["categoricals"])
        out = []
        for i, (lo, hi) in enumerate(self.state["bounds"]):
            if i in cats:
                choices = tuple(range(int(hi) + 1))
                out.append(
                    GeneSpec(name=f"x{i}", type="categorical", low=0, high=hi, choices=choices)
                )
            else:
                kind = "int" if i in ints else "float"
                out.append(GeneSpec(name=f"x{i}", type=kind, low=lo, high=hi, default=lo))
        return out

    @property
    def bounds(self) -> Bounds:
        return [(float(lo), float(hi)) for lo, hi in self.state["bounds"]]

    # helpers for plug-ins ----------------------------------------------------------------
    @property
    def rng(self) -> np.random.Generator:
        return self._rng

    def _save_rng(self) -> None:
        self.state["rng"] = _rng_to_json(self._rng)

    def _discrete(self) -> set[int]:
        return {*self.state["ints"], *self.state["categoricals"]}

    def _clip(self, genes: Sequence[float]) -> list[float]:
        return [min(max(float(g), lo), hi) for g, (lo, hi) in zip(genes, self.bounds, strict=True)]

    def _repair(self, genes: Sequence[float]) -> list[float]:
        """Clipped to the bounds, discrete genes rounded: what a trial may carry."""
        discrete = self._discrete()
        return [
            float(math.floor(g + 0.5)) if i in discrete else g
            for i, g in enumerate(self._clip(genes))
        ]

    def _trial(self, entry: Mapping[str, Any]) -> Trial:
        fitness = Fitness.from_json(entry["fitness"]) if "fitness" in entry else None
        return Trial(
            id=entry["id"],
            genes=tuple(self._repair(entry["genes"])),
            parents=tuple(entry["parents"]),
            generation=self.generation,
            fitness=fitness,
        )

    def _check_fitness(self, fitness: Fitness) -> Fitness:
        want_o, want_c = len(self.state["objectives"]), self.state["constraints"]
        if len(fitness.objectives) != want_o:
            raise ValueError(f"expected {want_o} objective(s), got {len(fitness.objectives)}")
        if len(fitness.constraints) != want_c:
            raise ValueError(f"expected {want_c} constraint(s), got {len(fitness.constraints)}")
        return fitness

    def _key(self, fitness: Fitness) -> tuple[float, float]:
        return rank_key(fitness, self.state["objectives"][0])

    def _complete(self, pending: list[dict[str, Any]]) -> None:
        fitnesses = [Fitness.from_json(p["fitness"]) for p in pending]
        keys = [self._key(f) for f in fitnesses]
        top = max(range(len(keys)), key=keys.__getitem__)
        best = self.state["best"]
        if best is None or keys[top] > self._key(Fitness.from_json(best["fitness"])):
            self.state["best"] = {
                "trial": pending[top]["id"],
                "generation": self.generation,
                "genes": self._repair(pending[top]["genes"]),
                "fitness": pending[top]["fitness"],
            }
        self._tell(pending, fitnesses)
        self._save_rng()
        self.state["last_told"] = {
            "first": pending[0]["id"],
            "fitness": [p["fitness"] for p in pending],
        }
        self.state["pending"] = None
        self.state["generation"] += 1

    def _initial(self, n: int) -> list[list[float]]:
        """A first population: the incumbent (x0) and samples around it, else uniform."""
        lo, hi = np.array(self.bounds).T
        x0 = self.state["x0"]
        if x0 is None:
            return self.rng.uniform(lo, hi, size=(n, len(lo))).tolist()
        around = self.rng.normal(x0, 0.1 * (hi - lo), size=(n - 1, len(lo)))
        return [list(x0)] + [self._repair(x) for x in around.tolist()]

    @abc.abstractmethod
    def _ask(self) -> list[dict[str, Any]]:
        """One generation of raw candidates, [{"genes": [...], "parents": [...]}]."""

    @abc.abstractmethod
    def _tell(self, pending: list[dict[str, Any]], fitnesses: list[Fitness]) -> None:
        """Update from a whole told generation (in the order it was asked)."""


OPTIMIZERS: dict[str, type[Optimizer]] = {}


def register(cls: type[_O]) -> type[_O]:
    """Add a plug-in to the one registry `restore` reads (by its `kind`)."""
    if cls.kind in OPTIMIZERS and OPTIMIZERS[cls.kind] is not cls:
        raise ValueError(f"kind: {cls.kind!r} is already registered")
    OPTIMIZERS[cls.kind] = cls
    return cls


# -- DEAP adapters ---------------------------------------------------------------------------
class _Fitness(base.Fitness):
    weights = (1.0,)


class _Individual(list):  # type: ignore[type-arg]
    def __init__(self, genes: Sequence[float], index: int = -1) -> None:
        super().__init__(genes)
        self.fitness = _Fitness()
        self.slot = index  # position in the parent population (`index` is list.index)
        self.parents: tuple[int, ...] = (index,) if index >= 0 else ()


@register
class GeneticAlgorithm(Optimizer):
    """Generational GA: elitism, tournament selection, blend crossover, Gaussian mutation.

    Selection uses Deb's feasibility ranks. Int and categorical genes are searched as
    rounded numbers (a categorical index is treated as ordered).
    """

    kind = "ga"

    @staticmethod
    def default_params(specs: Sequence[GeneSpec]) -> dict[str, Any]:
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
        self.state["population"] = None  # [{"genes", "rank"}] of the last told generation

    def _ask(self) -> list[dict[str, Any]]:
        n = self.state["population_size"]
        pop = self.state["population"]
        if pop is None:
            return [{"genes": g, "parents": []} for g in self._initial(n)]
        p = self.state["params"]
        parents = []
        for i, ind in enumerate(pop):
            x = _Individual(ind["genes"], i)
            x.fitness.values = (ind["rank"],)
            parents.append(x)
        discrete = self._discrete()
        sigma = [
            max(p["sigma_frac"] * (hi - lo), 0.5) if i in discrete else p["sigma_frac"] * (hi - lo)
            for i, (lo, hi) in enumerate(self.bounds)
        ]
        with _deap_globals(self.rng):
            elite = tools.selBest(parents, min(p["elite"], n))
            chosen = tools.selTournament(parents, n - len(elite), tournsize=p["tournsize"])
            offspring = [_Individual(list(x), x.slot) for x in chosen]
            for a, b in zip(offspring[::2], offspring[1::2], strict=False):
                if random.random() < p["cxpb"]:
                    tools.cxBlend(a, b, p["alpha"])
                    a.parents = b.parents = tuple(sorted({*a.parents, *b.parents}))
            for x in offspring:
                if random.random() < p["mutpb"]:
                    tools.mutGaussian(x, mu=0.0, sigma=sigma, indpb=p["indpb"])
        kept = [{"genes": list(x), "parents": [x.slot]} for x in elite]
        return kept + [{"genes": self._repair(x), "parents": list(x.parents)} for x in offspring]

    def _tell(self, pending: list[dict[str, Any]], fitnesses: list[Fitness]) -> None:
        ranks = dense_ranks([self._key(f) for f in fitnesses])
        self.state["population"] = [
            {"genes": self._repair(c["genes"]), "rank": r}
            for c, r in zip(pending, ranks, strict=True)
        ]


@register
class CmaEs(Optimizer):
    """DEAP's CMA-ES (Hansen), ranked by Deb's rules.

    Samples outside the bounds are evaluated clipped (and rounded for discrete genes); a
    feasible one's objective is penalized by its squared overshoot when ranked.
    """

    kind = "cma-es"

    @staticmethod
    def default_params(specs: Sequence[GeneSpec]) -> dict[str, Any]:
        width = float(np.mean([s.high - s.low for s in specs]))
        return {"sigma": 0.15 * width, "penalty": 1.0}

    def _init_state(self) -> None:
        lo, hi = np.array(self.bounds).T
        x0 = self.state["x0"]
        centroid = np.array(x0, dtype=float) if x0 is not None else (lo + hi) / 2
        dim = len(centroid)
        self.state["cma"] = {
            "centroid": centroid.tolist(),
            "sigma": float(self.state["params"]["sigma"]),
            "pc": [0.0] * dim,
            "ps": [0.0] * dim,
            "C": np.identity(dim).tolist(),
            "update_count": 0,
        }

    @property
    def step_size(self) -> float | None:
        s = self.state["cma"]
        return float(s["sigma"] * math.sqrt(max(np.diag(np.array(s["C"])))))

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
        with _deap_globals(self.rng):
            samples = self._strategy().generate(lambda x: list(map(float, x)))
        return [{"genes": g, "parents": []} for g in samples]

    def _tell(self, pending: list[dict[str, Any]], fitnesses: list[Fitness]) -> None:
        penalty = self.state["params"]["penalty"]
        keys = []
        for c, f in zip(pending, fitnesses, strict=True):
            violation, value = self._key(f)
            overshoot = np.subtract(c["genes"], self._clip(c["genes"]))
            keys.append((violation, value - penalty * float(overshoot @ overshoot)))
        population = []
        for c, r in zip(pending, dense_ranks(keys), strict=True):
            ind = _Individual(c["genes"])
            ind.fitness.values = (r,)
            population.append(ind)
        strat = self._strategy()
        strat.update(population)
        self.state["cma"] = {
            "centroid": strat.centroid.tolist(),
            "sigma": float(strat.sigma),
            "pc": strat.pc.tolist(),
            "ps": strat.ps.tolist(),
            "C": strat.C.tolist(),
            "update_count": int(strat.update_count),
        }
