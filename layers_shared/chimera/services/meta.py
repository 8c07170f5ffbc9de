"""Layer 6 (minimal for now): choose the search for an agent, and decide when to stop."""

from __future__ import annotations

import math

from chimera.domain.models import Decision, RunStatus, Strategy
from chimera.domain.optimizers import Optimizer
from chimera.domain.suites import get_suite
from chimera.domain.termination import standard, termination_from_json
from chimera.services.contracts import AdaptRequest, AdaptResult, ChooseRequest, StrategyChoice
from chimera.services.deps import Deps
from chimera.services.evolution import owned_run


def choose(req: ChooseRequest, deps: Deps) -> StrategyChoice:
    manifest = deps.store.get_agent(req.agent_id).manifest
    suite = get_suite(manifest.suite)
    dim = manifest.genome_len
    if all(g.type == "float" for g in manifest.genome) and dim <= 100:
        strategy = Strategy.CMA_ES
        # Hansen's default lambda, widened: noisy episodic fitness wants more samples.
        pop = max(24, 2 * int(4 + 3 * math.log(dim)))
        reason = f"{dim} continuous genes: CMA-ES adapts step size and correlations"
    else:
        strategy, pop = Strategy.GA, 64
        reason = f"{dim} genes: a GA scales where CMA-ES's covariance would not"
    choice = StrategyChoice(
        strategy=strategy,
        population_size=pop,
        max_generations=suite.max_generations,
        target_fitness=suite.target_fitness,
        reason=reason,
    )
    deps.store.add_decision(
        Decision(
            execution_id=req.execution_id,
            layer="meta-evolution",
            summary=f"{req.agent_id}: {strategy.value}, population {pop} ({reason})",
            detail=choice.model_dump(mode="json"),
            key=f"meta-evolution:{req.agent_id}:choose",
        )
    )
    return choice


def adapt(req: AdaptRequest, deps: Deps) -> AdaptResult:
    """Termination: the run's own criteria (target, budgets, stagnation, step-size floor).

    Decided once per run: a retry, or a call on a finished run, gets the stored answer and
    writes nothing.
    """
    run = owned_run(deps, req.run_id, req.execution_id)
    if run.status != RunStatus.RUNNING:
        return AdaptResult(
            proceed=False, reason=run.stop_reason or f"run is {run.status.value}: {run.decision}"
        )
    if run.stop_reason is None:
        history = deps.store.fitness_history(req.run_id)
        rule = (
            termination_from_json(run.termination)
            if run.termination is not None
            else standard(run.max_generations, run.target_fitness)
        )
        reason = rule.reason(history, Optimizer.restore(run.optimizer_state))
        if reason is None:
            return AdaptResult(proceed=True, reason=f"generation {run.generation}: continue")
        run = deps.store.save_run(
            run.model_copy(update={"stop_reason": reason, "decision": f"stopped: {reason}"})
        )
    deps.store.add_decision(
        Decision(
            execution_id=req.execution_id,
            layer="meta-evolution",
            summary=f"{run.agent_id}: stop after {run.generation} generations ({run.stop_reason})",
            detail={"run_id": run.run_id, "termination": run.termination},
            key=f"meta-evolution:{run.run_id}:stop",
        )
    )
    return AdaptResult(proceed=False, reason=run.stop_reason or "")
