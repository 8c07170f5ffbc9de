from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from chimera.adapters.aws.dynamodb_store import DynamoDbStore
from chimera.adapters.aws.s3_blobs import S3Blobs
from chimera.ports import Store
from moto import mock_aws

from chimera_local.blobs import FileBlobs
from chimera_local.sqlite_store import SqliteStore

TABLE = "chimera-test"
BUCKET = "chimera-artifacts-test"


def create_table(client, name: str) -> None:  # type: ignore[no-untyped-def]
    """The table as infra_cdk declares it: pk/sk, one GSI (gsi1pk/gsi1sk), a stream."""
    client.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": a, "AttributeType": "S"} for a in ("pk", "sk", "gsi1pk", "gsi1sk")
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "gsi1",
                "KeySchema": [
                    {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                    {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        BillingMode="PAY_PER_REQUEST",
    )


def dynamodb_store() -> DynamoDbStore:
    """Inside mock_aws: the table and the artifact bucket, as deployed."""
    client = boto3.client("dynamodb", region_name="us-east-1")
    create_table(client, TABLE)
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    return DynamoDbStore(TABLE, client, S3Blobs(BUCKET, "artifacts/", s3))


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        yield SqliteStore(tmp_path / "state.db", FileBlobs(tmp_path / "blobs"))
        return
    with mock_aws():
        yield dynamodb_store()
