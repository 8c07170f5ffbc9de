"""The genome schema: what each gene is (name, type, bounds) and how a vector is checked.

Pure. Genes travel as floats (the agent ABI passes an f32 vector); a gene's spec says how a
value is read:

- ``float``: any finite value in ``[low, high]``;
- ``int``: a whole number in ``[low, high]`` (both bounds whole numbers);
- ``categorical``: an index into ``choices`` (``low`` is 0 and ``high`` is ``len(choices) - 1``,
  filled in when left out), so every gene has numeric bounds an optimizer can use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chimera.domain.errors import ValidationFailedError

GeneType = Literal["float", "int", "categorical"]
Choice = str | int | float | bool


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GeneSpec(Frozen):
    """One parameter of an agent's genome: a bounded float, a bounded integer or a choice."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    type: GeneType = "float"
    low: float
    high: float
    default: float = 0.0
    choices: tuple[Choice, ...] | None = Field(default=None, min_length=2, max_length=4096)

    @model_validator(mode="before")
    @classmethod
    def _categorical_bounds(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") == "categorical":
            choices = data.get("choices")
            if not isinstance(choices, list | tuple):
                raise ValueError("choices: a categorical gene needs a list of choices")
            data = {"low": 0, "high": max(len(choices) - 1, 1)} | data
        return data

    @model_validator(mode="after")
    def _bounds(self) -> GeneSpec:
        where = f"gene {self.name!r}"
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(f"{where}: low must be finite and below high")
        if self.type == "categorical":
            assert self.choices is not None  # the before-validator insists
            if len(set(map(repr, self.choices))) != len(self.choices):
                raise ValueError(f"{where}: choices must be unique")
            if (self.low, self.high) != (0, len(self.choices) - 1):
                raise ValueError(f"{where}: low/high of a categorical gene are 0 and choices-1")
        elif self.choices is not None:
            raise ValueError(f"{where}: choices: only a categorical gene has choices")
        if self.type == "int" and not (self.low.is_integer() and self.high.is_integer()):
            raise ValueError(f"{where}: low/high of an int gene must be whole numbers")
        if not math.isfinite(self.default) or not self.low <= self.default <= self.high:
            raise ValueError(f"{where}: default outside [low, high]")
        if self.discrete and not self.default.is_integer():
            raise ValueError(f"{where}: default of an {self.type} gene must be a whole number")
        return self

    @property
    def discrete(self) -> bool:
        return self.type != "float"

    def repair(self, value: float) -> float:
        """The nearest valid value: clipped to the bounds, rounded for int and categorical."""
        if not math.isfinite(value):
            raise ValueError(f"genes.{self.name}: {value!r} is not finite")
        value = min(max(float(value), self.low), self.high)
        return float(math.floor(value + 0.5)) if self.discrete else value

    def check(self, value: float) -> None:
        """Raise ValidationFailedError naming `genes.<name>` when `value` is not valid."""
        field = f"genes.{self.name}"
        try:
            finite = math.isfinite(value)
        except TypeError:
            finite = False
        if not finite:
            raise ValidationFailedError(field, f"{value!r} is not a finite number")
        if not self.low <= value <= self.high:
            raise ValidationFailedError(field, f"{value!r} outside [{self.low}, {self.high}]")
        if self.discrete and not float(value).is_integer():
            raise ValidationFailedError(field, f"{value!r} is not a whole number ({self.type})")

    def decode(self, value: float) -> float | int | Choice:
        """What a valid value means: the float, the integer, or the chosen option."""
        self.check(value)
        if self.type == "int":
            return int(value)
        if self.type == "categorical":
            assert self.choices is not None
            return self.choices[int(value)]
        return float(value)


def default_genes(specs: Sequence[GeneSpec]) -> tuple[float, ...]:
    return tuple(g.default for g in specs)


def check_genes(specs: Sequence[GeneSpec], genes: Sequence[float]) -> None:
    """Raise ValidationFailedError naming the first invalid gene (`genes.<name>`)."""
    if len(genes) != len(specs):
        raise ValidationFailedError("genes", f"expected {len(specs)} values, got {len(genes)}")
    for spec, value in zip(specs, genes, strict=True):
        spec.check(value)
