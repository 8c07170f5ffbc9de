"""Set-up shared by layer 8's surface tests: a ledger written the way evolution-run writes it
(Place, the segment's generations ask/evaluate/tell, CommitCost), through the handlers."""

from __future__ import annotations

from typing import Any

from live_agents import start_live_cartpole

from chimera_local.workflows import handler_for

RUN = "cycle-1.cartpole-linear"
EX = {"execution_id": "cycle-1", "run_id": RUN}


def segment(last_generation: int, commit: bool = True) -> dict[str, Any]:
    """One segment as evolution-run drives it: Place, ask/evaluate/tell, CommitCost."""
    placed = handler_for("resources")({"action": "place", **EX, "last_generation": last_generation})
    while True:
        asked = handler_for("evolution")({"action": "ask", **EX})
        for shard in asked["shards"]:
            handler_for("execution")({"action": "evaluate", **shard})
        handler_for("evolution")({"action": "tell", **EX, "generation": asked["generation"]})
        if asked["generation"] >= last_generation:
            break
    if commit:
        handler_for("resources")({"action": "commit_cost", **EX, "entry_id": placed["entry_id"]})
    return placed


def two_segments() -> tuple[dict[str, Any], dict[str, Any]]:
    """cartpole-linear live, its run's generation 0 placed and committed, generation 1
    placed and evaluated but not committed yet (open: held, no actual)."""
    start_live_cartpole("cycle-1")
    return segment(0), segment(1, commit=False)
