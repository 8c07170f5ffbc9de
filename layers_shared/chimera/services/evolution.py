"""Layer 7: evolution runs as ask/tell steps over stored state, then a canary for the champion.

Every step is safe to run twice and to die between any two of its writes: each writes its
state change in one transaction conditional on the run's revision, and its decision after,
keyed by (run, generation, step), so a retry finds the change made and completes the rest.
A repeated ask returns the stored candidates, a repeated tell of a told generation returns
what it told, a repeated propose finds the genome it stored. A champion that the hold-out gate
approves never takes traffic from here: the run hands it to a canary-rollout execution (named
by `experiment_id`, so a retried start finds it) and closes; the canary decides.

A run has one owner at a time: the execution that started or took it over holds a lease that
each of its steps renews. Another execution takes a running run over only when the owner is
known to have stopped (the workflow engine says so) or its lease has expired; until then it
skips the agent and says why, and a step of an execution that no longer owns the run is
refused without writing anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import zlib
from datetime import timedelta
from typing import Literal

import numpy as np

from chimera.domain.errors import (
    ConflictError,
    NotFoundError,
    UnavailableError,
    ValidationFailedError,
)
from chimera.domain.events import EvolutionRunCompleted
from chimera.domain.models import (
    Alias,
    Decision,
    EvolutionRun,
    ExperimentConfig,
    FitnessPoint,
    Generation,
    Genome,
    GuardrailConfig,
    Individual,
    RunStatus,
    Strategy,
    measured_seconds,
    utcnow,
)
from chimera.domain.optimizers import FAILED, OPTIMIZERS, Fitness, Optimizer
from chimera.domain.predictor import (
    PredictorModel,
    blob_key,
    explored,
    parse_model,
    screen_trials,
)
from chimera.domain.suites import get_suite
from chimera.domain.termination import AnyOf, Progress, StepSizeFloor, standard
from chimera.services.contracts import (
    AskRequest,
    AskResult,
    CanaryInput,
    CanaryStartedRequest,
    FailRequest,
    FinishRequest,
    HandoffRequest,
    HandoffResult,
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


def _decide(deps: Deps, execution_id: str, key: str, summary: str, **detail: object) -> None:
    """Record a step's decision once: a retry of the step finds it recorded."""
    deps.store.add_decision(
        Decision(
            execution_id=execution_id,
            layer="evolution",
            summary=summary,
            detail=dict(detail),
            key=f"evolution:{key}",
        )
    )


def _leased(run: EvolutionRun, execution_id: str, deps: Deps, **update: object) -> EvolutionRun:
    """The run with `update` applied, owned by `execution_id` for another lease period."""
    until = utcnow() + timedelta(seconds=deps.settings.run_lease_s)
    return run.model_copy(update={**update, "execution_id": execution_id, "lease_until": until})


def _owner_alive(deps: Deps, run: EvolutionRun) -> bool:
    """Whether the execution holding the run's lease may still be driving it."""
    if run.execution_id is None:
        return False
    if deps.workflows is not None:
        running = deps.workflows.is_running(run.execution_id)
        if running is not None:
            return running
    return run.lease_until is not None and run.lease_until > utcnow()


def owned_run(deps: Deps, run_id: str, execution_id: str) -> EvolutionRun:
    """The run, if `execution_id` owns it; a step of any other execution is refused."""
    run = deps.store.get_run(run_id)
    if run.execution_id != execution_id:
        raise ConflictError(
            f"run_id: {run_id} is driven by execution {run.execution_id}, not {execution_id}"
        )
    return run


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


def _run_id(execution_id: str, agent_id: str) -> str:
    return f"{execution_id}.{agent_id}"[:128]


def _started(req: StartRequest, run: EvolutionRun) -> StartResult:
    return StartResult(
        run_id=run.run_id,
        resumed=run.run_id != _run_id(req.execution_id, req.agent_id),
        phase=_phase(run),
        generation=run.generation,
    )


