"""When a search stops: composable, JSON-serializable criteria (layer 6 decides with them).

A criterion looks at the fitness history (one point per told generation: best, mean and
evaluations, e.g. the store's FitnessPoint) and, for optimizer-internal criteria, at the
optimizer; `reason` returns why it fires, or None. `AnyOf` and `AllOf` compose. Every
criterion round-trips through `to_json` / `termination_from_json`, which reads the one
registry, `TERMINATIONS`.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chimera.domain.optimizers import Fitness, rank_key


class Point(Protocol):
    """One generation of history; chimera.domain.models.FitnessPoint is one."""

    @property
    def best(self) -> float: ...
    @property
    def mean(self) -> float: ...
    @property
    def evaluations(self) -> int: ...


class Stepper(Protocol):
    """What an optimizer-internal criterion reads (an Optimizer is one)."""

    @property
    def step_size(self) -> float | None: ...


class Progress(BaseModel):
    """A Point summarized from one told generation's fitnesses (first objective)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    best: float
    mean: float
    std: float
    evaluations: int
    feasible: int

    @classmethod
    def of(cls, fitnesses: Sequence[Fitness], direction: Literal["max", "min"] = "max") -> Progress:
        """Best, mean and std over feasible evaluations; -1e300 when none is feasible."""
        values = [
            f.objectives[0] for f in fitnesses if f.feasible and math.isfinite(f.objectives[0])
        ]
        if not values:
            return cls(best=-1e300, mean=-1e300, std=0.0, evaluations=len(fitnesses), feasible=0)
        top = max(fitnesses, key=lambda f: rank_key(f, direction)).objectives[0]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        return cls(
            best=top if math.isfinite(top) else (1e300 if top > 0 else -1e300),
            mean=mean,
            std=std,
            evaluations=len(fitnesses),
            feasible=len(values),
        )


class Termination(BaseModel, abc.ABC):
    """A stopping criterion. Subclasses set `kind` and implement `reason`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str

    @abc.abstractmethod
    def reason(self, history: Sequence[Point], optimizer: Stepper | None = None) -> str | None:
        """Why the search should stop now, or None to go on."""

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


TERMINATIONS: dict[str, type[Termination]] = {}


def _register(cls: type[Termination]) -> type[Termination]:
    TERMINATIONS[cls.model_fields["kind"].default] = cls
    return cls


def termination_from_json(data: Any, where: str = "termination") -> Termination:
    """Rebuild a criterion from its JSON; errors name the field (`termination.of.1.kind`)."""
    if isinstance(data, Termination):
        return data
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected an object with a kind, got {data!r}")
    cls = TERMINATIONS.get(str(data.get("kind")))
    if cls is None:
        raise ValueError(f"{where}.kind: unknown termination {data.get('kind')!r}")
    if cls in (AnyOf, AllOf) and isinstance(data.get("of"), list | tuple):
        data = {
            **data,
            "of": [termination_from_json(c, f"{where}.of.{i}") for i, c in enumerate(data["of"])],
        }
    return cls.model_validate(data)


@_register
class Target(Termination):
    """The best reached `value` in each of the last `streak` generations."""

    kind: Literal["target"] = "target"
    value: float = Field(allow_inf_nan=False)
    streak: int = Field(default=1, ge=1)

    def reason(self, history: Sequence[Point], optimizer: Stepper | None = None) -> str | None:
        recent = history[-self.streak :]
        if len(recent) == self.streak and all(p.best >= self.value for p in recent):
            times = "once" if self.streak == 1 else f"{self.streak} times in a row"
            return f"target {self.value:g} reached {times}"
        return None


@_register
class GenerationBudget(Termination):
    kind: Literal["generation-budget"] = "generation-budget"
    generations: int = Field(gt=0)

    def reason(self, history: Sequence[Point], optimizer: Stepper | None = None) -> str | None:
        if len(history) >= self.generations:
            return f"reached {self.generations} generations"
        return None


@_register
class EvaluationBudget(Termination):
    kind: Literal["evaluation-budget"] = "evaluation-budget"
    evaluations: int = Field(gt=0)

    def reason(self, history: Sequence[Point], optimizer: Stepper | None = None) -> str | None:
        spent = sum(p.evaluations for p in history)
        if spent >= self.evaluations:
            return f"spent {spent} evaluations (budget {self.evaluations})"
        return None


@_register
class Stagnation(Termination):
    """The last `generations` bests improved on the earlier best by no more than min_delta."""

    kind: Literal["stagnation"] = "stagnation"
    generations: int = Field(gt=0)
    min_delta: float = Field(default=0.0, ge=0, allow_inf_nan=False)

    def reason(self, history: Sequence[Point], optimizer: Stepper | None = None) -> str | None:
        if len(history) <= self.generations:
            return None
        before = max(p.best for p in history[: -self.generations])
        recent = max(p.best for p in history[-self.generations :])
        if recent <= before + self.min_delta:
            return f"no improvement in {self.generations} generations"
        return None


@_register
class StepSizeFloor(Termination):
    """Optimizer-internal: its search radius (CMA-ES: sigma times the largest std) fell below
    `floor` gene units. Never fires for an optimizer without a step size."""

    kind: Literal["step-size-floor"] = "step-size-floor"
    floor: float = Field(gt=0, allow_inf_nan=False)

    def reason(self, history: Sequence[Point], optimizer: Stepper | None = None) -> str | None:
        step = optimizer.step_size if optimizer is not None else None
        if step is not None and step < self.floor:
            return f"step size {step:.3g} below {self.floor:g}"
        return None


class _Composite(Termination):
    of: tuple[Termination, ...] = Field(min_length=1)

    @field_validator("of", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(termination_from_json(c, f"of.{i}") for i, c in enumerate(value))
        return value

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "of": [c.to_json() for c in self.of]}


@_register
class AnyOf(_Composite):
    """Stops when any criterion fires (the first one's reason)."""

    kind: Literal["any-of"] = "any-of"

    def reason(self, history: Sequence[Point], optimizer: Stepper | None = None) -> str | None:
        for c in self.of:
            why = c.reason(history, optimizer)
            if why is not None:
                return why
        return None


@_register
class AllOf(_Composite):
    """Stops when every criterion fires (their reasons joined)."""

    kind: Literal["all-of"] = "all-of"

    def reason(self, history: Sequence[Point], optimizer: Stepper | None = None) -> str | None:
        reasons = [c.reason(history, optimizer) for c in self.of]
        if all(r is not None for r in reasons):
            return " and ".join(r for r in reasons if r is not None)
        return None


def standard(
    max_generations: int,
    target: float | None = None,
    streak: int = 3,
    stagnation: int = 30,
) -> AnyOf:
    """Layer 6's rule today: generation budget, target reached `streak` times, stagnation."""
    parts: list[Termination] = [GenerationBudget(generations=max_generations)]
    if target is not None:
        parts.append(Target(value=target, streak=streak))
    parts.append(Stagnation(generations=stagnation))
    return AnyOf(of=tuple(parts))
