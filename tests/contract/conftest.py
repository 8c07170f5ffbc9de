from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from chimera.adapters.aws.dynamodb_store import DynamoDbStore
from chimera.ports import Store
from moto import mock_aws

from chimera_local.sqlite_store import SqliteStore


def create_table(client, name: str) -> None:  # type: ignore[no-untyped-def]
    client.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        yield SqliteStore(tmp_path / "state.db")
        return
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, "chimera-test")
        yield DynamoDbStore("chimera-test", client)