def _resume(req: StartRequest, deps: Deps, running: EvolutionRun) -> StartResult:
    """Resume the agent's running run, or skip the agent while another execution drives it."""
    run = deps.store.get_run(running.run_id)  # the index copy may be stale: read the item
    if run.status != RunStatus.RUNNING:
        if run.run_id == _run_id(req.execution_id, req.agent_id):  # ours, already finished
            reason = f"skipped: {run.run_id} already {run.status.value}: {run.decision}"
            return StartResult(
                run_id=run.run_id,
                resumed=False,
                phase="skip",
                generation=run.generation,
                reason=reason,
            )
        raise UnavailableError(f"{run.run_id} finished while the run index still lists it")
    if run.execution_id != req.execution_id:
        if _owner_alive(deps, run):
            return _skip(req, deps, run)
        try:
            run = deps.store.save_run(_leased(run, req.execution_id, deps))
        except ConflictError:  # another execution took it over at the same moment
            return _skip(req, deps, deps.store.get_run(run.run_id))
    if run.run_id == _run_id(req.execution_id, req.agent_id):  # our own start, retried
        _decide_started(req, deps, run)
    else:
        _decide(
            deps,
            req.execution_id,
            f"{run.run_id}:resume",
            f"{req.agent_id}: resumed {run.run_id} at generation {run.generation}",
            run_id=run.run_id,
        )
    return _started(req, run)


def _skip(req: StartRequest, deps: Deps, run: EvolutionRun) -> StartResult:
    until = f" (lease until {run.lease_until:%Y-%m-%d %H:%M:%S}Z)" if run.lease_until else ""
    reason = f"skipped: {run.run_id} is driven by execution {run.execution_id}{until}"
    _decide(deps, req.execution_id, f"{run.run_id}:skip", f"{req.agent_id}: {reason}")
    return StartResult(
        run_id=run.run_id, resumed=False, phase="skip", generation=run.generation, reason=reason
    )


def _decide_started(req: StartRequest, deps: Deps, run: EvolutionRun) -> None:
    _decide(
        deps,
        req.execution_id,
        f"{run.run_id}:start",
        f"{req.agent_id}: started {run.run_id} ({run.strategy.value}, seed {run.seed}, "
        f"from live v{run.incumbent_version})",
        run_id=run.run_id,
    )


def start(req: StartRequest, deps: Deps) -> StartResult:
    running = deps.store.list_runs(req.agent_id, status=RunStatus.RUNNING)
    if running:
        return _resume(req, deps, running[0])
    manifest = deps.store.get_agent(req.agent_id).manifest
    incumbent = _ensure_live(deps, req.agent_id)
    x0 = deps.store.get_genome(req.agent_id, incumbent).genes
    run_id = _run_id(req.execution_id, req.agent_id)
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
        run_id=run_id,
        agent_id=req.agent_id,
        suite=manifest.suite,
        strategy=choice.strategy,
        seed=seed,
        population_size=choice.population_size,
        max_generations=choice.max_generations,
        target_fitness=choice.target_fitness,
        optimizer_state=optimizer.state,
        termination=stop.to_json(),
        incumbent_version=incumbent,
        gate=req.gate,
    )
    try:  # one running run per agent: the store refuses a second (see create_run)
        deps.store.create_run(_leased(run, req.execution_id, deps))
    except ConflictError:
        existing = deps.store.list_runs(req.agent_id, status=RunStatus.RUNNING)
        with contextlib.suppress(NotFoundError):
            existing = existing or [deps.store.get_run(run_id)]
        if not existing:
            raise
        return _resume(req, deps, existing[0])
    _decide_started(req, deps, run)
    return StartResult(run_id=run.run_id, resumed=False, phase="evolve", generation=0)


def _shards(run: EvolutionRun, number: int, size: int, shard_size: int) -> list[Shard]:
    return [
        Shard(
            run_id=run.run_id, generation=number, shard=i, start=lo, stop=min(lo + shard_size, size)
        )
        for i, lo in enumerate(range(0, size, shard_size))
    ]


def _running(deps: Deps, run_id: str, execution_id: str) -> EvolutionRun:
    run = owned_run(deps, run_id, execution_id)
    if run.status != RunStatus.RUNNING:
        raise ValidationFailedError("run_id", f"run {run_id} is {run.status.value}")
    return run


