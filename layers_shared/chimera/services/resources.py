"""Layer 8: estimate the run's remaining work on each placement, enforce the budget."""

from __future__ import annotations

from chimera.adapters.kv import month
from chimera.domain.models import CostEntry, Decision
from chimera.domain.prices import estimate
from chimera.domain.suites import get_suite
from chimera.services.contracts import PlaceRequest, PlaceResult
from chimera.services.deps import Deps
from chimera.services.evolution import owned_run


def place(req: PlaceRequest, deps: Deps) -> PlaceResult:
    run = owned_run(deps, req.run_id, req.execution_id)
    suite = get_suite(run.suite)
    remaining = max(0, run.max_generations - run.generation) * run.population_size
    options = estimate(
        remaining,
        suite.seconds_per_evaluation,
        deps.deadline_s,
        lambda_memory_mb=deps.settings.evaluator_memory_mb,
        lambda_architecture=deps.settings.evaluator_architecture,
        evaluations_per_request=deps.shard_size,
    )
    best = options[0]
    placement = "lambda" if best.placement == "lambda" else "batch"
    detail = ", ".join(f"{o.placement} ${o.usd:.5f}/{o.seconds:.0f}s" for o in options)
    # One entry per (run, generation, step): a retried place charges nothing twice, and the
    # budget is a counter of the month updated in the same transaction, so two concurrent
    # runs cannot both spend its last dollar.
    entry = CostEntry(
        entry_id=f"{run.run_id}:{run.generation}:place",
        run_id=run.run_id,
        placement=best.placement,
        estimated_usd=best.usd,
    )
    period = month(entry.at)
    deps.store.charge(entry, f"budget#{period}", deps.budget_usd)
    # After the charge, keyed like it: a retry that finds the charge made still records this.
    deps.store.add_decision(
        Decision(
            execution_id=req.execution_id,
            layer="resources",
            summary=f"{run.agent_id}: {best.placement} for {remaining} evaluations, "
            f"est. ${best.usd:.5f} ({detail})",
            detail={"run_id": run.run_id, "options": [o.model_dump() for o in options]},
            key=f"resources:{entry.entry_id}",
        )
    )
    return PlaceResult(placement=placement, detail=detail, estimated_usd=best.usd)
