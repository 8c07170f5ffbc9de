"""The DynamoDB adapter maps a ClientError by its real cause, as botocore raises it."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber
from chimera.adapters.aws.dynamodb_store import DynamoDbStore
from chimera.adapters.kv import Put
from chimera.domain.errors import ConflictError, UnavailableError, ValidationFailedError

PUTS = [Put("A", "1", "{}"), Put("B", "2", "{}", condition=3)]


def store_with(code: str, message: str, reasons: list[dict] | None = None):
    client = boto3.client("dynamodb", region_name="us-east-1")
    stub = Stubber(client)
    fields = {"CancellationReasons": reasons} if reasons is not None else None
    operation = "transact_write_items" if reasons is not None else "put_item"
    stub.add_client_error(operation, code, message, 400, modeled_fields=fields)
    stub.activate()
    return DynamoDbStore("t", client, blobs=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reasons", "expected", "text"),
    [
        ([{"Code": "None"}, {"Code": "ConditionalCheckFailed"}], ConflictError, r"item\(s\) \[1\]"),
        ([{"Code": "ThrottlingError"}, {"Code": "None"}], UnavailableError, "throttled"),
        ([{"Code": "TransactionConflict"}, {"Code": "None"}], UnavailableError, "conflict"),
        (
            [{"Code": "ValidationError", "Message": "Item size has exceeded the maximum"}],
            ValidationFailedError,
            "size",
        ),
    ],
)
def test_cancelled_transaction_by_its_reasons(reasons, expected, text):
    codes = ", ".join(r["Code"] for r in reasons)
    message = (
        f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]"
    )
    if expected is ValidationFailedError:
        message += " (Item size has exceeded the maximum allowed size)"
    store = store_with("TransactionCanceledException", message, reasons)
    with pytest.raises(expected, match=text):
        store._write(PUTS)


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        ("ConditionalCheckFailedException", "The conditional request failed", ConflictError),
        ("ProvisionedThroughputExceededException", "Rate exceeded", UnavailableError),
        (
            "ThrottlingException",
            "Rate of requests exceeds the allowed throughput",
            UnavailableError,
        ),
        ("InternalServerError", "Internal server error", UnavailableError),
        (
            "ValidationException",
            "Item size has exceeded the maximum allowed size",
            ValidationFailedError,
        ),
    ],
)
def test_single_write_by_its_code(code, message, expected):
    store = store_with(code, message)
    with pytest.raises(expected):
        store._write(PUTS[:1])


def test_an_unknown_error_is_not_disguised():
    from botocore.exceptions import ClientError

    store = store_with("AccessDeniedException", "not authorized")
    with pytest.raises(ClientError):
        store._write(PUTS[:1])