def ask(req: AskRequest, deps: Deps) -> AskResult:
    """The generation's candidates, stored with the optimizer's state, in shards to evaluate.

    Where the run's suite opts in (`prescreen_keep`), the deployment allows it
    (CHIMERA_PRESCREEN=on) and a predictor is installed for the agent (the blob
    `predictor.blob_key(agent_id)`), only `ceil(share × λ)` of the optimizer's λ candidates are
    stored and evaluated (`predictor.screen_trials`: the best predicted plus a random tenth);
    the rest are told to the optimizer as not evaluated before its state is stored, so `tell`
    completes the generation with the kept ones. The screen's draw is seeded by (run seed,
    generation): a retry after a crash before the write screens alike. A predictor that cannot
    be used — not JSON, the wrong shapes (parse_model's ValidationFailedError), or made for
    other genes, another suite or another agent — is ignored with a recorded decision saying
    why: the run is still correct without a screen, only dearer, so a stale model never
    stops it.
    """
    run = _running(deps, req.run_id, req.execution_id)
    number = run.generation
    if run.asked_generation == number:  # asked before a crash: same candidates again
        size = len(deps.store.get_generation(run.run_id, number).individuals)
        _redecide_screen(deps, req.execution_id, run, number, size)
        return AskResult(
            run_id=run.run_id, generation=number, shards=_shards(run, number, size, deps.shard_size)
        )
    optimizer = Optimizer.restore(run.optimizer_state)
    trials = optimizer.ask_trials()
    asked = len(trials)
    screen = _screen_model(deps, req.execution_id, run)
    keep = asked if screen is None else math.ceil(screen[1] * asked)
    if screen is not None and keep < asked:
        trials = screen_trials(
            optimizer,
            trials,
            screen[0],
            keep=keep,
            rng=np.random.default_rng([run.seed % 2**64, number]),
        )
    generation = Generation(
        run_id=run.run_id,
        number=number,
        individuals=tuple(
            Individual(index=i, trial_id=t.id, genes=t.genes, parents=t.parents)
            for i, t in enumerate(trials)
        ),
    )
    run = _leased(
        run, req.execution_id, deps, asked_generation=number, optimizer_state=optimizer.state
    )
    deps.store.save_asked(run, generation)
    if screen is not None and keep < asked:
        _decide_screen(deps, req.execution_id, run, number, asked, len(trials), screen[0])
    return AskResult(
        run_id=run.run_id,
        generation=number,
        shards=_shards(run, number, len(trials), deps.shard_size),
    )


def _screen_model(
    deps: Deps, execution_id: str, run: EvolutionRun
) -> tuple[PredictorModel, float] | None:
    """The agent's predictor and the share of candidates to keep, where the suite opts in,
    the deployment allows it and an installed predictor fits the agent; else None (a
    predictor that is there but cannot be used is recorded as ignored, once per run and blob).
    """
    installed = _installed_predictor(deps, run)
    if installed is None:
        return None
    share, data, model = installed
    if isinstance(model, ValidationFailedError):
        exc, key = model, blob_key(run.agent_id)
        digest = hashlib.sha256(data).hexdigest()[:12]
        _decide(
            deps,
            execution_id,
            f"{run.run_id}:prescreen-ignored:{digest}",
            f"{run.agent_id}: predictor {key} ignored, every candidate is evaluated: {exc}",
            run_id=run.run_id,
            generation=run.generation,
            predictor=key,
            sha256=digest,
            field=exc.field,
            reason=exc.message,
        )
        return None
    return model, share


def _installed_predictor(
    deps: Deps, run: EvolutionRun
) -> tuple[float, bytes, PredictorModel | ValidationFailedError] | None:
    """The suite's share to keep, the agent's predictor as stored, and the model (or why it
    does not fit the run); None where the suite does not opt in, the deployment switched
    screening off or no predictor is installed for the agent (yet)."""
    share = get_suite(run.suite).prescreen_keep
    if share is None or deps.settings.prescreen == "off":
        return None
    if not 0.0 < share <= 1.0:
        raise ValidationFailedError("prescreen_keep", f"{run.suite}: {share} is not in (0, 1]")
    try:
        data = deps.store.blobs.get(blob_key(run.agent_id))
    except NotFoundError:
        return None
    try:
        model = parse_model(data)
        _check_fits(
            model, run, [g.name for g in deps.store.get_agent(run.agent_id).manifest.genome]
        )
    except ValidationFailedError as exc:
        return share, data, exc
    return share, data, model


def evaluated_per_generation(deps: Deps, run: EvolutionRun) -> int:
    """How many candidates each of the run's next generations evaluates: the population, or
    the share a pre-screen keeps where `ask` would screen (what layer 8 prices)."""
    installed = _installed_predictor(deps, run)
    if installed is None or isinstance(installed[2], ValidationFailedError):
        return run.population_size
    return math.ceil(installed[0] * run.population_size)


def _check_fits(model: PredictorModel, run: EvolutionRun, genes: list[str]) -> None:
    """ValidationFailedError naming the predictor's field that does not fit the run's agent:
    its genes are the manifest's, by name and in order (the exported history names them)."""
    if list(model.genes) != genes:
        raise ValidationFailedError(
            "predictor.genes", f"made for genes {list(model.genes)}, the agent has {genes}"
        )
    if model.suite != run.suite:
        raise ValidationFailedError(
            "predictor.suite", f"made for suite {model.suite!r}, the run's is {run.suite!r}"
        )
    if model.agent_id is not None and model.agent_id != run.agent_id:
        raise ValidationFailedError(
            "predictor.agent_id", f"made for agent {model.agent_id!r}, not {run.agent_id!r}"
        )


