"""Layer 6 (minimal for now): choose the search for an agent, and decide when to stop."""

from __future__ import annotations

import math

from chimera.domain.models import Decision, Strategy
from chimera.domain.suites import get_suite
from chimera.services.contracts import AdaptRequest, AdaptResult, ChooseRequest, StrategyChoice
from chimera.services.deps import Deps

STAGNATION_GENERATIONS = 30
TARGET_STREAK = 3  # generations in a row whose best reaches the target


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
        )
    )
    return choice


def adapt(req: AdaptRequest, deps: Deps) -> AdaptResult:
    """Termination: target reached, budget of generations spent, or stagnation."""
    run = deps.store.get_run(req.run_id)
    history = deps.store.fitness_history(req.run_id)
    proceed, reason = True, f"generation {run.generation}: continue"
    best_at = max(range(len(history)), key=lambda i: history[i].best) if history else 0
    if run.generation >= run.max_generations:
        proceed, reason = False, f"reached {run.max_generations} generations"
    elif (
        run.target_fitness is not None
        and len(history) >= TARGET_STREAK
        and all(p.best >= run.target_fitness for p in history[-TARGET_STREAK:])
    ):
        proceed, reason = (
            False,
            f"target {run.target_fitness:g} reached {TARGET_STREAK} times in a row",
        )
    elif len(history) - 1 - best_at >= STAGNATION_GENERATIONS:
        proceed, reason = False, f"no improvement in {STAGNATION_GENERATIONS} generations"
    if not proceed:
        run = run.model_copy(update={"decision": f"stopped: {reason}"})
        deps.store.save_run(run)
        deps.store.add_decision(
            Decision(
                execution_id=req.execution_id,
                layer="meta-evolution",
                summary=f"{run.agent_id}: stop after {run.generation} generations ({reason})",
                detail={"run_id": run.run_id},
            )
        )
    return AdaptResult(proceed=proceed, reason=reason)
