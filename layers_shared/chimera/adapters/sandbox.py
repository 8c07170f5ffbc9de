"""Layer 4's sandbox: wasmtime with fuel, memory limits, epoch (wall-clock) interruption.

The only module that imports wasmtime. A guest failure of any kind becomes a GuestError with
a readable reason; the host and its other instances keep serving.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import json
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import wasmtime

from chimera.domain.models import ResourceLimits
from chimera.domain.sandbox import GuestError, ModuleInfo

_TICK_S = 0.005
_WASMTIME_VERSION = importlib.metadata.version("wasmtime")


class _EpochTicker:
    """One daemon thread per engine advancing its epoch: the wall-clock deadline's clock."""

    def __init__(self, engine: wasmtime.Engine) -> None:
        self._engine = weakref.ref(engine)
        threading.Thread(target=self._run, name="chimera-epoch", daemon=True).start()

    def _run(self) -> None:
        while (engine := self._engine()) is not None:
            engine.increment_epoch()
            del engine
            time.sleep(_TICK_S)


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
        cfg = wasmtime.Config()
        cfg.consume_fuel = True
        cfg.epoch_interruption = True
        self.engine = wasmtime.Engine(cfg)
        self._ticker = _EpochTicker(self.engine)
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
        exports = instance.exports(store)
        try:
            memory = exports["memory"]
            self._alloc = exports["chimera_alloc"]
            self._reset = exports["chimera_reset"]
            self._act = exports["chimera_act"]
            self._predict = exports["chimera_predict"]
            genome_len = exports["chimera_genome_len"]
            obs_len = exports["chimera_obs_len"]
        except KeyError as exc:
            raise GuestError("missing-export", f"module does not export {exc.args[0]}") from exc
        if not isinstance(memory, wasmtime.Memory):
            raise GuestError("missing-export", "export 'memory' is not a memory")
        self._memory: wasmtime.Memory = memory
        self.genome_len = int(self._call(genome_len))
        self.obs_len = int(self._call(obs_len))

    # -- guest calls under the limits ----------------------------------------------------
    def _call(self, func: Any, *args: Any) -> Any:
        if self.poisoned:
            raise GuestError("poisoned", f"instance failed earlier: {self.poisoned}")
        store = self._store
        store.set_fuel(self._limits.fuel_per_call)
        store.set_epoch_deadline(_ticks(self._limits.wall_ms))
        try:
            result = func(store, *args)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            err = _guest_error(exc, self._limits)
            self.poisoned = err.reason
            raise err from exc
        finally:
            self.fuel_used += self._limits.fuel_per_call - store.get_fuel()
            self.calls += 1
        return result

    def _view(self, ptr: int, nbytes: int) -> np.ndarray:
        """Bytes [ptr, ptr + nbytes) of guest memory, bounds-checked, without a copy.

        The whole-memory view is rebuilt whenever the memory's size changes (a grow may move it).
        """
        size = self._memory.data_len(self._store)
        if size != self._mem_size:
            base = ctypes.addressof(self._memory.data_ptr(self._store).contents)
            self._mem = np.ctypeslib.as_array((ctypes.c_ubyte * size).from_address(base))
            self._mem_size = size
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

    def act(self, obs: np.ndarray) -> np.ndarray:
        """One guest call for the whole population: returns out[n_agents, n_obs]."""
        b = self._buffers
        if b is None:
            raise GuestError("abi-misuse", "prepare() must come before act()")
        obs = np.ascontiguousarray(obs, dtype=np.float32)
        expected = (b.n_obs if b.shared else b.n_agents * b.n_obs) * self.obs_len
        if obs.size != expected:
            raise GuestError(
                "abi-mismatch", f"expected {expected} observation values, got {obs.size}"
            )
        self._view(b.obs, obs.nbytes)[:] = obs.view(np.uint8).ravel()
        rc = int(self._call(self._act, b.genomes, b.n_agents, b.obs, b.n_obs, int(b.shared), b.out))
        if rc != 0:
            raise GuestError("guest-error", f"chimera_act returned {rc}")
        nbytes = b.n_agents * b.n_obs * 4
        return self._view(b.out, nbytes).view(np.float32).reshape(b.n_agents, b.n_obs).copy()

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
