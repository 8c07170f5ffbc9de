"""Layer 4: hostile modules become clear failures and the host keeps serving."""

from __future__ import annotations

import json

import numpy as np
import pytest
import wasmtime
from chimera.adapters.sandbox import Sandbox
from chimera.domain.models import AgentManifest, ResourceLimits
from chimera.domain.sandbox import GuestError, SandboxPolicy, module_problems

# A module with the full ABI whose chimera_act body is given by each test.
ABI_WAT = """
(module {imports}
  (memory (export "memory") 1)
  (global $top (mut i32) (i32.const 1024))
  (func (export "chimera_abi_version") (result i32) i32.const 1)
  (func (export "chimera_genome_len") (result i32) i32.const 5)
  (func (export "chimera_obs_len") (result i32) i32.const 4)
  (func (export "chimera_reset") i32.const 1024 global.set $top)
  (func (export "chimera_alloc") (param $n i32) (result i32) (local $p i32)
    global.get $top local.set $p
    global.get $top local.get $n i32.add global.set $top
    (block $ok
      (br_if $ok (i32.le_u (global.get $top) (i32.mul (memory.size) (i32.const 65536))))
      (br_if $ok (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))
      (return (i32.const 0)))
    local.get $p)
  (func $rec (param i32) (result i32) local.get 0 call $rec i32.const 1 i32.add)
  (func (export "chimera_predict") (param i32 i32) (result i64) i64.const -1)
  (func (export "chimera_act") (param i32 i32 i32 i32 i32 i32) (result i32) {body})
)
"""

BODIES = {
    "loops forever": "(loop $l (br $l)) i32.const 0",
    "grows memory without end": "(loop $l (drop (memory.grow (i32.const 1))) (br $l)) i32.const 0",
    "recurses without end": "i32.const 0 call $rec",
    "traps": "unreachable",
}
LIMITS = ResourceLimits(fuel_per_call=5_000_000, memory_pages=32, wall_ms=500)


def module(body: str = "i32.const 0", imports: str = "") -> bytes:
    return wasmtime.wat2wasm(ABI_WAT.format(body=body, imports=imports))


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox()


@pytest.mark.parametrize(
    ("case", "kind"),
    [
        ("loops forever", "out-of-fuel"),
        ("grows memory without end", "out-of-fuel"),
        ("recurses without end", "stack-overflow"),
        ("traps", "trap"),
    ],
)
def test_hostile_module_fails_cleanly(sandbox, case, kind):
    inst = sandbox.instantiate(module(BODIES[case]), LIMITS)
    inst.prepare(np.zeros((2, 5)), n_obs=1, shared=False)
    with pytest.raises(GuestError) as err:
        inst.act(np.zeros((2, 4)))
    assert err.value.kind == kind
    assert err.value.reason
    # The instance is poisoned; the host still serves a good module.
    with pytest.raises(GuestError, match="failed earlier"):
        inst.act(np.zeros((2, 4)))
    good = sandbox.instantiate(module("i32.const 0"), LIMITS)
    good.prepare(np.zeros((2, 5)), n_obs=1, shared=False)
    assert good.act(np.zeros((2, 4))).shape == (2, 1)


def test_wall_clock_interrupts_when_fuel_would_not(sandbox):
    limits = ResourceLimits(fuel_per_call=10**15, memory_pages=32, wall_ms=50)
    inst = sandbox.instantiate(module(BODIES["loops forever"]), limits)
    inst.prepare(np.zeros((1, 5)), n_obs=1, shared=False)
    with pytest.raises(GuestError) as err:
        inst.act(np.zeros((1, 4)))
    assert err.value.kind == "timeout"
    assert "50 ms" in err.value.reason


def test_memory_limit_refuses_large_buffers(sandbox):
    inst = sandbox.instantiate(module(), LIMITS)
    with pytest.raises(GuestError) as err:
        inst.prepare(np.zeros((100_000, 5)), n_obs=1, shared=False)
    assert err.value.kind == "memory-limit"


def test_forbidden_import_is_rejected(sandbox):
    wasm = module(imports='(import "env" "system" (func (param i32)))')
    with pytest.raises(GuestError) as err:
        sandbox.instantiate(wasm, LIMITS)
    assert err.value.kind == "forbidden-import"
    manifest = AgentManifest(
        agent_id="x", suite="cartpole-v1", obs_len=4, genome=({"name": "a", "low": 0, "high": 1},)
    )
    problems = module_problems(sandbox.inspect(wasm), manifest, SandboxPolicy())
    assert problems == ["import 'env.system' is not allowed"]


def test_invalid_module_is_rejected(sandbox):
    with pytest.raises(GuestError) as err:
        sandbox.instantiate(b"\0asm\x01\0\0\0garbage", LIMITS)
    assert err.value.kind == "invalid-module"


def test_missing_exports_are_named(sandbox):
    wasm = wasmtime.wat2wasm('(module (memory (export "memory") 1))')
    manifest = AgentManifest(
        agent_id="x", suite="cartpole-v1", obs_len=4, genome=({"name": "a", "low": 0, "high": 1},)
    )
    problems = module_problems(sandbox.inspect(wasm), manifest, SandboxPolicy())
    assert "missing export 'chimera_act'" in problems
    with pytest.raises(GuestError, match="does not export"):
        sandbox.instantiate(wasm, LIMITS)


def test_sample_agent_matches_reference(sandbox, repo):
    folder = repo / "layers_shared/agents/cartpole-linear"
    manifest = AgentManifest.model_validate_json((folder / "manifest.json").read_text())
    inst = sandbox.instantiate((folder / "agent.wasm").read_bytes(), manifest.limits)
    rng = np.random.default_rng(0)
    genomes = rng.normal(size=(64, 5)).astype(np.float32)
    obs = rng.normal(size=(64, 4)).astype(np.float32)
    inst.prepare(genomes, n_obs=1, shared=False)
    expected = ((obs * genomes[:, :4]).sum(axis=1) + genomes[:, 4] > 0).astype(np.float32)
    np.testing.assert_array_equal(inst.act(obs)[:, 0], expected)
    answer = inst.predict({"genome": [1, 0, 0, 0, -0.5], "observation": [0.25, 0, 0, 0]})
    assert answer == {"output": 0.0}
    assert inst.predict({"genome": [1, 0, 0, 0, 0.5], "observation": [0.25, 0, 0, 0]}) == {
        "output": 1.0
    }
    assert inst.fuel_used > 0


def test_predict_rejects_malformed_json_input(sandbox, repo):
    folder = repo / "layers_shared/agents/breast-cancer-linear"
    manifest = AgentManifest.model_validate_json((folder / "manifest.json").read_text())
    inst = sandbox.instantiate((folder / "agent.wasm").read_bytes(), manifest.limits)
    with pytest.raises(GuestError, match="rejected the input"):
        inst.predict({"genome": [1.0] * 3, "observation": [0.0] * 30})
    out = inst.predict({"genome": [0.5] * 30 + [-1.0], "observation": [1.0] * 30})
    assert json.loads(json.dumps(out))["output"] == pytest.approx(14.0)


def test_compiled_modules_are_cached_on_disk(tmp_path, repo):
    wasm = (repo / "layers_shared/agents/cartpole-linear/agent.wasm").read_bytes()
    Sandbox(cache_dir=tmp_path).compile(wasm)
    cached = list(tmp_path.glob("*.cwasm"))
    assert len(cached) == 1
    fresh = Sandbox(cache_dir=tmp_path)
    assert fresh.inspect(wasm).exports  # loads from the serialized file
