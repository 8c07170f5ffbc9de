"""What the domain knows about sandboxed modules, independent of the runtime.

The policy caps every limit a manifest may ask for and every resource a module may declare;
`module_problems` names each way a module and its manifest break the ABI or the policy (layer
3 refuses the bundle with those reasons), and the sandbox enforces the same caps again when it
instantiates (defence in depth). `parse_guest_json` is the one reader of a guest's JSON answer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from chimera.domain.errors import GuestError
from chimera.domain.models import AgentManifest, ResourceLimits
from chimera.domain.wasm_binary import Limits

__all__ = [
    "ABI_EXPORTS",
    "ExportType",
    "GuestError",
    "Limits",
    "ModuleInfo",
    "SandboxPolicy",
    "finite_number",
    "limit_problems",
    "module_problems",
    "parse_guest_json",
]

WASM_PAGE = 65536
I32, I64 = "i32", "i64"


@dataclass(frozen=True)
class ExportType:
    """An export's kind (func, memory, table, global) and, for a function, its signature."""

    kind: str
    params: tuple[str, ...] = ()
    results: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.kind != "func":
            return self.kind
        return f"func({', '.join(self.params)}) -> ({', '.join(self.results)})"


def _func(params: tuple[str, ...], results: tuple[str, ...]) -> ExportType:
    return ExportType("func", params, results)


# The agent ABI v1: every export the host uses, with the exact kind and signature it uses.
ABI_EXPORTS: dict[str, ExportType] = {
    "memory": ExportType("memory"),
    "chimera_abi_version": _func((), (I32,)),
    "chimera_genome_len": _func((), (I32,)),
    "chimera_obs_len": _func((), (I32,)),
    "chimera_reset": _func((), ()),
    "chimera_alloc": _func((I32,), (I32,)),
    "chimera_act": _func((I32,) * 6, (I32,)),
    "chimera_predict": _func((I32, I32), (I64,)),
}
REQUIRED_EXPORTS = tuple(ABI_EXPORTS)
WASI_MODULES = ("wasi_snapshot_preview1",)


@dataclass(frozen=True)
class ModuleInfo:
    """What inspecting a module found: imports, exports with their types, memories, tables."""

    imports: tuple[str, ...]
    exports: tuple[str, ...]
    export_types: Mapping[str, ExportType] = field(default_factory=dict)
    memories: tuple[Limits, ...] = ()  # in pages, imported and defined, exported or not
    tables: tuple[Limits, ...] = ()  # in elements
    size: int = 0  # bytes


@dataclass(frozen=True)
class SandboxPolicy:
    """Default deny: caps on everything a manifest asks for and a module declares.

    No imports at all unless the manifest asks for WASI and the policy allows it. Per call:
    fuel, wall clock, memory pages (in total across the instance's memories), memories,
    tables, table elements. Per evaluation (one instance: a shard, a hold-out, a predict):
    total fuel and total guest wall clock, a base plus a share per candidate row, so an agent
    spending most of its per-call budget on every call still ends in bounded time. Per answer: the size and depth of the JSON a
    guest may return.
    """

    allow_wasi: bool = False
    max_memory_pages: int = 4096  # 256 MiB, across all of an instance's memories
    max_memories: int = 1
    max_tables: int = 1
    max_table_elements: int = 10_000
    max_fuel_per_call: int = 10_000_000_000  # ~4 s of a tight loop
    max_wall_ms: int = 10_000
    max_module_bytes: int = 8 * 1024 * 1024
    # One evaluation's budget: a base, plus so much for each candidate row it places (a
    # CartPole episode of one genome, a genome scored on a data split). An honest 500-step
    # CartPole episode costs ~42,000 fuel, a breast-cancer row ~200,000; Batch evaluates whole
    # populations in one instance, so the budget grows with what is evaluated.
    evaluation_fuel: int = 10_000_000_000  # ~4 s of a tight loop
    fuel_per_row: int = 10_000_000
    evaluation_wall_ms: int = 60_000  # guest time, well under Lambda's 5 minutes
    wall_ms_per_row: int = 10
    max_answer_bytes: int = 65_536
    max_answer_depth: int = 32

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "allow_wasi":
                continue
            least = 0 if f.name.endswith("_per_row") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"policy.{f.name}: must be an integer >= {least}, got {value!r}")
        if self.max_fuel_per_call > self.evaluation_fuel:
            raise ValueError("policy.max_fuel_per_call: above policy.evaluation_fuel")
        if self.max_wall_ms > self.evaluation_wall_ms:
            raise ValueError("policy.max_wall_ms: above policy.evaluation_wall_ms")


