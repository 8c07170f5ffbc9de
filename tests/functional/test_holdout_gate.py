"""The hold-out gate, as evolution-run's Gate task calls it: a champion goes to a canary only
on evidence. The candidate and the incumbent are scored on the same hold-out items, and the
gate tests their paired differences (one-sided): better for a run's default gate, no worse than
the suite's margin for a run started with gate "non_inferiority". A tie is never a change."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from chimera.domain.errors import ValidationFailedError
from chimera.domain.statistics import Moments

from chimera_local.workflows import handler_for

AGENT = "cartpole-linear"


def _start(execution_id: str, gate: str | None) -> str:
    handler_for("discovery")({"action": "discover", "execution_id": execution_id})
    handler_for("validation")(
        {"action": "validate", "execution_id": execution_id, "agent_id": AGENT}
    )
    choice = handler_for("meta_evolution")(
        {"action": "choose", "execution_id": execution_id, "agent_id": AGENT}
    )
    start = {"action": "start", "execution_id": execution_id, "agent_id": AGENT, "choice": choice}
    if gate is not None:
        start["gate"] = gate
    return str(handler_for("evolution")(start)["run_id"])


def _record(version: int, score: float) -> dict[str, Any]:
    return {
        "agent_id": AGENT,
        "genome_version": version,
        "job_id": f"r:holdout:v{version}",
        "suite": "cartpole-v1",
        "success": True,
        "score": score,
        "latency_ms": 1.0,
        "fuel": 1,
    }


def _gate(execution_id: str, run_id: str, diffs: np.ndarray | None) -> dict[str, Any]:
    cand = 480.0 + (0.0 if diffs is None else float(diffs.mean()))
    m = None if diffs is None else Moments.of(diffs)
    event = {
        "action": "gate",
        "execution_id": execution_id,
        "run_id": run_id,
        "candidate": _record(1, cand),
        "incumbent": _record(1, 480.0),
        "difference": None if m is None else m.to_json(),
    }
    out = handler_for("validation")(event)
    assert handler_for("validation")(event) == out  # a retried gate answers the same
    return out


RNG = np.random.default_rng(7)
NOISE = RNG.normal(0.0, 10.0, size=100)


@pytest.mark.parametrize(
    ("gate", "diffs", "approved", "why"),
    [
        (None, np.zeros(100), False, "a tie is no reason to change"),
        (None, NOISE - NOISE.mean(), False, "not shown"),
        (None, NOISE - NOISE.mean() + 8.0, True, "for better"),
        ("non_inferiority", NOISE - NOISE.mean() - 1.0, True, "no worse than -5"),
        ("non_inferiority", NOISE - NOISE.mean() - 9.0, False, "not shown"),
        (None, None, False, "no paired hold-out items"),
    ],
)
def test_the_gate_asks_for_evidence(home, only_cartpole, gate, diffs, approved, why) -> None:
    run_id = _start("gate", gate)
    out = _gate("gate", run_id, diffs)
    assert out["approved"] is approved, out
    assert why in out["reason"], out
    if diffs is not None and diffs.std() > 0:
        assert 0.0 < out["p_value"] < 1.0


def test_an_unknown_gate_mode_is_refused_naming_the_field(home, only_cartpole) -> None:
    from chimera_local.asl import ExecutionFailedError
    from chimera_local.workflows import local_executor, state_machine_arn

    with pytest.raises(ExecutionFailedError) as err:
        local_executor().start(
            state_machine_arn("optimization-cycle"), {"objective": "x", "gate": "maybe"}, "bad"
        )
    assert err.value.error == "ValidationFailedError" and "gate" in str(err.value)
    with pytest.raises(ValidationFailedError) as refused:
        _start("e", "maybe")
    assert refused.value.field == "gate"