def _decide_screen(
    deps: Deps,
    execution_id: str,
    run: EvolutionRun,
    number: int,
    asked: int,
    kept: int,
    model: PredictorModel | None,
) -> None:
    """Record a screened generation once: asked, kept, of them explored at random, and the
    model's held-out R² (None where the model is gone or has no metrics)."""
    r2 = model.metrics.r2[0] if model is not None and model.metrics is not None else None
    random_ = explored(asked, kept)
    quality = f"model R² {r2:.2f}" if r2 is not None else "model R² unknown"
    _decide(
        deps,
        execution_id,
        f"{run.run_id}:{number}:prescreen",
        f"{run.agent_id}: generation {number} pre-screened: {kept} of {asked} candidates "
        f"evaluated ({kept - random_} best predicted, {random_} at random; {quality})",
        run_id=run.run_id,
        generation=number,
        asked=asked,
        kept=kept,
        explored=random_,
        r2=r2,
        predictor=blob_key(run.agent_id),
    )


def _redecide_screen(
    deps: Deps, execution_id: str, run: EvolutionRun, number: int, kept: int
) -> None:
    """On a repeated ask of a screened generation, its decision again (a no-op if recorded;
    a process killed between the write and the decision records it now). The counts come
    from the stored state: the optimizer's open generation holds every asked candidate, the
    rejected ones already told."""
    pending = run.optimizer_state.get("pending") or []
    if kept >= len(pending):
        return  # not screened
    model = None
    with contextlib.suppress(NotFoundError, ValidationFailedError):
        model = parse_model(deps.store.blobs.get(blob_key(run.agent_id)))
    _decide_screen(deps, execution_id, run, number, len(pending), kept, model)


