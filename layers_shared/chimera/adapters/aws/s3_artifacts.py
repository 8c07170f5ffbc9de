"""Agent bundles under an S3 prefix: <prefix><bundle>/manifest.json + module."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from chimera.domain.errors import NotFoundError


class S3Artifacts:
    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.rstrip("/") + "/" if prefix else ""
        self.client = client

    def read(self, key: str) -> bytes:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except self.client.exceptions.NoSuchKey as exc:
            raise NotFoundError("artifact", key) from exc
        return obj["Body"].read()

    def list_bundles(self) -> Iterator[tuple[str, bytes, bytes]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"][len(self.prefix) :]
                if not key.endswith("/manifest.json") or key.count("/") != 1:
                    continue
                bundle = key.split("/", 1)[0]
                raw = self.read(key)
                try:
                    module = str(json.loads(raw).get("module", "agent.wasm"))
                except (ValueError, AttributeError):
                    module = "agent.wasm"
                try:
                    wasm = self.read(f"{bundle}/{module}")
                except NotFoundError:
                    wasm = b""
                yield bundle, raw, wasm
