"""Layer 4: hostile modules become clear failures and the host keeps serving."""

from __future__ import annotations

import hashlib
import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import wasmtime
from chimera.adapters.sandbox import Sandbox
from chimera.domain.models import AgentManifest, ResourceLimits
from chimera.domain.sandbox import GuestError, SandboxPolicy, module_problems, parse_guest_json
from chimera.domain.wasm_binary import Limits, WasmFormatError, read_layout

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
    limits = ResourceLimits(fuel_per_call=10**10, memory_pages=32, wall_ms=50)  # ~4 s of fuel
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


# -- hostile modules (tests/hostile/hostile.py): the sandbox's own defences -------------------
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hostile"))
hostile = importlib.import_module("hostile")


def _policy(case) -> SandboxPolicy:
    return SandboxPolicy(**case.sandbox_policy)


@pytest.mark.parametrize("case", hostile.REFUSED, ids=lambda c: c.name)
def test_refused_modules_are_named_at_inspection_and_refused_at_instantiation(case):
    """Layer 3's check names the problem; instantiate refuses it anyway (defence in depth)."""
    sandbox = Sandbox(policy=_policy(case))
    manifest = AgentManifest.model_validate(case.manifest())
    wasm = case.wasm()
    try:
        problems = module_problems(sandbox.inspect(wasm), manifest, sandbox.policy)
    except GuestError as exc:  # too large to compile at all
        problems = [exc.reason]
    if case.seen_by_inspect:
        assert any(case.reason in p for p in problems), problems
    else:
        assert problems == []
    with pytest.raises(GuestError) as err:
        sandbox.instantiate(wasm, manifest.limits)
    assert err.value.kind == case.kind, err.value.reason
    if not case.seen_by_inspect:
        assert case.reason in err.value.reason
    # The host keeps serving: a good module still runs on the same sandbox.
    good = sandbox.instantiate(
        hostile.GOOD.wasm(),
        manifest.limits.model_copy(update={"fuel_per_call": 5_000_000, "wall_ms": 1_000}),
    )
    good.prepare(np.zeros((2, 5)), n_obs=1, shared=False)
    assert good.act(np.zeros((2, 4))).tolist() == [[0.0], [0.0]]


def test_the_good_control_has_no_problems():
    sandbox = Sandbox()
    manifest = AgentManifest.model_validate(hostile.GOOD.manifest())
    assert module_problems(sandbox.inspect(hostile.GOOD.wasm()), manifest, sandbox.policy) == []


@pytest.mark.parametrize(
    "case", [c for c in hostile.RUNTIME if c.stage == "act"], ids=lambda c: c.name
)
def test_sleeper_act_fails_once_it_serves(case):
    """The first call (layer 3's smoke call) is clean; later calls fail with the right kind."""
    sandbox = Sandbox(policy=_policy(case))
    manifest = AgentManifest.model_validate(case.manifest())
    inst = sandbox.instantiate(case.wasm(), manifest.limits)
    inst.prepare(np.zeros((3, 5)), n_obs=1, shared=False)
    assert np.isfinite(inst.act(np.zeros((3, 4)))).all()
    if case.kind == "non-finite":  # the sandbox hands outputs back; the suite judges them
        assert not np.isfinite(inst.act(np.zeros((3, 4)))).any()
        return
    with pytest.raises(GuestError) as err:
        for _ in range(1_000):
            inst.act(np.zeros((3, 4)))
    assert err.value.kind == case.kind, err.value.reason
    assert case.reason in err.value.reason


@pytest.mark.parametrize(
    "case", [c for c in hostile.RUNTIME if c.stage == "predict"], ids=lambda c: c.name
)
def test_hostile_predict_answers_are_guest_errors(case):
    sandbox = Sandbox()
    manifest = AgentManifest.model_validate(case.manifest())
    calm = sandbox.instantiate(case.wasm(), manifest.limits)
    assert calm.predict({"genome": [0.0] * 5, "observation": [0.0] * 4}) == {"output": 1}
    inst = sandbox.instantiate(case.wasm(), manifest.limits)
    try:
        answer = inst.predict({"genome": [0.0] * 5, "observation": [0.7] * 4})
    except GuestError as exc:
        assert exc.kind == case.kind, exc.reason
        assert case.reason in exc.reason
    else:  # a well-formed answer whose output is not a number: layer 4's call (execution.py)
        assert case.name == "text-output" and answer == {"output": "seven"}


