"""Domain errors: one taxonomy, mapped in one place to HTTP statuses and to ASL error names.

A Lambda task that raises surfaces in Step Functions under the exception's class name, so the
class names below are the ASL error names: retryable ones are listed in every task's `Retry`
(tests/unit/test_errors.py checks each file), terminal ones reach `Catch`.
"""

from __future__ import annotations

from dataclasses import dataclass


class ChimeraError(Exception):
    """Base of every error Chimera raises on purpose."""


class ValidationFailedError(ChimeraError):
    """Bad input; `field` names where (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFoundError(ChimeraError):
    """`field`, when given, names the input that named the missing thing (e.g. `run_id`)."""

    def __init__(self, kind: str, key: str, field: str | None = None) -> None:
        super().__init__(f"{kind} {key!r} not found")
        self.kind = kind
        self.key = key
        self.field = field


class ConflictError(ChimeraError):
    """A conditional write lost: someone else changed the item first."""


class BudgetExceededError(ChimeraError):
    """Layer 8 refused work that would overrun the budget."""


class UnavailableError(ChimeraError):
    """A dependency throttled or is down for now; the same call may succeed later."""


class GuestError(ChimeraError):
    """A module misbehaved (trap, budget, bad module). `kind` is a stable code."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class CorruptStateError(ChimeraError):
    """Stored state that cannot be read: one item (`what` is its pk/sk) or a whole database
    file (`what` is its path). Not retryable: an operator repairs, restores or moves it aside."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: {reason}")
        self.what = what
        self.reason = reason


@dataclass(frozen=True)
class ErrorKind:
    http_status: int
    retryable: bool
    title: str


# The one mapping. Order matters only for subclasses (none today): first match wins.
TAXONOMY: dict[type[ChimeraError], ErrorKind] = {
    ValidationFailedError: ErrorKind(400, False, "validation failed"),
    NotFoundError: ErrorKind(404, False, "not found"),
    ConflictError: ErrorKind(409, False, "conflict"),
    BudgetExceededError: ErrorKind(402, False, "budget exceeded"),
    GuestError: ErrorKind(422, False, "guest failure"),
    UnavailableError: ErrorKind(503, True, "unavailable"),
    CorruptStateError: ErrorKind(500, False, "stored state is unreadable"),
}
# Lambda's own transient errors, retried in every Lambda task beside ours.
LAMBDA_TRANSIENT_ERRORS = (
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
)
RETRYABLE_ERRORS: tuple[str, ...] = tuple(
    cls.__name__ for cls, kind in TAXONOMY.items() if kind.retryable
)


def kind_of(exc: BaseException) -> ErrorKind | None:
    for cls, kind in TAXONOMY.items():
        if isinstance(exc, cls):
            return kind
    return None
