"""Layer 4's sandbox: wasmtime with fuel, memory limits, epoch (wall-clock) interruption.

The only module that imports wasmtime. A guest failure of any kind becomes a GuestError with
a readable reason; the host and its other instances keep serving.

Guest calls go through wasmtime's C API (`wasmtime._ffi.wasmtime_func_call`, the checked call)
with argument arrays built once, not through wasmtime-py's `Func.__call__`, which rebuilds the
function's type and converts every argument on every call: for chimera_act's six i32 arguments
that was ~95 µs of a ~125 µs batched step; the call itself is ~5 µs (bench/sandbox_bench.py).
wasmtime is pinned to one major version (pyproject) because of these private names.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import wasmtime
from wasmtime import _ffi as ffi

from chimera.domain.models import ResourceLimits
from chimera.domain.sandbox import GuestError, ModuleInfo

_TICK_S = 0.005
_WASMTIME_VERSION = importlib.metadata.version("wasmtime")


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
            _ENGINE = wasmtime.Engine(cfg)
            threading.Thread(
                target=_tick, args=(_ENGINE,), name="chimera-epoch", daemon=True
            ).start()
        return _ENGINE


_I32, _I64 = "i32", "i64"
# Every export the host calls, with the signature it calls it with: (params, results).
_SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "chimera_abi_version": ((), (_I32,)),
    "chimera_genome_len": ((), (_I32,)),
    "chimera_obs_len": ((), (_I32,)),
    "chimera_reset": ((), ()),
    "chimera_alloc": ((_I32,), (_I32,)),
    "chimera_act": ((_I32,) * 6, (_I32,)),
    "chimera_predict": ((_I32, _I32), (_I64,)),
}


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
class _Buffers:
    genomes: int
    obs: int
    out: int
    n_agents: int
    n_obs: int
    shared: bool


class Sandbox:
    """Compiles (with a cache) and instantiates agent modules under their limits."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.engine = shared_engine()
        self._modules: dict[str, wasmtime.Module] = {}
        self._lock = threading.Lock()
        self.cache_dir = cache_dir
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)

    # -- compilation ---------------------------------------------------------------------
    def compile(self, wasm: bytes) -> wasmtime.Module:
        digest = hashlib.sha256(wasm).hexdigest()
        with self._lock:
            module = self._modules.get(digest)
            if module is not None:
                return module
            module = self._load_cached(digest) or self._compile_fresh(digest, wasm)
            self._modules[digest] = module
            return module

    def _cache_path(self, digest: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{digest}-wasmtime{_WASMTIME_VERSION}.cwasm"

    def _load_cached(self, digest: str) -> wasmtime.Module | None:
        path = self._cache_path(digest)
        if path is None or not path.exists():
            return None
        try:
            return wasmtime.Module.deserialize_file(self.engine, str(path))
        except wasmtime.WasmtimeError:
            path.unlink(missing_ok=True)  # stale or foreign: recompile
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
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(module.serialize())
            tmp.replace(path)
        return module

    def inspect(self, wasm: bytes) -> ModuleInfo:
        module = self.compile(wasm)
        return ModuleInfo(
            imports=tuple(f"{i.module}.{i.name}" for i in module.imports),
            exports=tuple(e.name for e in module.exports),
        )

    # -- instantiation -------------------------------------------------------------------
    def instantiate(self, wasm: bytes, limits: ResourceLimits) -> AgentInstance:
        module = self.compile(wasm)
        store = wasmtime.Store(self.engine)
        store.set_limits(
            memory_size=limits.memory_pages * 65536, table_elements=10_000, instances=1
        )
        linker = wasmtime.Linker(self.engine)
        if limits.wasi:
            linker.define_wasi()
            store.set_wasi(wasmtime.WasiConfig())  # no preopened dirs, no env, no args
        store.set_fuel(limits.fuel_per_call)
        store.set_epoch_deadline(_ticks(limits.wall_ms))
        try:
            instance = linker.instantiate(store, module)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise _guest_error(exc, limits) from exc
        return AgentInstance(store, instance, limits)


class AgentInstance:
    """One instantiated agent. After a GuestError it is poisoned: make a new one."""

    def __init__(self, store: wasmtime.Store, instance: wasmtime.Instance, limits: ResourceLimits):
        self._store = store
        self._limits = limits
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
        self._ticks = _ticks(limits.wall_ms)
        self._fuel = ctypes.c_uint64()
        self._fuel_ref = ctypes.byref(self._fuel)
        exports = instance.exports(store)
        try:
            memory = exports["memory"]
        except KeyError as exc:
            raise GuestError("missing-export", "module does not export memory") from exc
        if not isinstance(memory, wasmtime.Memory):
            raise GuestError("missing-export", "export 'memory' is not a memory")
        self._memory: wasmtime.Memory = memory
        self._memory_ref = ctypes.byref(memory._memory)
        self._alloc = self._export(exports, "chimera_alloc")
        self._reset = self._export(exports, "chimera_reset")
        self._act = self._export(exports, "chimera_act")
        self._predict = self._export(exports, "chimera_predict")
        self.genome_len = int(self._call(self._export(exports, "chimera_genome_len")))
        self.obs_len = int(self._call(self._export(exports, "chimera_obs_len")))

    def _export(self, exports: Any, name: str) -> _Export:
        """The export `name`, checked against the signature the host calls it with."""
        try:
            func = exports[name]
        except KeyError:
            raise GuestError("missing-export", f"module does not export {name}") from None
        params, results = _SIGNATURES[name]
        if not isinstance(func, wasmtime.Func):
            raise GuestError("missing-export", f"export {name!r} is not a function")
        ty = func.type(self._store)
        found = tuple(map(str, ty.params)), tuple(map(str, ty.results))
        if found != (params, results):
            raise GuestError(
                "abi-mismatch",
                f"export {name!r} has signature {found}, the ABI says {(params, results)}",
            )
        return _Export(func, params, results)

    # -- guest calls under the limits ----------------------------------------------------
    def _call(self, func: _Export, *args: int) -> Any:
        if self.poisoned:
            raise GuestError("poisoned", f"instance failed earlier: {self.poisoned}")
        ctx, budget = self._ctx, self._limits.fuel_per_call
        error = ffi.wasmtime_context_set_fuel(ctx, budget)
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
        ffi.wasmtime_context_set_epoch_deadline(ctx, self._ticks)
        try:
            result = func(ctx, *args)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            err = _guest_error(exc, self._limits)
            self.poisoned = err.reason
            raise err from exc
        finally:
            ffi.wasmtime_context_get_fuel(ctx, self._fuel_ref)
            self.fuel_used += budget - self._fuel.value
            self.calls += 1
        self._sync_memory()  # only a guest call can grow the memory
        return result

    def _memory_size(self) -> int:
        return int(ffi.wasmtime_memory_data_size(self._ctx, self._memory_ref))

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
        if ptr <= 0 or ptr + nbytes > size:
            raise GuestError("bad-pointer", f"guest buffer [{ptr}, {ptr + nbytes}) outside memory")
        return self._mem[ptr : ptr + nbytes]

    def _allocate(self, nbytes: int) -> int:
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
        """One guest call for the whole population: returns out[n_agents, n_obs]."""
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
        """The JSON-in/JSON-out entry point for single jobs."""
        data = json.dumps(payload, separators=(",", ":")).encode()
        self._call(self._reset)
        ptr = self._allocate(len(data))
        self._view(ptr, len(data))[:] = np.frombuffer(data, dtype=np.uint8)
        packed = int(self._call(self._predict, ptr, len(data)))
        if packed < 0:
            raise GuestError("guest-error", f"chimera_predict rejected the input (code {packed})")
        out_ptr, out_len = packed >> 32, packed & 0xFFFFFFFF
        raw = self._view(out_ptr, out_len).tobytes()
        try:
            answer = json.loads(raw)
        except ValueError as exc:
            raise GuestError(
                "guest-error", f"chimera_predict wrote invalid JSON: {raw[:80]!r}"
            ) from exc
        if not isinstance(answer, dict):
            raise GuestError("guest-error", "chimera_predict must answer a JSON object")
        return answer


def _ticks(wall_ms: int) -> int:
    return max(1, int(wall_ms / 1000 / _TICK_S))


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _guest_error(exc: BaseException, limits: ResourceLimits) -> GuestError:
    code = getattr(exc, "trap_code", None)
    if code == wasmtime.TrapCode.OUT_OF_FUEL:
        return GuestError(
            "out-of-fuel", f"fuel budget of {limits.fuel_per_call} per call exhausted"
        )
    if code == wasmtime.TrapCode.INTERRUPT:
        return GuestError("timeout", f"wall-clock limit of {limits.wall_ms} ms exceeded")
    if code == wasmtime.TrapCode.STACK_OVERFLOW:
        return GuestError("stack-overflow", "guest call stack exhausted (unbounded recursion?)")
    text = _first_line(exc)
    if "unknown import" in text or "import" in text and "not" in text:
        return GuestError("forbidden-import", f"module imports something not allowed: {text}")
    if code is not None:
        return GuestError("trap", f"guest trapped: {str(code.name).lower().replace('_', ' ')}")
    return GuestError("trap", f"guest failed: {text}")