def tell(req: TellRequest, deps: Deps) -> TellResult:
    run = owned_run(deps, req.run_id, req.execution_id)
    if req.generation is not None and req.generation < run.generation:
        # Told before (a retry after the write landed): the same answer, nothing written.
        return TellResult(
            run_id=run.run_id, generation=req.generation, best_fitness=run.best_fitness
        )
    run = _running(deps, req.run_id, req.execution_id)
    number = run.generation
    if req.generation is not None and req.generation != number:
        raise ValidationFailedError(
            "generation", f"{run.run_id} is at generation {number}, not {req.generation}"
        )
    if run.asked_generation != number:
        raise ValidationFailedError("run_id", f"generation {number} of {run.run_id} was not asked")
    generation = deps.store.get_generation(run.run_id, number)
    shards = deps.store.get_shards(run.run_id, number)
    fitness = {index: f for shard in shards for index, f in shard.fitness.items()}
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
    seconds, measured = measured_seconds(shards)  # the shards' timed evaluations (layer 8)
    point = FitnessPoint(
        run_id=run.run_id,
        generation=number,
        best=progress.best,
        mean=progress.mean,
        std=progress.std,
        evaluations=progress.evaluations,
        evaluation_seconds=seconds,
        measured_evaluations=measured,
    )
    run = _leased(
        run,
        req.execution_id,
        deps,
        generation=number + 1,
        asked_generation=None,
        optimizer_state=optimizer.state,
        best_fitness=best,
        best_genes=genes,
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
    run = _running(deps, req.run_id, req.execution_id)
    if run.champion_version is None:
        if run.best_genes is None:
            raise ValidationFailedError("run_id", f"run {run.run_id} has no evaluated candidate")
        manifest = deps.store.get_agent(run.agent_id).manifest
        manifest.check_genes(run.best_genes)
        version = _store_champion(deps, run)
        run = deps.store.save_run(_leased(run, req.execution_id, deps, champion_version=version))
    assert run.champion_version is not None
    _decide(
        deps,
        req.execution_id,
        f"{run.run_id}:propose",
        f"{run.agent_id}: champion of {run.run_id} stored as v{run.champion_version} "
        f"(training fitness {run.best_fitness:.4g})",
        run_id=run.run_id,
    )
    return ProposeResult(
        run_id=run.run_id,
        candidate_version=run.champion_version,
        incumbent_version=run.incumbent_version,
    )


def _store_champion(deps: Deps, run: EvolutionRun) -> int:
    """The champion's genome version: the one stored before a crash, else a new one."""
    for genome in reversed(deps.store.list_genomes(run.agent_id)):
        if genome.source_run == run.run_id:
            return genome.version
    while True:
        version = deps.store.latest_genome_version(run.agent_id) + 1
        try:
            deps.store.add_genome(
                Genome(
                    agent_id=run.agent_id,
                    version=version,
                    genes=run.best_genes or (),
                    parent_version=run.incumbent_version,
                    source_run=run.run_id,
                    fitness=run.best_fitness,
                )
            )
            return version
        except ConflictError:
            continue  # a concurrent writer took that version number


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


def experiment_id(run: EvolutionRun) -> str:
    """The canary of a run's champion: also its execution's name (80 characters at most, of
    [A-Za-z0-9-_]), the same for every retry of the hand-off, unique to the run."""
    digest = hashlib.sha256(run.run_id.encode()).hexdigest()[:12]
    return f"{run.agent_id[:40]}-v{run.champion_version}-{digest}"


def canary_config(deps: Deps, suite_name: str) -> ExperimentConfig:
    """The deployment's canary, judged on the suite's live metric with the suite's margins."""
    suite = get_suite(suite_name)
    guardrails = GuardrailConfig()
    if suite.latency_p95_margin is not None:
        guardrails = guardrails.model_copy(update={"latency_p95_margin": suite.latency_p95_margin})
    return deps.settings.canary(
        metric=suite.live_metric, margin=suite.margin, guardrails=guardrails
    )


def handoff(req: HandoffRequest, deps: Deps) -> HandoffResult:
    """The canary that will prove the approved champion on live traffic (nothing written: the
    canary's start is the write, and its execution name makes a retried start find it)."""
    run = owned_run(deps, req.run_id, req.execution_id)
    if run.champion_version is None or run.incumbent_version is None:
        raise ValidationFailedError("run_id", f"run {run.run_id} has no champion to hand off")
    return HandoffResult(
        experiment_id=experiment_id(run),
        canary=CanaryInput(
            agent_id=run.agent_id,
            run_id=run.run_id,
            candidate_version=run.champion_version,
            incumbent_version=run.incumbent_version,
            config=canary_config(deps, run.suite),
        ),
    )


def canary_started(req: CanaryStartedRequest, deps: Deps) -> RunOutcome:
    """The canary runs on its own now: the run is done, and says which experiment decides."""
    run = owned_run(deps, req.run_id, req.execution_id)
    if run.status == RunStatus.RUNNING:
        decision = (
            f"canary {req.experiment_id} started: v{run.champion_version} "
            f"against live v{run.incumbent_version}"
        )
        run = _close(deps, run, RunStatus.SUCCEEDED, decision)
    return _closed(deps, req.execution_id, run)


def _closed(deps: Deps, execution_id: str, run: EvolutionRun) -> RunOutcome:
    """The outcome of a closed run; its decision recorded once (closed now or before a crash)."""
    key, summary = f"{run.run_id}:close", f"{run.agent_id}: {run.decision}"
    _decide(deps, execution_id, key, summary, run_id=run.run_id)
    return RunOutcome(run_id=run.run_id, status=run.status.value, decision=run.decision or "")


def finish(req: FinishRequest, deps: Deps) -> RunOutcome:
    run = owned_run(deps, req.run_id, req.execution_id)
    if run.status == RunStatus.RUNNING:
        run = _close(deps, run, RunStatus.SUCCEEDED, f"kept v{run.incumbent_version}: {req.reason}")
    return _closed(deps, req.execution_id, run)


def fail(req: FailRequest, deps: Deps) -> RunOutcome:
    """Where a caught error lands: the run is marked failed with the error, for an operator.

    Only the run's owner closes it: an execution refused because another one drives the run
    records its failure and leaves the run to its owner.
    """
    error = str(req.error.get("Error", "error"))
    cause = str(req.error.get("Cause", ""))[:500]
    decision = f"failed: {error}: {cause}"
    # A retry records the same failure once; distinct failures of one execution each count.
    key = f"{req.run_id}:fail:{hashlib.sha256(decision.encode()).hexdigest()[:16]}"
    if req.run_id is not None:
        try:
            run = deps.store.get_run(req.run_id)
        except NotFoundError:
            run = None
        if run is not None and run.execution_id != req.execution_id:
            decision += f" ({run.run_id} left to execution {run.execution_id}, which drives it)"
        elif run is not None and run.status == RunStatus.RUNNING:
            _close(deps, run, RunStatus.FAILED, decision)
    deps.store.add_decision(
        Decision(
            execution_id=req.execution_id,
            layer="evolution",
            summary=decision,
            detail={"run_id": req.run_id},
            key=f"evolution:{key}",
        )
    )
    return RunOutcome(run_id=req.run_id, status="failed", decision=decision)
