"""Layer 8: estimate the run's remaining work on each placement, enforce the budget."""

from __future__ import annotations

import uuid

from chimera.domain.errors import BudgetExceededError
from chimera.domain.models import CostEntry, Decision
from chimera.domain.prices import estimate
from chimera.domain.suites import get_suite
from chimera.services.contracts import PlaceRequest, PlaceResult
from chimera.services.deps import Deps


def place(req: PlaceRequest, deps: Deps) -> PlaceResult:
    run = deps.store.get_run(req.run_id)
    suite = get_suite(run.suite)
    remaining = max(0, run.max_generations - run.generation) * run.population_size
    options = estimate(remaining, suite.seconds_per_evaluation, deps.deadline_s)
    best = options[0]
    spent = sum(c.estimated_usd for c in deps.store.list_costs())
    if spent + best.usd > deps.budget_usd:
        raise BudgetExceededError(
            f"budget_usd: {best.placement} needs ${best.usd:.4f}, "
            f"${deps.budget_usd - spent:.4f} of ${deps.budget_usd:.2f} left"
        )
    placement = "lambda" if best.placement == "lambda" else "batch"
    deps.store.add_cost(
        CostEntry(
            entry_id=uuid.uuid4().hex,
            run_id=run.run_id,
            placement=best.placement,
            estimated_usd=best.usd,
        )
    )
    detail = ", ".join(f"{o.placement} ${o.usd:.5f}/{o.seconds:.0f}s" for o in options)
    deps.store.add_decision(
        Decision(
            execution_id=req.execution_id,
            layer="resources",
            summary=f"{run.agent_id}: {best.placement} for {remaining} evaluations, "
            f"est. ${best.usd:.5f} ({detail})",
            detail={"run_id": run.run_id, "options": [o.model_dump() for o in options]},
        )
    )
    return PlaceResult(placement=placement, detail=detail, estimated_usd=best.usd)
