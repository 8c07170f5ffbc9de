"""S3 adapter of the BlobStore port: large immutable documents in the artifact bucket."""

from __future__ import annotations

from typing import Any

from chimera.adapters.aws.errors import translate
from chimera.domain.errors import NotFoundError


class S3Blobs:
    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.rstrip("/") + "/" if prefix else ""
        self.client = client

    def put(self, key: str, data: bytes) -> None:
        with translate(f"put s3://{self.bucket}/{self.prefix}{key}"):
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)

    def get(self, key: str) -> bytes:
        with translate(f"get s3://{self.bucket}/{self.prefix}{key}"):
            try:
                obj = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
            except self.client.exceptions.NoSuchKey as exc:
                raise NotFoundError("blob", key) from exc
            data: bytes = obj["Body"].read()
        return data
