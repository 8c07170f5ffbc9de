"""Layer 4's sandbox: wasmtime with fuel, memory limits, epoch (wall-clock) interruption.

The only module that imports wasmtime. A guest failure of any kind becomes a GuestError with
a readable reason and a stable kind; the host and its other instances keep serving.

What a module may use is capped by the `SandboxPolicy` (domain/sandbox.py) twice: layer 3
refuses a bundle whose module or manifest breaks it (`module_problems`), and `instantiate`
refuses it again (defence in depth). Per instance: one memory and one table by default,
pages in total across memories, table elements (`Store.set_limits`); per call: fuel and wall
clock; per evaluation (one instance): total fuel and total guest wall clock. Engine features
the ABI does not need (GC, threads, shared and 64-bit memories, exceptions, stack switching,
components) are off.

Guest calls go through wasmtime's C API (`wasmtime._ffi.wasmtime_func_call`, the checked call)
with argument arrays built once, not through wasmtime-py's `Func.__call__`, which rebuilds the
function's type and converts every argument on every call: for chimera_act's six i32 arguments
that was ~95 µs of a ~125 µs batched step; the call itself is ~5 µs (bench/sandbox_bench.py).
wasmtime is pinned to one major version (pyproject) because of these private names.

Compiled modules are cached in memory and, given a folder, on disk. Deserializing compiled
code trusts its bytes (a flipped byte can be an illegal instruction: SIGILL), so each file
carries an HMAC-SHA256 under a key kept beside the cache (created on first use, mode 0600);
a file that is truncated, corrupted, renamed or written without the key is ignored, deleted
and rebuilt, never loaded. The key guards against damage and foreign files; whoever can
write the key can write the cache, the same trust as the state database beside it.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import hmac
import importlib.metadata
import json
import math
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import wasmtime
from wasmtime import _ffi as ffi

from chimera.domain.errors import ValidationFailedError
from chimera.domain.models import ResourceLimits
from chimera.domain.sandbox import (
    ABI_EXPORTS,
    WASM_PAGE,
    ExportType,
    GuestError,
    ModuleInfo,
    SandboxPolicy,
    limit_problems,
    parse_guest_json,
)
from chimera.domain.wasm_binary import WasmFormatError, WasmLayout, read_layout

_TICK_S = 0.005
_WASMTIME_VERSION = importlib.metadata.version("wasmtime")
# Engine features the agent ABI does not use: off, so a module cannot reach them. GC objects
# in particular live outside linear memory, where Store.set_limits does not count them.
_FEATURES_OFF = (
    "wasm_gc",
    "wasm_function_references",
    "wasm_exceptions",
    "wasm_stack_switching",
    "wasm_threads",
    "shared_memory",
    "wasm_memory64",
    "wasm_custom_page_sizes",
    "wasm_component_model",
    "wasm_wide_arithmetic",
)
# Names the engine's configuration in cache files: another configuration never loads them.
_ENGINE_TAG = hashlib.sha256(
    f"wasmtime{_WASMTIME_VERSION};fuel;epoch;off={','.join(_FEATURES_OFF)}".encode()
).hexdigest()[:12]
_MAC_BYTES = 32
_MODULES_IN_MEMORY = 64  # compiled modules kept per Sandbox, oldest dropped first
_KEY_FILE = "cache.key"


def _tick(engine: wasmtime.Engine) -> None:
    while True:
        engine.increment_epoch()
        time.sleep(_TICK_S)


_ENGINE: wasmtime.Engine | None = None
_ENGINE_LOCK = threading.Lock()


def shared_engine() -> wasmtime.Engine:
    """The process's one engine (fuel and epochs on) and the daemon thread ticking its epoch.

    One engine for every Sandbox, alive as long as the process: a per-sandbox engine watched
    through a weak reference could be handed back to the ticker while its finalizer was
    freeing it (CPython clears weak references after running the finalizer), and crashed.
    """
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            cfg = wasmtime.Config()
            cfg.consume_fuel = True
            cfg.epoch_interruption = True
            for feature in _FEATURES_OFF:
                setattr(cfg, feature, False)
            _ENGINE = wasmtime.Engine(cfg)
            threading.Thread(
                target=_tick, args=(_ENGINE,), name="chimera-epoch", daemon=True
            ).start()
        return _ENGINE


_I32 = "i32"


class _Export:
    """One exported function, its signature checked once, called through the C API.

    `wasmtime_func_call_unchecked` takes the arguments and returns the results in one array of
    raw values; it is safe only when that array matches the function's type, which
    `AgentInstance._export` has checked against the ABI (a function's type never changes). The
    array is kept between calls and rewritten only when the arguments change (the result
    overwrites the first slot, which is put back). A trap or error is raised as wasmtime-py
    would raise it.
    """

    def __init__(self, func: wasmtime.Func, params: tuple[str, ...], results: tuple[str, ...]):
        self._func = func  # owns the wasmtime_func_t that _ref points to
        self._ref = ctypes.byref(func._func)
        self._params = params
        self._result = results[0] if results else None
        self._size = max(1, len(params), len(results))
        self._raw = (ffi.wasmtime_val_raw_t * self._size)()
        self._bound: tuple[int, ...] = ()

    def __call__(self, ctx: Any, *args: int) -> int | None:
        raw = self._raw
        if args != self._bound:
            if len(args) != len(self._params):
                raise TypeError(f"expected {len(self._params)} arguments, got {len(args)}")
            for i, (kind, value) in enumerate(zip(self._params, args, strict=True)):
                if kind == _I32:
                    raw[i].i32 = value
                else:
                    raw[i].i64 = value
            self._bound = args
        trap = ctypes.POINTER(ffi.wasm_trap_t)()
        error = ffi.wasmtime_func_call_unchecked(
            ctx, self._ref, raw, self._size, ctypes.byref(trap)
        )
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
        if trap:
            raise wasmtime.Trap._from_ptr(trap)
        if self._result is None:
            return None
        result = int(raw[0].i32 if self._result == _I32 else raw[0].i64)
        if args:  # put the first argument back where the result landed
            if self._params[0] == _I32:
                raw[0].i32 = args[0]
            else:
                raw[0].i64 = args[0]
        return result


@dataclass(frozen=True)
class _Compiled:
    module: wasmtime.Module
    layout: WasmLayout


def _export_type(ty: Any) -> ExportType:
    if isinstance(ty, wasmtime.FuncType):
        return ExportType("func", tuple(map(str, ty.params)), tuple(map(str, ty.results)))
    if isinstance(ty, wasmtime.MemoryType):
        return ExportType("memory")
    if isinstance(ty, wasmtime.TableType):
        return ExportType("table")
    if isinstance(ty, wasmtime.GlobalType):
        return ExportType("global")
    return ExportType(type(ty).__name__)


class Sandbox:
    """Compiles (with a verified cache) and instantiates agent modules under the policy."""

    def __init__(self, cache_dir: Path | None = None, policy: SandboxPolicy | None = None) -> None:
        self.engine = shared_engine()
        self.policy = policy or SandboxPolicy()
        self._modules: dict[str, _Compiled] = {}
        self._lock = threading.Lock()
        self.cache_dir = cache_dir
        self._key: bytes | None = None
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)

    # -- compilation ---------------------------------------------------------------------
    def compile(self, wasm: bytes) -> wasmtime.Module:
        return self._compiled(wasm).module

    def _compiled(self, wasm: bytes) -> _Compiled:
        if len(wasm) > self.policy.max_module_bytes:
            raise GuestError(
                "policy-limit",
                f"module is {len(wasm):,} bytes, policy cap {self.policy.max_module_bytes:,}",
            )
        digest = hashlib.sha256(wasm).hexdigest()
        with self._lock:
            compiled = self._modules.get(digest)
            if compiled is not None:
                return compiled
            module = self._load_cached(digest) or self._compile_fresh(digest, wasm)
            try:
                layout = read_layout(wasm)
            except WasmFormatError as exc:
                raise GuestError("invalid-module", f"module not accepted: {exc}") from exc
            if len(self._modules) >= _MODULES_IN_MEMORY:  # uploads must not grow it forever
                del self._modules[next(iter(self._modules))]
            compiled = self._modules[digest] = _Compiled(module, layout)
            return compiled

    def _cache_path(self, digest: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{digest}-wasmtime{_WASMTIME_VERSION}-{_ENGINE_TAG}.cwasm"

    def _cache_key(self) -> bytes:
        """This cache folder's HMAC key: made once (atomically, 0600), then read."""
        if self._key is not None:
            return self._key
        assert self.cache_dir is not None
        path = self.cache_dir / _KEY_FILE
        with contextlib.suppress(OSError):
            key = path.read_bytes()
            if len(key) == _MAC_BYTES:
                self._key = key
                return key
        tmp = self.cache_dir / f".{_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(_MAC_BYTES))
        try:
            os.link(tmp, path)  # first writer wins; the others read its key
        except FileExistsError:
            if len(path.read_bytes()) != _MAC_BYTES:  # a damaged key: replace it
                os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        key = path.read_bytes()
        self._key = key
        return key

    def _mac(self, path: Path, code: bytes) -> bytes:
        return hmac.new(self._cache_key(), path.name.encode() + b"\0" + code, "sha256").digest()

    def _load_cached(self, digest: str) -> wasmtime.Module | None:
        path = self._cache_path(digest)
        if path is None or not path.exists():
            return None
        try:
            data = path.read_bytes()
            mac, code = data[:_MAC_BYTES], data[_MAC_BYTES:]
            if len(mac) == _MAC_BYTES and hmac.compare_digest(mac, self._mac(path, code)):
                return wasmtime.Module.deserialize(self.engine, code)
        except (OSError, wasmtime.WasmtimeError):
            pass
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)  # damaged, stale or foreign: rebuilt below
        return None

    def _compile_fresh(self, digest: str, wasm: bytes) -> wasmtime.Module:
        try:
            module = wasmtime.Module(self.engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise GuestError(
                "invalid-module", f"module does not compile: {_first_line(exc)}"
            ) from exc
        path = self._cache_path(digest)
        if path is not None:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            try:
                code = bytes(module.serialize())
                tmp.write_bytes(self._mac(path, code) + code)
                tmp.replace(path)
            except OSError:  # a cache that cannot be written is only slower
                tmp.unlink(missing_ok=True)
        return module

    def inspect(self, wasm: bytes) -> ModuleInfo:
        compiled = self._compiled(wasm)
        return ModuleInfo(
            imports=tuple(f"{i.module}.{i.name}" for i in compiled.module.imports),
            exports=tuple(e.name for e in compiled.module.exports),
            export_types={e.name: _export_type(e.type) for e in compiled.module.exports},
            memories=compiled.layout.memories,
            tables=compiled.layout.tables,
            size=len(wasm),
        )

    # -- instantiation -------------------------------------------------------------------
    def instantiate(self, wasm: bytes, limits: ResourceLimits) -> AgentInstance:
        policy = self.policy
        problems = limit_problems(limits, policy)
        if problems:
            raise GuestError("policy-limit", "; ".join(problems))
        compiled = self._compiled(wasm)
        memories, tables = compiled.layout.memories, compiled.layout.tables
        if len(memories) > policy.max_memories:
            raise GuestError(
                "memory-limit",
                f"module declares {len(memories)} memories, policy allows {policy.max_memories}",
            )
        if len(tables) > policy.max_tables:
            raise GuestError(
                "table-limit",
                f"module declares {len(tables)} tables, policy allows {policy.max_tables}",
            )
        # The manifest's pages are for the whole instance: shared out among its memories.
        pages_each = limits.memory_pages // max(1, len(memories))
        store = wasmtime.Store(self.engine)
        store.set_limits(
            memory_size=pages_each * WASM_PAGE,
            table_elements=policy.max_table_elements,
            instances=1,
            tables=policy.max_tables,
            memories=policy.max_memories,
        )
        linker = wasmtime.Linker(self.engine)
        if limits.wasi:
            linker.define_wasi()
            store.set_wasi(wasmtime.WasiConfig())  # no preopened dirs, no env, no args
        budget = _Budget(limits, policy)
        fuel, ticks = budget.next_call()
        store.set_fuel(fuel)
        store.set_epoch_deadline(ticks)
        started = time.perf_counter()
        try:
            instance = linker.instantiate(store, compiled.module)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            budget.spent(fuel - store.get_fuel(), time.perf_counter() - started)
            raise budget.failure(exc, fuel, ticks, memory_full=False) from exc
        budget.spent(fuel - store.get_fuel(), time.perf_counter() - started)
        return AgentInstance(store, instance, limits, policy, budget, pages_each)


class _Budget:
    """What one instance (one evaluation) may still spend, and how a failure is named.

    The policy's base, grown by its per-row share for every candidate row `prepare` places.
    """

    def __init__(self, limits: ResourceLimits, policy: SandboxPolicy) -> None:
        self.limits = limits
        self.policy = policy
        self.call_ticks = _ticks(limits.wall_ms)
        self.fuel_total = self.fuel_left = policy.evaluation_fuel
        self.wall_total_ms = policy.evaluation_wall_ms
        self.wall_left_s = policy.evaluation_wall_ms / 1000
        self.rows = 0
        self.calls = 0

    def add_rows(self, rows: int) -> None:
        self.rows += rows
        self.fuel_total += self.policy.fuel_per_row * rows
        self.fuel_left += self.policy.fuel_per_row * rows
        self.wall_total_ms += self.policy.wall_ms_per_row * rows
        self.wall_left_s += self.policy.wall_ms_per_row * rows / 1000

    def next_call(self) -> tuple[int, int]:
        """(fuel, epoch ticks) for the next call: its own limits, or what the evaluation has
        left if that is less. An evaluation with nothing left fails before the call."""
        if self.fuel_left <= 0:
            raise self._exhausted("fuel")
        if self.wall_left_s <= 0:
            raise self._exhausted("wall clock")
        fuel = min(self.limits.fuel_per_call, self.fuel_left)
        ticks = min(self.call_ticks, max(1, math.ceil(self.wall_left_s / _TICK_S)))
        return fuel, ticks

    def spent(self, fuel: int, seconds: float) -> None:
        self.fuel_left -= fuel
        self.wall_left_s -= seconds
        self.calls += 1

    def _exhausted(self, what: str) -> GuestError:
        if what == "fuel":
            budget, settings = f"{self.fuel_total:,} fuel", "evaluation_fuel + fuel_per_row"
        else:
            budget, settings = f"{self.wall_total_ms:,} ms", "evaluation_wall_ms + wall_ms_per_row"
        return GuestError(
            "evaluation-budget",
            f"evaluation {what} budget of {budget} spent after {self.calls} guest calls "
            f"(policy {settings} x {self.rows} rows)",
        )

    def failure(self, exc: BaseException, fuel: int, ticks: int, memory_full: bool) -> GuestError:
        """The GuestError for a trap or error from a call made with (fuel, ticks), its
        spending already counted."""
        limits = self.limits
        code = getattr(exc, "trap_code", None)
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            if fuel < limits.fuel_per_call or self.fuel_left <= 0:
                return self._exhausted("fuel")
            also = f" with memory at its {limits.memory_pages}-page limit" if memory_full else ""
            return GuestError(
                "out-of-fuel", f"fuel budget of {limits.fuel_per_call:,} per call exhausted{also}"
            )
        if code == wasmtime.TrapCode.INTERRUPT:
            # The evaluation's clock, if it capped this call or (within a tick) ran out with it.
            if ticks < self.call_ticks or self.wall_left_s <= _TICK_S:
                return self._exhausted("wall clock")
            return GuestError("timeout", f"wall-clock limit of {limits.wall_ms} ms exceeded")
        if code == wasmtime.TrapCode.STACK_OVERFLOW:
            return GuestError("stack-overflow", "guest call stack exhausted (unbounded recursion?)")
        text = _first_line(exc)
        if code is not None:
            trap = str(code.name).lower().replace("_", " ")
            if memory_full:  # the limiter refused a memory.grow and the guest gave up
                return GuestError(
                    "memory-limit",
                    f"guest trapped ({trap}) with its memory at the {limits.memory_pages}-page "
                    "limit: growing it was refused",
                )
            return GuestError("trap", f"guest trapped: {trap}")
        return _instantiation_error(text, limits)


def _instantiation_error(text: str, limits: ResourceLimits) -> GuestError:
    if "memory" in text and ("exceeds memory limits" in text or "count too high" in text):
        return GuestError("memory-limit", f"module needs more memory than allowed: {text}")
    if "table" in text and ("exceeds table limits" in text or "count too high" in text):
        return GuestError("table-limit", f"module needs a larger table than allowed: {text}")
    if "unknown import" in text or "import" in text and "not" in text:
        return GuestError("forbidden-import", f"module imports something not allowed: {text}")
    return GuestError("trap", f"guest failed: {text}")


@dataclass(frozen=True)
class _Buffers:
    genomes: int
    obs: int
    out: int
    n_agents: int
    n_obs: int
    shared: bool


class AgentInstance:
    """One instantiated agent, for one evaluation. After a GuestError it is poisoned."""

    def __init__(
        self,
        store: wasmtime.Store,
        instance: wasmtime.Instance,
        limits: ResourceLimits,
        policy: SandboxPolicy,
        budget: _Budget,
        pages: int,
    ):
        self._store = store
        self._limits = limits
        self._policy = policy
        self._budget = budget
        self._memory_cap = pages * WASM_PAGE  # bytes the exported memory may reach
        self.fuel_used = 0
        self.calls = 0
        self._buffers: _Buffers | None = None
        self.poisoned: str | None = None
        self._mem_size = -1
        self._mem = np.empty(0, dtype=np.uint8)
        self._obs_view = np.empty(0, dtype=np.float32)
        self._out_view = np.empty((0, 0), dtype=np.float32)
        self._views_size = -1  # memory size when the two views above were made
        # The per-call bookkeeping goes through the C API too (each wasmtime-py call on the
        # store costs about a microsecond): the store's context, fuel, the epoch deadline.
        self._ctx = store._context()
        self._fuel = ctypes.c_uint64()
        self._fuel_ref = ctypes.byref(self._fuel)
        exports = instance.exports(store)
        memory = self._get(exports, "memory")
        if not isinstance(memory, wasmtime.Memory):
            raise GuestError("abi-mismatch", "export 'memory' is not a memory")
        self._memory: wasmtime.Memory = memory
        self._memory_ref = ctypes.byref(memory._memory)
        self._alloc = self._export(exports, "chimera_alloc")
        self._reset = self._export(exports, "chimera_reset")
        self._act = self._export(exports, "chimera_act")
        self._predict = self._export(exports, "chimera_predict")
        version = self._call(self._export(exports, "chimera_abi_version"))
        if version != 1:
            raise GuestError("abi-mismatch", f"chimera_abi_version is {version}, the host speaks 1")
        self.genome_len = int(self._call(self._export(exports, "chimera_genome_len")))
        self.obs_len = int(self._call(self._export(exports, "chimera_obs_len")))

    @staticmethod
    def _get(exports: Any, name: str) -> Any:
        try:
            return exports[name]
        except KeyError:
            raise GuestError("missing-export", f"module does not export {name}") from None

    def _export(self, exports: Any, name: str) -> _Export:
        """The export `name`, checked against the kind and signature the host calls it with."""
        func = self._get(exports, name)
        want = ABI_EXPORTS[name]
        if not isinstance(func, wasmtime.Func):
            found = type(func).__name__.lower()
            raise GuestError("abi-mismatch", f"export {name!r} is a {found}, the ABI needs {want}")
        found_type = _export_type(func.type(self._store))
        if found_type != want:
            raise GuestError(
                "abi-mismatch", f"export {name!r} is {found_type}, the ABI needs {want}"
            )
        return _Export(func, want.params, want.results)

    # -- guest calls under the limits ----------------------------------------------------
    def _call(self, func: _Export, *args: int) -> Any:
        if self.poisoned:
            raise GuestError("poisoned", f"instance failed earlier: {self.poisoned}")
        budget, ctx = self._budget, self._ctx
        try:
            fuel, ticks = budget.next_call()
        except GuestError as exc:
            self.poisoned = exc.reason
            raise
        error = ffi.wasmtime_context_set_fuel(ctx, fuel)
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
        ffi.wasmtime_context_set_epoch_deadline(ctx, ticks)
        started = time.perf_counter()
        try:
            result = func(ctx, *args)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            self._spent(fuel, started)
            err = budget.failure(exc, fuel, ticks, memory_full=self._memory_full())
            self.poisoned = err.reason
            raise err from exc
        self._spent(fuel, started)
        self._sync_memory()  # only a guest call can grow the memory
        return result

    def _spent(self, fuel: int, started: float) -> None:
        ffi.wasmtime_context_get_fuel(self._ctx, self._fuel_ref)
        used = fuel - self._fuel.value
        self._budget.spent(used, time.perf_counter() - started)
        self.fuel_used += used
        self.calls += 1

    def _memory_size(self) -> int:
        return int(ffi.wasmtime_memory_data_size(self._ctx, self._memory_ref))

    def _memory_full(self) -> bool:
        """True when the next memory.grow would pass the limit (so it was likely refused)."""
        return self._memory_size() + WASM_PAGE > self._memory_cap

    def _sync_memory(self) -> None:
        """Rebuild the whole-memory view if the memory's size changed (a grow may move it).

        Views made from the old one are stale then: `act` remaps its buffers when
        `_views_size` differs from `_mem_size`.
        """
        size = self._memory_size()
        if size != self._mem_size:
            base = ctypes.addressof(self._memory.data_ptr(self._store).contents)
            self._mem = np.ctypeslib.as_array((ctypes.c_ubyte * size).from_address(base))
            self._mem_size = size

    def _view(self, ptr: int, nbytes: int) -> np.ndarray:
        """Bytes [ptr, ptr + nbytes) of guest memory, bounds-checked, without a copy."""
        self._sync_memory()
        size = self._mem_size
        if ptr <= 0 or nbytes < 0 or ptr + nbytes > size:
            raise GuestError("bad-pointer", f"guest buffer [{ptr}, {ptr + nbytes}) outside memory")
        return self._mem[ptr : ptr + nbytes]

    def _allocate(self, nbytes: int) -> int:
        if nbytes > self._memory_cap or nbytes >= 2**31:
            self.poisoned = "allocation above the memory limit"
            raise GuestError(
                "memory-limit",
                f"{nbytes:,} bytes do not fit within {self._limits.memory_pages} pages",
            )
        ptr = int(self._call(self._alloc, nbytes))
        if ptr == 0:
            self.poisoned = "allocation failed"
            raise GuestError(
                "memory-limit",
                f"guest could not allocate {nbytes} bytes within {self._limits.memory_pages} pages",
            )
        return ptr

    # -- the batched ABI -----------------------------------------------------------------
    def prepare(self, genomes: np.ndarray, n_obs: int, shared: bool) -> None:
        """Place a population's genomes once; later `act` calls only move observations."""
        genomes = np.ascontiguousarray(genomes, dtype=np.float32)
        n_agents, width = genomes.shape
        if width != self.genome_len:
            raise GuestError("abi-mismatch", f"module takes {self.genome_len} genes, got {width}")
        self._budget.add_rows(n_agents)
        self._call(self._reset)
        g = self._allocate(genomes.nbytes)
        obs_count = (n_obs if shared else n_agents * n_obs) * self.obs_len
        o = self._allocate(obs_count * 4)
        out = self._allocate(n_agents * n_obs * 4)
        self._view(g, genomes.nbytes)[:] = genomes.view(np.uint8).ravel()
        self._buffers = _Buffers(g, o, out, n_agents, n_obs, shared)
        self._map_buffers(self._buffers)

    def _map_buffers(self, b: _Buffers) -> None:
        """float32 views of the observation and output buffers, kept until memory moves."""
        obs_values = (b.n_obs if b.shared else b.n_agents * b.n_obs) * self.obs_len
        self._obs_view = self._view(b.obs, obs_values * 4).view(np.float32)
        out = self._view(b.out, b.n_agents * b.n_obs * 4).view(np.float32)
        self._out_view = out.reshape(b.n_agents, b.n_obs)
        self._views_size = self._mem_size

    def act(self, obs: np.ndarray) -> np.ndarray:
        """One guest call for the whole population: returns out[n_agents, n_obs].

        Outputs are returned as the guest wrote them, NaN included: which agent's outputs are
        unusable is the suite's call (domain/suites.py fails that agent alone).
        """
        b = self._buffers
        if b is None:
            raise GuestError("abi-misuse", "prepare() must come before act()")
        obs = np.asarray(obs)
        if self._views_size != self._mem_size:
            self._map_buffers(b)
        if obs.size != self._obs_view.size:
            raise GuestError(
                "abi-mismatch",
                f"expected {self._obs_view.size} observation values, got {obs.size}",
            )
        self._obs_view[:] = obs.reshape(-1)  # converts to float32 while copying in
        rc = self._call(self._act, b.genomes, b.n_agents, b.obs, b.n_obs, int(b.shared), b.out)
        if rc != 0:
            raise GuestError("guest-error", f"chimera_act returned {rc}")
        if self._views_size != self._mem_size:
            self._map_buffers(b)  # the guest grew its memory during the call
        return self._out_view.copy()

    def predict(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The JSON-in/JSON-out entry point for single jobs; the answer is bounded and finite."""
        try:
            data = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        except ValueError as exc:
            raise ValidationFailedError("observation", f"not a finite number: {exc}") from exc
        self._call(self._reset)
        ptr = self._allocate(len(data))
        self._view(ptr, len(data))[:] = np.frombuffer(data, dtype=np.uint8)
        packed = int(self._call(self._predict, ptr, len(data)))
        if packed < 0:
            raise GuestError("guest-error", f"chimera_predict rejected the input (code {packed})")
        out_ptr, out_len = packed >> 32, packed & 0xFFFFFFFF
        if out_len > self._policy.max_answer_bytes:
            raise GuestError(
                "bad-output",
                f"chimera_predict answered {out_len:,} bytes, the bound is "
                f"{self._policy.max_answer_bytes:,}",
            )
        raw = self._view(out_ptr, out_len).tobytes()
        return parse_guest_json(raw, self._policy, "chimera_predict")


def _ticks(wall_ms: int) -> int:
    return max(1, int(wall_ms / 1000 / _TICK_S))


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
