"""Linear agents written by hand in WAT, right or with one bug, for the twin check's tests.

`linear_agent(obs_len, step=..., twist=...)` builds the agent ABI v1 around a linear policy:
`v = g[bias]; v += g[i] * o[i]` in float32, then the output `v` ("linear") or `v > 0 ? 1 : 0`
("linear-step"), for every agent and observation of a `chimera_act` call, in both layouts.
With no twist it is what the bundled C agents compute. Each twist is a bug a port could have:

- "flip-sign": pushes right when v < 0 (the step's comparison inverted);
- "bias-first": reads the bias from gene 0 and the weights from genes 1.. (genome order);
- "shared-only": always reads observation j as if shared (wrong per-agent indexing);
- "offset": adds 1e-3 to v (a small numerical drift).
"""

from __future__ import annotations

import wasmtime

TWISTS = ("flip-sign", "bias-first", "shared-only", "offset")


def linear_agent(obs_len: int, *, step: bool, twist: str | None = None) -> bytes:
    if twist is not None and twist not in TWISTS:
        raise ValueError(f"twist: unknown {twist!r} (known: {', '.join(TWISTS)})")
    genome_len = obs_len + 1
    bias, w0 = (0, 1) if twist == "bias-first" else (obs_len, 0)
    cmp = "f32.lt" if twist == "flip-sign" else "f32.gt"
    v = "(local.get $v)"
    if twist == "offset":
        v = "(f32.add (local.get $v) (f32.const 0.001))"
    result = f"(select (f32.const 1) (f32.const 0) ({cmp} {v} (f32.const 0)))" if step else v
    row = (
        "(local.get $j)"
        if twist == "shared-only"
        else "(if (result i32) (local.get $shared) (then (local.get $j)) (else (i32.add "
        "(i32.mul (local.get $a) (local.get $nobs)) (local.get $j))))"
    )
    wat = f"""
(module
  (memory (export "memory") 2)
  (data (i32.const 16) "{{\\"output\\":0}}")
  (global $top (mut i32) (i32.const 1024))
  (func (export "chimera_abi_version") (result i32) i32.const 1)
  (func (export "chimera_genome_len") (result i32) i32.const {genome_len})
  (func (export "chimera_obs_len") (result i32) i32.const {obs_len})
  (func (export "chimera_reset") i32.const 1024 global.set $top)
  (func (export "chimera_alloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $top) (i32.const 15)) (i32.const -16)))
    (global.set $top (i32.add (local.get $p) (local.get $n)))
    (block $ok
      (br_if $ok (i32.le_u (global.get $top) (i32.mul (memory.size) (i32.const 65536))))
      (br_if $ok (i32.ne
        (memory.grow (i32.add (i32.shr_u (i32.sub (global.get $top)
          (i32.mul (memory.size) (i32.const 65536))) (i32.const 16)) (i32.const 1)))
        (i32.const -1)))
      (return (i32.const 0)))
    local.get $p)
  (func (export "chimera_predict") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 12)))
  (func (export "chimera_act")
    (param $g i32) (param $n i32) (param $obs i32) (param $nobs i32) (param $shared i32)
    (param $out i32) (result i32)
    (local $a i32) (local $j i32) (local $i i32) (local $gp i32) (local $op i32) (local $v f32)
    (block $da (loop $la
      (br_if $da (i32.ge_s (local.get $a) (local.get $n)))
      (local.set $gp (i32.add (local.get $g) (i32.mul (local.get $a) (i32.const {4 * genome_len}))))
      (local.set $j (i32.const 0))
      (block $dj (loop $lj
        (br_if $dj (i32.ge_s (local.get $j) (local.get $nobs)))
        (local.set $op (i32.add (local.get $obs) (i32.mul (i32.const {4 * obs_len}) {row})))
        (local.set $v (f32.load (i32.add (local.get $gp) (i32.const {4 * bias}))))
        (local.set $i (i32.const 0))
        (block $di (loop $li
          (br_if $di (i32.ge_s (local.get $i) (i32.const {obs_len})))
          (local.set $v (f32.add (local.get $v) (f32.mul
            (f32.load (i32.add (local.get $gp)
              (i32.shl (i32.add (local.get $i) (i32.const {w0})) (i32.const 2))))
            (f32.load (i32.add (local.get $op) (i32.shl (local.get $i) (i32.const 2)))))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $li)))
        (f32.store (i32.add (local.get $out) (i32.shl (i32.add (i32.mul (local.get $a)
          (local.get $nobs)) (local.get $j)) (i32.const 2))) {result})
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $lj)))
      (local.set $a (i32.add (local.get $a) (i32.const 1)))
      (br $la)))
    i32.const 0)
)
"""
    return wasmtime.wat2wasm(wat)