def limit_problems(limits: ResourceLimits, policy: SandboxPolicy) -> list[str]:
    """Each manifest limit above its policy cap, named by its manifest field."""
    problems = []
    for name, value, cap in (
        ("fuel_per_call", limits.fuel_per_call, policy.max_fuel_per_call),
        ("memory_pages", limits.memory_pages, policy.max_memory_pages),
        ("wall_ms", limits.wall_ms, policy.max_wall_ms),
    ):
        if value > cap:
            problems.append(f"limits.{name} {value:,} above policy cap {cap:,}")
    if limits.wasi and not policy.allow_wasi:
        problems.append("limits.wasi asked for, policy does not allow WASI")
    return problems


def module_problems(info: ModuleInfo, manifest: AgentManifest, policy: SandboxPolicy) -> list[str]:
    """Every reason this module may not run under this manifest and policy (empty: fine)."""
    problems = []
    for name, want in ABI_EXPORTS.items():
        if name not in info.exports:
            problems.append(f"missing export {name!r}")
            continue
        found = info.export_types.get(name)
        if found is None:
            problems.append(f"export {name!r}: type unknown, the ABI needs {want}")
        elif found != want:
            problems.append(f"export {name!r} is {found}, the ABI needs {want}")
    wasi_ok = manifest.limits.wasi and policy.allow_wasi
    for imp in info.imports:
        module = imp.split(".", 1)[0]
        if not (wasi_ok and module in WASI_MODULES):
            problems.append(f"import {imp!r} is not allowed")
    problems += limit_problems(manifest.limits, policy)
    if info.size > policy.max_module_bytes:
        problems.append(f"module is {info.size:,} bytes, policy cap {policy.max_module_bytes:,}")
    if len(info.memories) > policy.max_memories:
        problems.append(
            f"module declares {len(info.memories)} memories, policy allows {policy.max_memories}"
        )
    initial_pages = sum(m.minimum for m in info.memories)
    if initial_pages > manifest.limits.memory_pages:
        problems.append(
            f"memories start at {initial_pages:,} pages in total, above limits.memory_pages "
            f"{manifest.limits.memory_pages:,}"
        )
    if len(info.tables) > policy.max_tables:
        problems.append(
            f"module declares {len(info.tables)} tables, policy allows {policy.max_tables}"
        )
    for i, table in enumerate(info.tables):
        if table.minimum > policy.max_table_elements:
            problems.append(
                f"table {i} starts at {table.minimum:,} elements, policy cap "
                f"{policy.max_table_elements:,}"
            )
    return problems


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_guest_json(raw: bytes, policy: SandboxPolicy, what: str) -> dict[str, Any]:
    """A guest's JSON answer: an object, finite numbers only, bounded in size and depth.

    Anything else is a GuestError (`bad-output`) naming the bound it broke, so a hostile
    answer (NaN, 1e999, ten thousand nested lists, megabytes) is a failed job with a reason,
    never an exception out of the host or a value that poisons a record later.
    """
    if len(raw) > policy.max_answer_bytes:
        raise GuestError(
            "bad-output",
            f"{what} answered {len(raw):,} bytes, the bound is {policy.max_answer_bytes:,}",
        )
    try:
        answer = json.loads(raw, parse_float=_finite_float, parse_constant=_no_constant)
    except RecursionError:
        answer = None
        deep = True
    except ValueError as exc:  # includes UnicodeDecodeError and json.JSONDecodeError
        raise GuestError("bad-output", f"{what} wrote invalid JSON ({exc}): {raw[:80]!r}") from None
    else:
        deep = _depth(answer) > policy.max_answer_depth
    if deep:
        raise GuestError(
            "bad-output", f"{what} answered JSON nested deeper than {policy.max_answer_depth}"
        )
    if not isinstance(answer, dict):
        raise GuestError("bad-output", f"{what} must answer a JSON object")
    return answer


def _depth(value: Any) -> int:
    """Nesting depth without recursion (a scalar is 0, [] is 1)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            stack.extend((v, depth + 1) for v in item)
    return deepest


def finite_number(value: object) -> float | None:
    """`value` as a float if it is a finite real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return number if math.isfinite(number) else None
