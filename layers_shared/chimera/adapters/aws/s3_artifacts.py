"""Agent bundles under an S3 prefix: <prefix><bundle>/manifest.json + the module it names.

Read only, and untrusted: a module name must be a plain key of its bundle, and reads are
bounded (a ranged GET never fetches more than the cap plus one byte).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from chimera.adapters.aws.errors import translate
from chimera.domain.errors import NotFoundError, ValidationFailedError


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name


class S3Artifacts:
    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.rstrip("/") + "/" if prefix else ""
        self.client = client

    def _read(self, key: str, limit: int) -> bytes:
        """At most `limit` bytes of the object under the prefix; NotFoundError if absent."""
        where = f"s3://{self.bucket}/{self.prefix}{key}"
        with translate(f"get {where}"):
            try:
                obj = self.client.get_object(
                    Bucket=self.bucket, Key=self.prefix + key, Range=f"bytes=0-{limit - 1}"
                )
            except self.client.exceptions.NoSuchKey as exc:
                raise NotFoundError("artifact", key) from exc
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                    return b""  # an empty object has no byte 0
                raise
            data: bytes = obj["Body"].read(limit)
        return data

    def list_bundles(self, max_manifest_bytes: int) -> Iterator[tuple[str, bytes]]:
        paginator = self.client.get_paginator("list_objects_v2")
        with translate(f"list s3://{self.bucket}/{self.prefix}"):
            pages = list(paginator.paginate(Bucket=self.bucket, Prefix=self.prefix))
        for page in pages:
            for obj in page.get("Contents", []):
                key = obj["Key"][len(self.prefix) :]
                if not key.endswith("/manifest.json") or key.count("/") != 1:
                    continue
                try:
                    raw = self._read(key, max_manifest_bytes + 1)
                except NotFoundError:  # deleted since the listing
                    continue
                yield key.split("/", 1)[0], raw

    def read_module(self, bundle: str, name: str, max_bytes: int) -> bytes:
        if not _plain_name(bundle):
            raise ValidationFailedError("bundle", f"{bundle!r} is not a bundle location")
        if not _plain_name(name):
            raise ValidationFailedError(
                "module", f"{name!r} is not a file name inside bundle {bundle!r}"
            )
        try:
            data = self._read(f"{bundle}/{name}", max_bytes + 1)
        except NotFoundError:
            raise NotFoundError("module", f"{bundle}/{name}") from None
        if len(data) > max_bytes:
            raise ValidationFailedError(
                "module", f"{bundle}/{name} is larger than the policy cap {max_bytes:,} bytes"
            )
        return data
