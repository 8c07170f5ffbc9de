"""Layer 2: turn the objective and the situation into work items (one per agent for now)."""

from __future__ import annotations

from chimera.domain.models import Decision
from chimera.services.contracts import PlanItem, PlanRequest, PlanResult
from chimera.services.deps import Deps


def plan(req: PlanRequest, deps: Deps) -> PlanResult:
    items = []
    for agent_id in req.agents:
        agent = deps.store.get_agent(agent_id)
        alias = deps.store.get_alias(agent_id)
        reason = "no live genome yet" if alias is None else f"improve live v{alias.primary_version}"
        items.append(
            PlanItem(
                execution_id=req.execution_id,
                agent_id=agent_id,
                suite=agent.manifest.suite,
                action="evolve",
                reason=reason,
                gate=req.gate,
            )
        )
    deps.store.add_decision(
        Decision(
            execution_id=req.execution_id,
            layer="planning",
            summary=f"{len(items)} evolve item(s) for objective: {req.objective}"
            + ("" if req.gate == "improvement" else f" (champions: {req.gate})"),
            detail={"items": [i.model_dump() for i in items]},
            key="planning:plan",
        )
    )
    return PlanResult(items=items)
