"""Agent bundles in a local folder: <root>/<bundle>/manifest.json + the module it names.

Read only, and untrusted: a module name must be a plain file of its bundle (no path, no link
out of the folder), and reads are bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from chimera.domain.errors import NotFoundError, ValidationFailedError


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name


def _read_at_most(path: Path, limit: int) -> bytes:
    with path.open("rb") as f:
        return f.read(limit)


class LocalArtifacts:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _bundle_dir(self, bundle: str) -> Path:
        path = (self.root / bundle).resolve()
        if not _plain_name(bundle) or path.parent != self.root:
            raise ValidationFailedError("bundle", f"{bundle!r} is not a bundle of {self.root}")
        return path

    def list_bundles(self, max_manifest_bytes: int) -> Iterator[tuple[str, bytes]]:
        for manifest in sorted(self.root.glob("*/manifest.json")):
            if not manifest.is_file():
                continue
            yield manifest.parent.name, _read_at_most(manifest, max_manifest_bytes + 1)

    def read_module(self, bundle: str, name: str, max_bytes: int) -> bytes:
        folder = self._bundle_dir(bundle)
        path = (folder / name).resolve()
        if not _plain_name(name) or path.parent != folder:
            raise ValidationFailedError(
                "module", f"{name!r} is not a file name inside bundle {bundle!r}"
            )
        if not path.is_file():
            raise NotFoundError("module", f"{bundle}/{name}")
        data = _read_at_most(path, max_bytes + 1)
        if len(data) > max_bytes:
            raise ValidationFailedError(
                "module", f"{bundle}/{name} is larger than the policy cap {max_bytes:,} bytes"
            )
        return data
