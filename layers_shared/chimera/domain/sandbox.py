"""What the domain knows about sandboxed modules, independent of the runtime."""

from __future__ import annotations

from dataclasses import dataclass

from chimera.domain.errors import GuestError
from chimera.domain.models import AgentManifest

__all__ = ["GuestError", "ModuleInfo", "SandboxPolicy", "module_problems"]

REQUIRED_EXPORTS = (
    "memory",
    "chimera_abi_version",
    "chimera_genome_len",
    "chimera_obs_len",
    "chimera_reset",
    "chimera_alloc",
    "chimera_act",
    "chimera_predict",
)
WASI_MODULES = ("wasi_snapshot_preview1",)


@dataclass(frozen=True)
class ModuleInfo:
    imports: tuple[str, ...]
    exports: tuple[str, ...]


@dataclass(frozen=True)
class SandboxPolicy:
    """Default deny: no imports at all unless the manifest asks for WASI and policy allows."""

    allow_wasi: bool = False
    max_memory_pages: int = 4096


def module_problems(info: ModuleInfo, manifest: AgentManifest, policy: SandboxPolicy) -> list[str]:
    """Every reason this module may not run under this manifest and policy (empty: fine)."""
    problems = [f"missing export {name!r}" for name in REQUIRED_EXPORTS if name not in info.exports]
    wasi_ok = manifest.limits.wasi and policy.allow_wasi
    for imp in info.imports:
        module = imp.split(".", 1)[0]
        if not (wasi_ok and module in WASI_MODULES):
            problems.append(f"import {imp!r} is not allowed")
    if manifest.limits.memory_pages > policy.max_memory_pages:
        problems.append(
            f"limits.memory_pages {manifest.limits.memory_pages} above policy cap "
            f"{policy.max_memory_pages}"
        )
    return problems
