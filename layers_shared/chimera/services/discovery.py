"""Layer 1: find agent bundles, register new or changed modules, announce them."""

from __future__ import annotations

import hashlib

from pydantic import ValidationError

from chimera.domain.errors import NotFoundError
from chimera.domain.events import AgentDiscovered
from chimera.domain.models import Agent, AgentManifest, Decision
from chimera.services.contracts import DiscoverRequest, DiscoverResult
from chimera.services.deps import Deps


def discover(req: DiscoverRequest, deps: Deps) -> DiscoverResult:
    found: list[str] = []
    rejected: list[dict[str, str]] = []
    for key, manifest_bytes, wasm in deps.artifacts.list_bundles():
        try:
            manifest = AgentManifest.model_validate_json(manifest_bytes)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "manifest"
            rejected.append({"bundle": key, "error": f"manifest.{where}: {first['msg']}"})
            continue
        digest = hashlib.sha256(wasm).hexdigest()
        try:
            known: Agent | None = deps.store.get_agent(manifest.agent_id)
        except NotFoundError:
            known = None
        changed = known is None or known.module_digest != digest or known.manifest != manifest
        if changed:  # the agent and its announcement in one transaction (the outbox)
            deps.store.put_agent(
                Agent(
                    manifest=manifest, module_key=f"{key}/{manifest.module}", module_digest=digest
                ),
                events=[
                    AgentDiscovered(agent_id=manifest.agent_id, module_digest=digest, changed=True)
                ],
            )
        found.append(manifest.agent_id)
    summary = f"found {len(found)} agent(s)" + (f", rejected {len(rejected)}" if rejected else "")
    deps.store.add_decision(
        Decision(
            execution_id=req.execution_id,
            layer="discovery",
            summary=summary,
            detail={"agents": found, "rejected": rejected},
        )
    )
    return DiscoverResult(agents=found, rejected=rejected)
