"""Modules written to misbehave, one per way a guest can attack or break the host.

Each is the agent ABI (CartPole-shaped: 5 genes, 4 observation values) with one twist, in WAT
compiled by wasmtime.wat2wasm. Two families:

- REFUSED: layer 3 must refuse the bundle with a reason naming the problem (`reason`), and the
  sandbox must refuse to instantiate it with GuestError `kind` (defence in depth).
- RUNTIME: sleeper agents. They pass layer 3's checks (one smoke call of chimera_act on one
  agent, one chimera_predict on the default genome and a zero observation) and misbehave once
  they serve: chimera_act from its second call on, chimera_predict when the input holds the
  digit 7. Layer 4 must end each in a failed evaluation or KPI with `kind` and `reason`, and the
  host goes on serving.

`sandbox_policy` names a policy the case needs (a small evaluation budget, so the test stays
fast); otherwise the default policy applies. Used by tests/unit/test_sandbox.py and
tests/functional/test_hostile_modules.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import wasmtime

BASE = """
(module
  {imports}
  {memory}
  {extra}
  (global $top (mut i32) (i32.const 1024))
  (global $calls (mut i32) (i32.const 0))
  (data (i32.const 512) "{{\\"output\\":1}}")
  (func (export "chimera_abi_version") (result i32) {abi_version})
  (func (export "chimera_genome_len") (result i32) i32.const 5)
  {obs_len}
  (func (export "chimera_reset") i32.const 1024 global.set $top)
  (func $alloc (export "chimera_alloc") (param $n i32) (result i32) (local $p i32)
    global.get $top local.set $p
    global.get $top local.get $n i32.add global.set $top
    (block $ok
      (br_if $ok (i32.le_u (global.get $top) (i32.mul (memory.size) (i32.const 65536))))
      (br_if $ok (i32.ne
        (memory.grow (i32.add (i32.shr_u (i32.sub (global.get $top)
          (i32.mul (memory.size) (i32.const 65536))) (i32.const 16)) (i32.const 1)))
        (i32.const -1)))
      (return (i32.const 0)))
    local.get $p)
  (func $rec (param i32) (result i32) local.get 0 call $rec i32.const 1 i32.add)
  (func $has7 (param $p i32) (param $len i32) (result i32) (local $i i32)
    (block $no (loop $l
      (br_if $no (i32.ge_u (local.get $i) (local.get $len)))
      (if (i32.eq (i32.load8_u (i32.add (local.get $p) (local.get $i))) (i32.const 55))
        (then (return (i32.const 1))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    i32.const 0)
  (func (export "chimera_act")
    (param $g i32) (param $n i32) (param $obs i32) (param $nobs i32) (param $shared i32)
    (param $out i32) (result i32) (local $i i32) (local $k i32)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (if (i32.gt_u (global.get $calls) (i32.const 1)) (then {act_later}))
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (i32.mul (local.get $n) (local.get $nobs))))
      (f32.store (i32.add (local.get $out) (i32.shl (local.get $i) (i32.const 2))) {action})
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    i32.const 0)
  (func (export "chimera_predict") {predict_sig} (local $k i32)
    (if (call $has7 (local.get 0) (local.get 1)) (then {predict_hostile}))
    {predict_return})
)
"""

# Push right while the pole falls right (theta_dot > 0): CartPole episodes last ~100+ steps,
# so an evaluation makes enough calls for the per-evaluation budgets to matter.
BALANCE = (
    "(select (f32.const 1) (f32.const 0) (f32.gt (f32.load (i32.add (local.get $obs) (i32.shl"
    " (i32.add (i32.shl (local.get $i) (i32.const 2)) (i32.const 3)) (i32.const 2))))"
    " (f32.const 0)))"
)
GOOD_PREDICT_RETURN = "(i64.or (i64.shl (i64.const 512) (i64.const 32)) (i64.const 12))"
ANSWER_AT = 65536  # hostile answers live in the module's second page


@dataclass(frozen=True)
class Hostile:
    name: str
    what: str  # the attack, in words
    kind: str  # GuestError.kind the sandbox or layer 4 must report
    reason: str  # a substring of the reason layer 3 or layer 4 must give
    parts: dict[str, str] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)  # manifest limits
    sandbox_policy: dict[str, int] = field(default_factory=dict)
    stage: str = "refused"  # refused | act | predict
    padding: int = 0  # bytes of custom section appended (an oversized module)
    seen_by_inspect: bool = True  # False: only instantiating it (layer 3 does) finds it

    def wat(self) -> str:
        parts = {
            "imports": "",
            "memory": '(memory (export "memory") 2)',
            "extra": "",
            "abi_version": "i32.const 1",
            "obs_len": '(func (export "chimera_obs_len") (result i32) i32.const 4)',
            "act_later": "nop",
            "action": BALANCE,
            "predict_sig": "(param i32 i32) (result i64)",
            "predict_hostile": "nop",
            "predict_return": GOOD_PREDICT_RETURN,
        }
        parts.update(self.parts)
        return BASE.format(**parts)

    def wasm(self) -> bytes:
        wasm = bytes(wasmtime.wat2wasm(self.wat()))
        if self.padding:  # a custom section: valid, ignored by the runtime, just large
            name = b"padding"
            body = _leb(len(name)) + name + b"\0" * self.padding
            wasm += b"\0" + _leb(len(body)) + body
        return wasm

    def manifest(self, agent_id: str | None = None) -> dict[str, Any]:
        limits = {"fuel_per_call": 5_000_000, "memory_pages": 32, "wall_ms": 1_000}
        limits.update(self.limits)
        return {
            "agent_id": agent_id or self.name,
            "description": self.what,
            "suite": "cartpole-v1",
            "obs_len": 4,
            "genome": [
                {"name": n, "low": -10.0, "high": 10.0, "default": 0.0}
                for n in ("w_x", "w_x_dot", "w_theta", "w_theta_dot", "bias")
            ],
            "limits": limits,
        }


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _answer(text: str) -> dict[str, str]:
    """chimera_predict answers `text` (placed in the second page) when provoked."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    ret = f"(i64.or (i64.shl (i64.const {ANSWER_AT}) (i64.const 32)) (i64.const {len(text)}))"
    return {
        "extra": f'(data (i32.const {ANSWER_AT}) "{escaped}")',
        "predict_hostile": f"(return {ret})",
    }


# An action that balances on the first call (layer 3's smoke call) and is `{}` afterwards.
_LATER = "(if (result f32) (i32.gt_u (global.get $calls) (i32.const 1)) (then {}) (else {}))"

GOOD = Hostile("good", "a well-behaved module (the control)", "", "", stage="act")

REFUSED = [
    Hostile(
        "many-memories",
        "100 linear memories, each allowed the page limit: 100x the memory of one instance",
        "memory-limit",
        "declares 100 memories, policy allows 1",
        {"extra": "(memory 1)\n" * 99},
    ),
    Hostile(
        "huge-initial-memory",
        "a memory that starts above the manifest's pages",
        "memory-limit",
        "memories start at 5,000 pages in total, above limits.memory_pages 32",
        {"memory": '(memory (export "memory") 5000)'},
    ),
    Hostile(
        "huge-table",
        "a table of a million elements",
        "table-limit",
        "table 0 starts at 1,000,000 elements, policy cap 10,000",
        {"extra": "(table 1000000 funcref)"},
    ),
    Hostile(
        "many-tables",
        "three tables where one is allowed",
        "table-limit",
        "declares 3 tables, policy allows 1",
        {"extra": "(table 1 funcref) (table 1 funcref) (table 1 funcref)"},
    ),
    Hostile(
        "wrong-signature",
        "chimera_predict returns i32 instead of the packed i64",
        "abi-mismatch",
        "export 'chimera_predict' is func(i32, i32) -> (i32), the ABI needs func(i32, i32) -> (i64)",
        {"predict_sig": "(param i32 i32) (result i32)", "predict_return": "i32.const 0"},
    ),
    Hostile(
        "global-as-function",
        "a global exported under chimera_obs_len",
        "abi-mismatch",
        "export 'chimera_obs_len' is global, the ABI needs func() -> (i32)",
        {"obs_len": '(global (export "chimera_obs_len") i32 (i32.const 4))'},
    ),
    Hostile(
        "table-as-memory",
        "a table exported as memory, the real memory hidden",
        "abi-mismatch",
        "export 'memory' is table, the ABI needs memory",
        {"memory": "(memory 2)", "extra": '(table (export "memory") 1 funcref)'},
    ),
    Hostile(
        "forbidden-import",
        "imports a host function",
        "forbidden-import",
        "import 'env.system' is not allowed",
        {"imports": '(import "env" "system" (func (param i32)))'},
    ),
    Hostile(
        "oversized",
        "a 9 MiB module (a padding custom section)",
        "policy-limit",
        "policy cap 8,388,608",
        padding=9 * 1024 * 1024,
    ),
    Hostile(
        "start-spins",
        "a start function that never returns",
        "out-of-fuel",
        "fuel budget of 5,000,000 per call exhausted",
        {"extra": "(func $spin (loop $l (br $l))) (start $spin)"},
        seen_by_inspect=False,
    ),
    Hostile(
        "wrong-abi-version",
        "speaks ABI version 2",
        "abi-mismatch",
        "chimera_abi_version is 2, the host speaks 1",
        {"abi_version": "i32.const 2"},
        seen_by_inspect=False,
    ),
    Hostile(
        "greedy-fuel",
        "a manifest asking for 10^18 fuel per call",
        "policy-limit",
        "limits.fuel_per_call 1,000,000,000,000,000,000 above policy cap 10,000,000,000",
        limits={"fuel_per_call": 10**18},
    ),
    Hostile(
        "greedy-wall",
        "a manifest asking for a day of wall clock per call",
        "policy-limit",
        "limits.wall_ms 86,400,000 above policy cap 10,000",
        limits={"wall_ms": 86_400_000},
    ),
]

RUNTIME = [
    Hostile(
        "nan-action",
        "answers NaN for every action once it serves",
        "non-finite",
        "non-finite action (NaN or infinity)",
        {"action": _LATER.format("(f32.const nan)", BALANCE)},
        stage="act",
    ),
    Hostile(
        "infinite-action",
        "answers +infinity for every action once it serves",
        "non-finite",
        "non-finite action (NaN or infinity)",
        {"action": _LATER.format("(f32.const inf)", BALANCE)},
        stage="act",
    ),
    Hostile(
        "spins",
        "loops forever once it serves",
        "out-of-fuel",
        "fuel budget of 5,000,000 per call exhausted",
        {"act_later": "(loop $l (br $l))"},
        stage="act",
    ),
    Hostile(
        "recurses",
        "recurses without end once it serves",
        "stack-overflow",
        "guest call stack exhausted",
        {"act_later": "(drop (call $rec (i32.const 0)))"},
        stage="act",
    ),
    Hostile(
        "grows-then-traps",
        "grows its memory until refused, then traps",
        "memory-limit",
        "with its memory at the 32-page limit: growing it was refused",
        {
            "act_later": "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))"
            " unreachable"
        },
        stage="act",
    ),
    Hostile(
        "fuel-burner",
        "spends most of its per-call fuel on every call: each call is within its limits",
        "evaluation-budget",
        "evaluation fuel budget of 10,000,000 fuel spent",
        {
            "act_later": "(local.set $k (i32.const 750000)) (loop $l (local.set $k"
            " (i32.sub (local.get $k) (i32.const 1))) (br_if $l (local.get $k)))"
        },
        sandbox_policy={
            "evaluation_fuel": 10_000_000,
            "fuel_per_row": 0,
            "max_fuel_per_call": 5_000_000,
        },
        stage="act",
    ),
    Hostile(
        "slow-calls",
        "spends a few tens of ms on every call: far under its wall limit, with fuel to spare",
        "evaluation-budget",
        "evaluation wall clock budget of 1,000 ms spent",
        {
            "act_later": "(local.set $k (i32.const 10000000)) (loop $l (local.set $k"
            " (i32.sub (local.get $k) (i32.const 1))) (br_if $l (local.get $k)))"
        },
        sandbox_policy={"evaluation_wall_ms": 1_000, "wall_ms_per_row": 0, "max_wall_ms": 1_000},
        limits={"wall_ms": 1_000, "fuel_per_call": 2_000_000_000},
        stage="act",
    ),
    Hostile(
        "deep-json",
        "answers 20,000 nested lists",
        "bad-output",
        "nested deeper than 32",
        _answer('{"output":' + "[" * 20_000 + "]" * 20_000 + "}"),
        stage="predict",
    ),
    Hostile(
        "nested-json",
        "answers 500 nested lists (under Python's recursion limit)",
        "bad-output",
        "nested deeper than 32",
        _answer('{"output":' + "[" * 500 + "]" * 500 + "}"),
        stage="predict",
    ),
    Hostile(
        "nan-json",
        'answers {"output": NaN}',
        "bad-output",
        "NaN is not a JSON number",
        _answer('{"output":NaN}'),
        stage="predict",
    ),
    Hostile(
        "overflow-json",
        'answers {"output": 1e999} (infinity once parsed)',
        "bad-output",
        "number 1e999 is out of range",
        _answer('{"output":1e999}'),
        stage="predict",
    ),
    Hostile(
        "huge-json",
        "claims a 100 MB answer",
        "bad-output",
        "answered 100,000,000 bytes, the bound is 65,536",
        {
            "predict_hostile": "(return (i64.or (i64.shl (i64.const 1024) (i64.const 32))"
            " (i64.const 100000000)))"
        },
        stage="predict",
    ),
    Hostile(
        "wild-pointer",
        "answers a buffer outside its memory",
        "bad-pointer",
        "outside memory",
        {
            "predict_hostile": "(return (i64.or (i64.shl (i64.const 2000000000) (i64.const 32))"
            " (i64.const 16)))"
        },
        stage="predict",
    ),
    Hostile(
        "text-output",
        "answers a string where a number belongs",
        "bad-output",
        "no finite numeric output",
        _answer('{"output":"seven"}'),
        stage="predict",
    ),
]

ALL = REFUSED + RUNTIME
