"""Layer 1: find agent bundles, register new or changed modules as pending versions.

A bundle never serves directly. What discovery registers is a module version: the module and
its manifest copied to the blob store by digest, waiting for layer 3 (`pending`). The live
version keeps serving until a pending one passes validation. An agent id belongs to the bundle
location that first registered it; another bundle claiming the id is rejected, naming both.

Safe to run twice: an unchanged bundle registers nothing and announces nothing, and the agent
is saved conditionally on the revision read (a concurrent discovery makes this one re-read).
"""

from __future__ import annotations

import hashlib

from pydantic import ValidationError

from chimera.domain.errors import ConflictError, NotFoundError, ValidationFailedError
from chimera.domain.events import AgentDiscovered
from chimera.domain.models import (
    Agent,
    AgentManifest,
    Decision,
    ModuleRejection,
    ModuleVersion,
    manifest_blob_key,
    manifest_sha256,
    module_blob_key,
)
from chimera.services import modules
from chimera.services.contracts import DiscoverRequest, DiscoverResult
from chimera.services.deps import Deps

MAX_MANIFEST_BYTES = 1024 * 1024
SAVE_ATTEMPTS = 5


class BundleRejectedError(Exception):
    """This bundle is not registered; `reason` says why (for the report and the CLI)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def discover(req: DiscoverRequest, deps: Deps) -> DiscoverResult:
    found: list[str] = []
    rejected: list[dict[str, str]] = []
    registered: list[str] = []
    for bundle, raw in deps.artifacts.list_bundles(MAX_MANIFEST_BYTES):
        try:
            agent_id, pending = _register(bundle, raw, deps)
        except BundleRejectedError as exc:
            rejected.append({"bundle": bundle, "error": exc.reason})
            continue
        found.append(agent_id)
        if pending is not None:
            registered.append(f"{agent_id} v{pending}")
    summary = f"found {len(found)} agent(s)"
    if registered:
        summary += f", new module version(s) awaiting validation: {', '.join(registered)}"
    if rejected:
        summary += f", rejected {len(rejected)} bundle(s): " + "; ".join(
            f"{r['bundle']}: {r['error']}" for r in rejected
        )
    deps.store.add_decision(
        Decision(
            execution_id=req.execution_id,
            layer="discovery",
            summary=summary,
            detail={"agents": found, "registered": registered, "rejected": rejected},
            key="discover",  # a retried discovery decides once
        )
    )
    return DiscoverResult(agents=found, rejected=rejected)


def _manifest(bundle: str, raw: bytes) -> AgentManifest:
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleRejectedError(f"manifest.json is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        return AgentManifest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "manifest"
        raise BundleRejectedError(f"manifest.{where}: {first['msg']}") from None


def _module(bundle: str, manifest: AgentManifest, deps: Deps) -> bytes:
    try:
        # Bounded by the policy's module cap: a larger file is not even copied.
        return deps.artifacts.read_module(bundle, manifest.module, deps.policy.max_module_bytes)
    except ValidationFailedError as exc:
        raise BundleRejectedError(f"manifest.module: {exc.message}") from None
    except NotFoundError:
        raise BundleRejectedError(
            f"manifest.module: {manifest.module!r} is not in bundle {bundle!r}"
        ) from None


def _get(agent_id: str, deps: Deps) -> Agent | None:
    try:
        return deps.store.get_agent(agent_id)
    except NotFoundError:
        return None


def _register(bundle: str, raw: bytes, deps: Deps) -> tuple[str, int | None]:
    """Register the bundle's module if it is new; (agent id, version awaiting layer 3)."""
    manifest = _manifest(bundle, raw)
    agent_id = manifest.agent_id
    known = _get(agent_id, deps)
    if known is not None and known.bundle != bundle:
        raise BundleRejectedError(_claim(agent_id, bundle, known.bundle))
    wasm = _module(bundle, manifest, deps)
    digest = hashlib.sha256(wasm).hexdigest()
    m_digest = manifest_sha256(manifest)
    for _ in range(SAVE_ATTEMPTS):
        if known is not None and known.bundle != bundle:  # another bundle won the race
            raise BundleRejectedError(_claim(agent_id, bundle, known.bundle))
        try:
            return agent_id, _save(bundle, manifest, wasm, (digest, m_digest), known, deps)
        except ConflictError:
            known = _get(agent_id, deps)
    raise ConflictError(f"agent {agent_id!r} kept changing while bundle {bundle!r} registered")


def _claim(agent_id: str, bundle: str, owner: str) -> str:
    return (
        f"agent id {agent_id!r} belongs to bundle {owner!r}; bundle {bundle!r} may not claim "
        "it (use another agent_id)"
    )


def _save(
    bundle: str,
    manifest: AgentManifest,
    wasm: bytes,
    digests: tuple[str, str],
    known: Agent | None,
    deps: Deps,
) -> int | None:
    """One conditional save of what the bundle now holds; the version awaiting validation.

    The answer depends on the state, not on what this call wrote: a retry after a crash
    between the save and the decision decides the same."""

    def same(m: ModuleVersion | ModuleRejection | None) -> bool:
        return m is not None and (m.digest, m.manifest_digest) == digests

    if known is not None:
        if same(known.pending):
            modules.store(deps, manifest, wasm)  # heals a pending version from the first layout
            return known.pending.version if known.pending is not None else None
        if same(known.rejected):
            return None  # still the rejected upload: layer 3 reports it again, nothing changes
        if same(known.live):
            if known.pending is not None or known.rejected is not None:
                # The bundle is back to the live module: nothing waits, nothing stands rejected.
                deps.store.save_agent(known.model_copy(update={"pending": None, "rejected": None}))
            return None
    number = (known.versions if known is not None else 0) + 1
    digest, m_digest = modules.store(deps, manifest, wasm)
    version = ModuleVersion(
        version=number,
        digest=digest,
        key=module_blob_key(digest),
        manifest_digest=m_digest,
        manifest_key=manifest_blob_key(m_digest),
        bundle=bundle,
    )
    event = AgentDiscovered(agent_id=manifest.agent_id, module_digest=digest, changed=True)
    if known is None:
        agent = Agent(manifest=manifest, bundle=bundle, pending=version, versions=number)
    else:  # a newer upload supersedes a pending or rejected one; the live one keeps serving
        update: dict[str, object] = {"pending": version, "rejected": None, "versions": number}
        if known.live is None:  # nothing serves yet: the agent reads as its newest manifest
            update["manifest"] = manifest
        agent = known.model_copy(update=update)
    deps.store.save_agent(agent, events=[event])
    return number
