"""Layer 7: evolution runs as ask/tell steps over stored state, then promotion via the alias.

Every step is idempotent and each writes its state in one transaction, so an execution killed
anywhere resumes from what was stored: a repeated ask returns the stored candidates, a
repeated tell of a told generation is refused, a resumed run continues from its generation.
"""

from __future__ import annotations

import contextlib
import math
import zlib
from typing import Literal

from chimera.domain.errors import ConflictError, NotFoundError, ValidationFailedError
from chimera.domain.events import EvolutionRunCompleted, GenomePromoted
from chimera.domain.models import (
    Alias,
    Decision,
    EvolutionRun,
    FitnessPoint,
    Generation,
    Genome,
    Individual,
    RunStatus,
    Strategy,
    utcnow,
)
from chimera.domain.optimizers import FAILED, OPTIMIZERS, Fitness, Optimizer
from chimera.domain.termination import AnyOf, Progress, StepSizeFloor, standard
from chimera.services.contracts import (
    AskRequest,
    AskResult,
    FailRequest,
    FinishRequest,
    PromoteRequest,
    ProposeRequest,
    ProposeResult,
    RunOutcome,
    Shard,
    StartRequest,
    StartResult,
    TellRequest,
    TellResult,
)
from chimera.services.deps import Deps


def _decide(deps: Deps, execution_id: str, summary: str, **detail: object) -> None:
    deps.store.add_decision(
        Decision(execution_id=execution_id, layer="evolution", summary=summary, detail=dict(detail))
    )


def _ensure_live(deps: Deps, agent_id: str) -> int:
    """The live genome version; an agent seen for the first time goes live on its defaults."""
    alias = deps.store.get_alias(agent_id)
    if alias is not None:
        return alias.primary_version
    manifest = deps.store.get_agent(agent_id).manifest
    genome = Genome(agent_id=agent_id, version=1, genes=manifest.default_genes())
    with contextlib.suppress(ConflictError):  # someone else bootstrapped it first
        deps.store.promote(genome, Alias(agent_id=agent_id, weights={1: 1.0}, revision=1), None)
    alias = deps.store.get_alias(agent_id)
    assert alias is not None
    return alias.primary_version


def _phase(run: EvolutionRun) -> Literal["evolve", "finalize"]:
    stopped = run.stop_reason is not None
    done = run.generation >= run.max_generations or stopped or run.champion_version is not None
    return "finalize" if done else "evolve"


def start(req: StartRequest, deps: Deps) -> StartResult:
    running = deps.store.list_runs(req.agent_id, status=RunStatus.RUNNING)
    if running:
        run = deps.store.save_run(running[0].model_copy(update={"execution_id": req.execution_id}))
        _decide(
            deps,
            req.execution_id,
            f"{req.agent_id}: resumed {run.run_id} at generation {run.generation}",
            run_id=run.run_id,
        )
        return StartResult(
            run_id=run.run_id, resumed=True, phase=_phase(run), generation=run.generation
        )
    manifest = deps.store.get_agent(req.agent_id).manifest
    incumbent = _ensure_live(deps, req.agent_id)
    x0 = deps.store.get_genome(req.agent_id, incumbent).genes
    run_id = f"{req.execution_id}.{req.agent_id}"[:128]
    # Reproducible from the run id (an execution name is unique), unless a seed is given.
    seed = req.seed if req.seed is not None else zlib.crc32(run_id.encode())
    choice = req.choice
    optimizer = OPTIMIZERS[choice.strategy.value].create(
        manifest.genome, choice.population_size, seed, x0=x0
    )
    stop = standard(choice.max_generations, choice.target_fitness)
    if choice.strategy == Strategy.CMA_ES:  # the search has converged: nothing left to learn
        width = min(g.high - g.low for g in manifest.genome)
        stop = AnyOf(of=(*stop.of, StepSizeFloor(floor=1e-6 * width)))
    run = EvolutionRun(
        run_id=f"{req.execution_id}.{req.agent_id}"[:128],
        agent_id=req.agent_id,
        execution_id=req.execution_id,
        suite=manifest.suite,
        strategy=choice.strategy,
        seed=seed,
        population_size=choice.population_size,
        max_generations=choice.max_generations,
        target_fitness=choice.target_fitness,
        optimizer_state=optimizer.state,
        termination=stop.to_json(),
        incumbent_version=incumbent,
    )
    deps.store.create_run(run)
    _decide(
        deps,
        req.execution_id,
        f"{req.agent_id}: started {run.run_id} ({choice.strategy.value}, seed {seed}, "
        f"from live v{incumbent})",
        run_id=run.run_id,
    )
    return StartResult(run_id=run.run_id, resumed=False, phase="evolve", generation=0)


