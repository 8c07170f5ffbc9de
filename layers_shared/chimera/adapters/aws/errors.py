"""botocore errors mapped to the domain taxonomy by their real cause (one place for AWS)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError, ConnectionError, ReadTimeoutError

from chimera.domain.errors import (
    ChimeraError,
    ConflictError,
    UnavailableError,
    ValidationFailedError,
)

THROTTLED = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottlingError",
        "ProvisionedThroughputExceededException",
        "ProvisionedThroughputExceeded",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
    }
)
UNAVAILABLE = frozenset(
    {
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalServerError",
        "InternalFailure",
        "TransactionConflict",  # a cancellation reason: another transaction holds the item
        "TransactionConflictException",
        "TransactionInProgressException",
    }
)


def from_client_error(exc: ClientError, what: str) -> ChimeraError | None:
    """The domain error a ClientError stands for, or None if it is not one of ours."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message", ""))
    if code in THROTTLED:
        return UnavailableError(f"{what}: throttled ({code})")
    if code in UNAVAILABLE:
        return UnavailableError(f"{what}: unavailable ({code})")
    if code == "ConditionalCheckFailedException":
        return ConflictError(f"{what}: condition failed")
    if code == "TransactionCanceledException":
        return _cancelled(exc.response.get("CancellationReasons") or [], message, what)
    if code == "ValidationException" and "size" in message.lower():
        return ValidationFailedError("item", f"{what}: {message}")
    return None


def _cancelled(reasons: list[dict[str, Any]], message: str, what: str) -> ChimeraError:
    """A cancelled transaction: the cause is in its per-item reasons."""
    codes = [str(r.get("Code", "None")) for r in reasons] or _codes_from_message(message)
    real = [c for c in codes if c not in ("None", "")]
    if any(c in THROTTLED for c in real):
        return UnavailableError(f"{what}: throttled in a transaction ({', '.join(real)})")
    if any(c in UNAVAILABLE for c in real):
        return UnavailableError(f"{what}: transaction conflict ({', '.join(real)})")
    if any(c == "ValidationError" for c in real) and "size" in message.lower():
        return ValidationFailedError("item", f"{what}: {message}")
    if real and all(c == "ConditionalCheckFailed" for c in real):
        failed = [i for i, c in enumerate(codes) if c == "ConditionalCheckFailed"]
        return ConflictError(f"{what}: condition failed on item(s) {failed}")
    return ValidationFailedError("transaction", f"{what}: cancelled ({message})")


def _codes_from_message(message: str) -> list[str]:
    """boto3 puts the reasons in the message too: '... [None, ConditionalCheckFailed]'."""
    if "[" not in message:
        return []
    inner = message[message.rindex("[") + 1 : message.rindex("]")]
    return [part.strip() for part in inner.split(",")]


@contextlib.contextmanager
def translate(what: str) -> Iterator[None]:
    """Raise the domain error for a botocore failure; leave everything else as it is."""
    try:
        yield
    except ClientError as exc:
        mapped = from_client_error(exc, what)
        if mapped is None:
            raise
        raise mapped from exc
    except (ConnectionError, ReadTimeoutError) as exc:
        raise UnavailableError(f"{what}: {exc}") from exc
