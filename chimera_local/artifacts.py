"""Agent bundles in a local folder: <root>/<bundle>/manifest.json + the module it names."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from chimera.domain.errors import NotFoundError, ValidationFailedError


class LocalArtifacts:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValidationFailedError("module_key", f"{key!r} leaves the bundle folder")
        return path

    def read(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise NotFoundError("artifact", key)
        return path.read_bytes()

    def list_bundles(self) -> Iterator[tuple[str, bytes, bytes]]:
        for manifest in sorted(self.root.glob("*/manifest.json")):
            raw = manifest.read_bytes()
            try:
                module_name = json.loads(raw).get("module", "agent.wasm")
            except (ValueError, AttributeError):
                module_name = "agent.wasm"
            module = manifest.parent / str(module_name)
            yield manifest.parent.name, raw, module.read_bytes() if module.is_file() else b""
