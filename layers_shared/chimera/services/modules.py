"""Module versions in the blob store: named by their digest, written once, checked on read.

Bundles are where operators upload; these blobs are what serves. A bundle file that changes
after discovery changes nothing here: it becomes a new version when discovery next sees it.
"""

from __future__ import annotations

import hashlib

from chimera.domain.errors import GuestError, ValidationFailedError
from chimera.domain.models import (
    AgentManifest,
    ModuleVersion,
    manifest_blob_key,
    manifest_sha256,
    module_blob_key,
)
from chimera.services.deps import Deps


def store(deps: Deps, manifest: AgentManifest, wasm: bytes) -> tuple[str, str]:
    """Write the module and its manifest by digest (idempotent); return both digests."""
    digest = hashlib.sha256(wasm).hexdigest()
    m_digest = manifest_sha256(manifest)
    deps.store.blobs.put(module_blob_key(digest), wasm)
    deps.store.blobs.put(manifest_blob_key(m_digest), manifest.model_dump_json().encode())
    return digest, m_digest


def module_bytes(deps: Deps, version: ModuleVersion) -> bytes:
    """The version's module bytes; GuestError `digest-mismatch` if the blob was altered."""
    wasm = deps.store.blobs.get(version.key)
    if hashlib.sha256(wasm).hexdigest() != version.digest:
        raise GuestError(
            "digest-mismatch",
            f"module blob {version.key} differs from version {version.version}'s digest",
        )
    return wasm


def version_manifest(deps: Deps, version: ModuleVersion) -> AgentManifest:
    """The manifest the version was registered with, checked against its digest."""
    raw = deps.store.blobs.get(version.manifest_key)
    if hashlib.sha256(raw).hexdigest() != version.manifest_digest:
        raise ValidationFailedError(
            "manifest", f"blob {version.manifest_key} differs from version {version.version}'s"
        )
    return AgentManifest.model_validate_json(raw)