def test_the_evaluation_budget_grows_with_the_rows_evaluated():
    """A base plus a share per candidate row: Batch evaluates whole populations at once."""
    (burner,) = [c for c in hostile.RUNTIME if c.name == "fuel-burner"]  # 4.5M fuel a call
    policy = SandboxPolicy(
        evaluation_fuel=5_000_000, fuel_per_row=5_000_000, max_fuel_per_call=5_000_000
    )
    limits = ResourceLimits(fuel_per_call=5_000_000, memory_pages=32, wall_ms=1_000)
    calls = {}
    for rows in (1, 10):
        inst = Sandbox(policy=policy).instantiate(burner.wasm(), limits)
        inst.prepare(np.zeros((rows, 5)), n_obs=1, shared=False)
        with pytest.raises(GuestError) as err:
            for _ in range(1_000):
                inst.act(np.zeros((rows, 4)))
        assert err.value.kind == "evaluation-budget"
        assert f"x {rows} rows" in err.value.reason
        calls[rows] = inst.calls
    # (5M + 5M) / 4.5M: 2 burning calls; (5M + 50M) / 4.5M: 12.
    assert calls[10] - calls[1] == 10, calls


def test_policy_caps_total_pages_across_memories():
    """With several memories allowed, the manifest's pages are for all of them together."""
    wat = hostile.GOOD.wat().replace(
        '(memory (export "memory") 2)', '(memory (export "memory") 2) (memory $b 1) (memory $c 1)'
    )
    sandbox = Sandbox(policy=SandboxPolicy(max_memories=3))
    limits = ResourceLimits(fuel_per_call=5_000_000, memory_pages=30, wall_ms=1_000)
    inst = sandbox.instantiate(wasmtime.wat2wasm(wat), limits)
    inst.prepare(np.zeros((1, 5)), n_obs=1, shared=False)
    with pytest.raises(GuestError) as err:
        inst.prepare(np.zeros((100_000, 5)), n_obs=1, shared=False)  # 2 MB > 10 pages each
    assert err.value.kind == "memory-limit"


def test_manifest_limits_above_the_policy_are_refused_by_instantiate():
    wasm = hostile.GOOD.wasm()
    with pytest.raises(GuestError) as err:
        Sandbox().instantiate(wasm, ResourceLimits(fuel_per_call=10**18, wall_ms=10**7))
    assert err.value.kind == "policy-limit"
    assert "limits.fuel_per_call" in err.value.reason and "limits.wall_ms" in err.value.reason


def test_wasi_needs_the_policy_too():
    with pytest.raises(GuestError, match="policy does not allow WASI"):
        Sandbox().instantiate(hostile.GOOD.wasm(), ResourceLimits(wasi=True))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_memories", 0),
        ("evaluation_fuel", -1),
        ("fuel_per_row", -1),
        ("max_wall_ms", 10**9),
        ("max_tables", 1.5),
    ],
)
def test_a_bad_policy_names_its_field(field, value):
    with pytest.raises(ValueError, match=f"policy.{field}"):
        SandboxPolicy(**{field: value})


# -- the binary reader and the answer parser --------------------------------------------------
def test_layout_counts_imported_and_unexported_memories_and_tables():
    wasm = wasmtime.wat2wasm(
        '(module (import "a" "m" (memory 3 7)) (import "a" "t" (table 2 funcref))'
        ' (memory 1) (memory 4 9) (table 5 externref) (memory (export "x") 0))'
    )
    layout = read_layout(bytes(wasm))
    assert layout.memories == (Limits(3, 7), Limits(1), Limits(4, 9), Limits(0))
    assert layout.tables == (Limits(2), Limits(5))