def _shards(run: EvolutionRun, number: int, size: int, shard_size: int) -> list[Shard]:
    return [
        Shard(
            run_id=run.run_id, generation=number, shard=i, start=lo, stop=min(lo + shard_size, size)
        )
        for i, lo in enumerate(range(0, size, shard_size))
    ]


def _running(deps: Deps, run_id: str) -> EvolutionRun:
    run = deps.store.get_run(run_id)
    if run.status != RunStatus.RUNNING:
        raise ValidationFailedError("run_id", f"run {run_id} is {run.status.value}")
    return run


def ask(req: AskRequest, deps: Deps) -> AskResult:
    run = _running(deps, req.run_id)
    number = run.generation
    if run.asked_generation == number:  # asked before a crash: same candidates again
        size = len(deps.store.get_generation(run.run_id, number).individuals)
        return AskResult(
            run_id=run.run_id, generation=number, shards=_shards(run, number, size, deps.shard_size)
        )
    optimizer = Optimizer.restore(run.optimizer_state)
    trials = optimizer.ask_trials()
    generation = Generation(
        run_id=run.run_id,
        number=number,
        individuals=tuple(
            Individual(index=i, trial_id=t.id, genes=t.genes, parents=t.parents)
            for i, t in enumerate(trials)
        ),
    )
    run = run.model_copy(update={"asked_generation": number, "optimizer_state": optimizer.state})
    deps.store.save_asked(run, generation)
    return AskResult(
        run_id=run.run_id,
        generation=number,
        shards=_shards(run, number, len(trials), deps.shard_size),
    )


def tell(req: TellRequest, deps: Deps) -> TellResult:
    run = _running(deps, req.run_id)
    number = run.generation
    if run.asked_generation != number:
        raise ValidationFailedError("run_id", f"generation {number} of {run.run_id} was not asked")
    generation = deps.store.get_generation(run.run_id, number)
    fitness = deps.store.get_shard_fitness(run.run_id, number)
    missing = [i.index for i in generation.individuals if i.index not in fitness]
    if missing:
        raise ValidationFailedError(
            "shards", f"generation {number}: {len(missing)} candidate(s) not evaluated"
        )
    results = {i.index: Fitness.from_json(fitness[i.index]) for i in generation.individuals}
    optimizer = Optimizer.restore(run.optimizer_state)
    optimizer.tell_trials({i.trial_id: results[i.index] for i in generation.individuals})
    genes, best = optimizer.best
    told = generation.model_copy(
        update={
            "evaluated": True,
            "individuals": tuple(_told(i, results[i.index]) for i in generation.individuals),
        }
    )
    progress = Progress.of(list(results.values()))
    point = FitnessPoint(
        run_id=run.run_id,
        generation=number,
        best=progress.best,
        mean=progress.mean,
        std=progress.std,
        evaluations=progress.evaluations,
    )
    run = run.model_copy(
        update={
            "generation": number + 1,
            "asked_generation": None,
            "optimizer_state": optimizer.state,
            "best_fitness": best,
            "best_genes": genes,
        }
    )
    deps.store.save_told(run, told, point)
    return TellResult(run_id=run.run_id, generation=number, best_fitness=best)


def _finite(x: float) -> float:
    return x if math.isfinite(x) else FAILED


def _told(individual: Individual, fitness: Fitness) -> Individual:
    objectives = tuple(_finite(v) for v in fitness.objectives)
    return individual.model_copy(
        update={
            "fitness": None if fitness.failed else objectives[0],
            "objectives": objectives,
            "constraints": tuple(_finite(v) for v in fitness.constraints),
        }
    )


