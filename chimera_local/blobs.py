"""Files adapter of the BlobStore port: large documents under <home>/blobs/, written atomically."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from chimera.domain.errors import NotFoundError, ValidationFailedError


class FileBlobs:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValidationFailedError("key", f"{key!r} leaves the blob folder")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise NotFoundError("blob", key)
        return path.read_bytes()
