"""Domain errors. Handlers map these to responses in one place (chimera.handlers_common)."""

from __future__ import annotations


class ChimeraError(Exception):
    """Base of every error Chimera raises on purpose."""


class ValidationFailedError(ChimeraError):
    """Bad input; `field` names where (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFoundError(ChimeraError):
    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} not found")
        self.kind = kind
        self.key = key


class ConflictError(ChimeraError):
    """A conditional write lost: someone else changed the item first."""


class BudgetExceededError(ChimeraError):
    """Layer 8 refused work that would overrun the budget."""