@pytest.mark.parametrize(
    ("wasm", "message"),
    [
        (b"\0asn\x01\0\0\0", "no \\\\0asm header"),
        (b"\0asm\x0d\0\x01\0", "not a core module"),
        (b"\0asm\x01\0\0\0\x05\x10\x01", "runs past the end"),
        (b"\0asm\x01\0\0\0\x05\x03\x01\x03\x01", "shared memorys are not supported"),
        (b"\0asm\x01\0\0\0\x05\x07\x01\x00\xff\xff\xff\xff\x7f", "longer than 32 bits"),
    ],
)
def test_layout_refuses_what_it_does_not_know(wasm, message):
    with pytest.raises(WasmFormatError, match=message):
        read_layout(wasm)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"output": NaN}', "NaN is not a JSON number"),
        (b'{"output": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"output": 1e999}', "out of range"),
        (b'{"output": ' + b"1" * 5000 + b"}", "invalid JSON"),
        (b"[" * 5000 + b"]" * 5000, "nested deeper than 32"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "nested deeper than 32"),
        (b" " * 70_000, "the bound is 65,536"),
        (b"\xff\xfe", "invalid JSON"),
        (b"[1, 2]", "must answer a JSON object"),
    ],
)
def test_guest_json_is_bounded_and_finite(raw, message):
    with pytest.raises(GuestError, match=message) as err:
        parse_guest_json(raw, SandboxPolicy(), "chimera_predict")
    assert err.value.kind == "bad-output"


def test_guest_json_within_bounds_reads_back():
    nested = b'{"output": 0.5, "detail": ' + b"[" * 31 + b"]" * 31 + b"}"
    assert parse_guest_json(nested, SandboxPolicy(), "x")["output"] == 0.5


# -- the compiled-module cache ----------------------------------------------------------------
CACHE_PROBE = """
import sys, pathlib
from chimera.adapters.sandbox import Sandbox
from chimera.domain.models import ResourceLimits
import numpy as np
wasm = pathlib.Path(sys.argv[2]).read_bytes()
inst = Sandbox(cache_dir=pathlib.Path(sys.argv[1])).instantiate(wasm, ResourceLimits())
inst.prepare(np.ones((2, 5), dtype=np.float32), n_obs=1, shared=False)
print(inst.act(np.ones((2, 4), dtype=np.float32)).ravel().tolist())
"""


