"""Checks of numeric parameters shared by the pure modules: each error names its field."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from chimera.domain.errors import ValidationFailedError


def finite(field: str, value: Any) -> float:
    """A real number (no bool, no NaN, no infinity) as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValidationFailedError(field, f"must be a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise ValidationFailedError(field, f"must be finite, got {x}")
    return x


def positive(field: str, value: Any) -> float:
    x = finite(field, value)
    if x <= 0.0:
        raise ValidationFailedError(field, f"must be > 0, got {x}")
    return x


def open_unit(field: str, value: Any) -> float:
    x = finite(field, value)
    if not 0.0 < x < 1.0:
        raise ValidationFailedError(field, f"must be in (0, 1), got {x}")
    return x