def propose(req: ProposeRequest, deps: Deps) -> ProposeResult:
    """Store the run's champion as a new (not yet live) genome version."""
    run = _running(deps, req.run_id)
    if run.champion_version is None:
        if run.best_genes is None:
            raise ValidationFailedError("run_id", f"run {run.run_id} has no evaluated candidate")
        manifest = deps.store.get_agent(run.agent_id).manifest
        manifest.check_genes(run.best_genes)
        while True:
            version = deps.store.latest_genome_version(run.agent_id) + 1
            try:
                deps.store.add_genome(
                    Genome(
                        agent_id=run.agent_id,
                        version=version,
                        genes=run.best_genes,
                        parent_version=run.incumbent_version,
                        source_run=run.run_id,
                        fitness=run.best_fitness,
                    )
                )
                break
            except ConflictError:
                continue  # a concurrent writer took that version number
        run = deps.store.save_run(run.model_copy(update={"champion_version": version}))
        _decide(
            deps,
            req.execution_id,
            f"{run.agent_id}: champion of {run.run_id} stored as v{version} "
            f"(training fitness {run.best_fitness:.4g})",
            run_id=run.run_id,
        )
    assert run.champion_version is not None
    return ProposeResult(
        run_id=run.run_id,
        candidate_version=run.champion_version,
        incumbent_version=run.incumbent_version,
    )


def _close(deps: Deps, run: EvolutionRun, status: RunStatus, decision: str) -> EvolutionRun:
    """Finish the run and announce it, in one transaction (the outbox)."""
    run = run.model_copy(update={"status": status, "decision": decision, "finished_at": utcnow()})
    completed = EvolutionRunCompleted(
        run_id=run.run_id,
        agent_id=run.agent_id,
        generations=run.generation,
        best_fitness=run.best_fitness,
        decision=decision,
    )
    return deps.store.save_run(run, events=[completed])


def promote(req: PromoteRequest, deps: Deps) -> RunOutcome:
    run = deps.store.get_run(req.run_id)
    if run.status != RunStatus.RUNNING:  # promoted before a crash: nothing more to do
        return RunOutcome(run_id=run.run_id, status=run.status.value, decision=run.decision or "")
    if run.champion_version is None:
        raise ValidationFailedError("run_id", f"run {run.run_id} has no champion to promote")
    genome = deps.store.get_genome(run.agent_id, run.champion_version)
    alias = deps.store.get_alias(run.agent_id)
    if alias is not None and alias.primary_version != run.incumbent_version:
        decision = (
            f"not promoted: live moved to v{alias.primary_version} "
            f"since the run started from v{run.incumbent_version}"
        )
    else:
        revision = alias.revision if alias is not None else None
        new_alias = Alias(
            agent_id=run.agent_id, weights={genome.version: 1.0}, revision=(revision or 0) + 1
        )
        promoted = GenomePromoted(
            agent_id=run.agent_id,
            version=genome.version,
            previous_version=run.incumbent_version,
            run_id=run.run_id,
        )
        try:  # the alias and its announcement in one transaction: never one without the other
            deps.store.promote(genome, new_alias, revision, events=[promoted])
            decision = f"promoted v{genome.version} (was v{run.incumbent_version})"
        except ConflictError:
            decision = "not promoted: another promotion won the race"
    run = _close(deps, run, RunStatus.SUCCEEDED, decision)
    _decide(deps, req.execution_id, f"{run.agent_id}: {decision}", run_id=run.run_id)
    return RunOutcome(run_id=run.run_id, status=run.status.value, decision=decision)


def finish(req: FinishRequest, deps: Deps) -> RunOutcome:
    run = deps.store.get_run(req.run_id)
    if run.status == RunStatus.RUNNING:
        run = _close(deps, run, RunStatus.SUCCEEDED, f"kept v{run.incumbent_version}: {req.reason}")
        _decide(deps, req.execution_id, f"{run.agent_id}: {run.decision}", run_id=run.run_id)
    return RunOutcome(run_id=run.run_id, status=run.status.value, decision=run.decision or "")


def fail(req: FailRequest, deps: Deps) -> RunOutcome:
    """Where a caught error lands: the run is marked failed with the error, for an operator."""
    error = str(req.error.get("Error", "error"))
    cause = str(req.error.get("Cause", ""))[:500]
    decision = f"failed: {error}: {cause}"
    status = "failed"
    if req.run_id is not None:
        try:
            run = deps.store.get_run(req.run_id)
            if run.status == RunStatus.RUNNING:
                _close(deps, run, RunStatus.FAILED, decision)
        except NotFoundError:
            pass
    deps.store.add_decision(
        Decision(
            execution_id=req.execution_id,
            layer="evolution",
            summary=decision,
            detail={"run_id": req.run_id},
        )
    )
    return RunOutcome(run_id=req.run_id, status=status, decision=decision)