def _probe(cache: Path, wasm: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CACHE_PROBE, str(cache), str(wasm)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _flip_code_bytes(data: bytes) -> bytes:
    """Overwrite a stretch in the middle of the compiled code with 0x0F 0x0B (ud2: SIGILL)."""
    middle = len(data) // 2
    return data[:middle] + b"\x0f\x0b" * 64 + data[middle + 128 :]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(_flip_code_bytes, id="code overwritten"),
        pytest.param(lambda d: d[: len(d) // 3], id="truncated"),
        pytest.param(lambda d: b"", id="empty"),
        pytest.param(lambda d: d[32:], id="mac stripped"),
    ],
)
def test_a_damaged_cache_file_is_rebuilt_never_run(tmp_path, repo, damage):
    """Each process runs in a subprocess: loading damaged code could kill it with SIGILL."""
    cache = tmp_path / "modules"
    wasm = repo / "layers_shared/agents/cartpole-linear/agent.wasm"
    first = _probe(cache, wasm)
    assert first.returncode == 0, first.stderr
    (cached,) = cache.glob("*.cwasm")
    good = cached.read_bytes()
    cached.write_bytes(damage(good))
    second = _probe(cache, wasm)
    assert second.returncode == 0, (second.returncode, second.stderr[-2000:])
    assert second.stdout == first.stdout
    (rebuilt,) = cache.glob("*.cwasm")
    assert rebuilt.read_bytes()[32:] == good[32:]  # recompiled and written back, verified


def test_a_cache_file_from_another_key_is_not_trusted(tmp_path, repo):
    """A compiled file copied from another machine (another key) is rebuilt, not loaded."""
    wasm = repo / "layers_shared/agents/cartpole-linear/agent.wasm"
    a, b = tmp_path / "a", tmp_path / "b"
    assert _probe(a, wasm).returncode == 0 and _probe(b, wasm).returncode == 0
    (from_a,) = a.glob("*.cwasm")
    (into_b,) = b.glob("*.cwasm")
    assert (a / "cache.key").read_bytes() != (b / "cache.key").read_bytes()
    into_b.write_bytes(from_a.read_bytes())
    sandbox = Sandbox(cache_dir=b)
    assert sandbox._load_cached(hashlib.sha256(wasm.read_bytes()).hexdigest()) is None
    assert not into_b.exists()  # deleted, to be rebuilt


# -- resident memory ---------------------------------------------------------------------------
RSS_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np, wasmtime
import hostile
from chimera.adapters.sandbox import Sandbox
from chimera.domain.errors import GuestError
from chimera.domain.models import ResourceLimits
from chimera.domain.sandbox import SandboxPolicy

def hwm_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

# Eight memories, each grown until refused and every page written: the sum is what counts.
n = 8
extra = "".join(f"(memory $m{i} 1)" for i in range(1, n))
fill = "".join(
    f"(loop $g{i} (br_if $g{i} (i32.ne (memory.grow {i} (i32.const 1)) (i32.const -1))))"
    f"(memory.fill {i} (i32.const 0) (i32.const 7) (i32.mul (memory.size {i}) (i32.const 65536)))"
    for i in range(n)
)
case = hostile.Hostile("fill-every-memory", "", "", "", {"extra": extra, "act_later": fill})
limits = ResourceLimits(fuel_per_call=500_000_000, memory_pages=1024, wall_ms=5_000)  # 64 MiB
many = hostile.REFUSED[0]
sandboxes = [Sandbox(policy=SandboxPolicy()), Sandbox(policy=SandboxPolicy(max_memories=n))]
for sandbox in sandboxes:  # compiled before measuring: only what the guests do is counted
    sandbox.compile(case.wasm())
    sandbox.compile(many.wasm())
before = hwm_mib()
refused = []
for sandbox in sandboxes:
    try:
        inst = sandbox.instantiate(case.wasm(), limits)
        inst.prepare(np.zeros((1, 5)), n_obs=1, shared=False)
        for _ in range(3):
            inst.act(np.zeros((1, 4)))
    except GuestError as exc:
        refused.append(exc.kind)
    try:
        sandbox.instantiate(many.wasm(), limits)
    except GuestError as exc:
        refused.append(exc.kind)
print(json.dumps({"before": before, "after": hwm_mib(), "refused": refused, "grown": inst._memory_size()}))
"""


def test_resident_memory_stays_bounded_whatever_the_memories(repo):
    """Peak RSS grows by at most the manifest's pages (64 MiB) in total across memories;
    per-memory limits alone would have allowed 8 x 64 MiB."""
    probe = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, str(repo / "tests/hostile")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    out = json.loads(probe.stdout)
    # Default policy: the 8-memory module and the 100-memory one are refused outright;
    # 8 memories allowed: the 8-memory one runs (its memories share 64 MiB), 100 refused.
    assert out["refused"] == ["memory-limit", "memory-limit", "memory-limit"]
    assert out["grown"] == 8 * 1024 * 1024  # 128 pages: the 1,024 shared by eight memories
    assert 56 < out["after"] - out["before"] < 64 + 16, out  # they were all written


def test_compiled_modules_kept_in_memory_are_bounded():
    sandbox = Sandbox()
    for i in range(70):  # 70 distinct modules, as 70 uploads would be
        sandbox.compile(wasmtime.wat2wasm(f'(module (func (export "f{i}")))'))
    assert len(sandbox._modules) == 64
