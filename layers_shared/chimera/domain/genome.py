"""The genome schema: what each gene is (name, type, bounds) and how a vector is checked.

Pure. Genes travel as floats (the agent ABI passes an f32 vector); a gene's spec says how a
value is read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chimera.domain.errors import ValidationFailedError


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GeneSpec(Frozen):
    """One parameter of an agent's genome: a bounded float."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    type: Literal["float"] = "float"
    low: float
    high: float
    default: float = 0.0

    @model_validator(mode="after")
    def _bounds(self) -> GeneSpec:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(f"gene {self.name!r}: low must be finite and below high")
        if not self.low <= self.default <= self.high:
            raise ValueError(f"gene {self.name!r}: default outside [low, high]")
        return self


def default_genes(specs: Sequence[GeneSpec]) -> tuple[float, ...]:
    return tuple(g.default for g in specs)


def check_genes(specs: Sequence[GeneSpec], genes: Sequence[float]) -> None:
    """Raise ValidationFailedError naming the first gene out of bounds."""
    if len(genes) != len(specs):
        raise ValidationFailedError("genes", f"expected {len(specs)} values, got {len(genes)}")
    for spec, value in zip(specs, genes, strict=True):
        if not math.isfinite(value) or not spec.low <= value <= spec.high:
            raise ValidationFailedError(
                f"genes.{spec.name}", f"{value!r} outside [{spec.low}, {spec.high}]"
            )
