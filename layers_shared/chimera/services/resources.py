"""Layer 8: before each segment of a run, price it on every placement, choose the cheapest
that keeps the run's deadline, and reserve its cost against the period's hard budget; after
the segment, commit its actual cost (from what the store says ran: the shards' measured
seconds on Lambda, the job's wall time on an instance, and the counted requests, transitions
and writes) and release the rest. Reservations whose process died expire and are settled by
the next placement (or training reservation).

predictor-training's SageMaker job goes through the same budget: `reserve_training` before
its Train state (priced from the exported rows and the epochs), `commit_training` after it,
on success and on its Catch (the job's measured BillableTimeInSeconds at the table's
managed-spot price)."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timedelta
from typing import Any

from chimera.domain.budget import LedgerEntry
from chimera.domain.errors import BudgetExceededError, NotFoundError, ValidationFailedError
from chimera.domain.models import Decision, EvolutionRun
from chimera.domain.prices import (
    LAMBDA,
    Choice,
    Cost,
    FlowShape,
    PriceTable,
    Route,
    TrainingWork,
    Work,
    choose,
    load_prices,
    segment_cost,
    training_cost,
)
from chimera.domain.suites import get_suite
from chimera.services.cost_contracts import (
    CommitCostRequest,
    CommitCostResult,
    CommitTrainingRequest,
    CommitTrainingResult,
    PlaceSegmentRequest,
    PlaceSegmentResult,
    ReserveTrainingRequest,
    ReserveTrainingResult,
)
from chimera.services.deps import Deps
from chimera.services.evolution import evaluated_per_generation, owned_run

# The placements evolution-run can route a segment to (its Route Choice reads the value): a
# child evolution-segment execution of Lambdas, one Batch job on the GPU spot queue, or one
# SageMaker managed-spot training job. The price table also prices Batch on-demand; it
# becomes a choice when the deployment has an on-demand compute environment.
DEPLOYED: dict[str, Route] = {
    LAMBDA: "lambda",
    "batch-gpu-spot": "batch",
    "sagemaker-spot": "sagemaker",
}

# A segment's work on each route beyond evolution-run's own loop (`OUTER_PER_SEGMENT`).
# Lambda: evolution-segment, as `prices.flow_shape` counts it from its file
# (tests/unit/test_prices.py checks these against it): inline (Ask, StageShards, FanOut,
# EvaluateShards, Tell, Adapt, Continue + one state per shard), or over a Distributed Map of
# Standard children (+ CollectShards; each child is one transition plus its state). A job
# route: one job for the whole segment, whose generations make no transitions.
SEGMENT_SHAPES: dict[tuple[Route, bool], FlowShape] = {
    ("lambda", False): FlowShape(
        per_generation=7, per_segment=1, per_item=1, generation_lambdas=4, item_lambdas=1
    ),
    ("lambda", True): FlowShape(
        per_generation=8, per_segment=1, per_item=2, generation_lambdas=5, item_lambdas=1
    ),
    ("batch", False): FlowShape(segment_jobs=1),
    ("sagemaker", False): FlowShape(segment_jobs=1),
}
# The reservation is the estimate times this: room for evaluations slower than the suite's
# figure; an actual above it is still committed in full.
RESERVE_FACTOR = 2.0
# A settled entry's note: committed by CommitCost / CommitTraining (the sweep writes another).
COMMITTED, COMMITTED_FAILED = "committed", "committed: the job failed"
# What a commit's decision reports, read back from the settled entry's detail.
SEGMENT_COUNTS = (
    "generations",
    "evaluations",
    "transitions",
    "jobs",
    "measured_s",
    "evaluator_s",
    "measured_evaluations",
    "measured",
)
TRAINING_COUNTS = (
    "billable_s",
    "training_s",
    "job_status",
    "job_name",
    "measured",
    "transitions",
    "jobs",
    "compute_usd",
)
MIN_EXPIRY_S = 600.0


def _shape(placement: str, shards: int, deps: Deps) -> FlowShape:
    route = _route(placement)
    distributed = route == "lambda" and shards > deps.settings.distributed_map_threshold
    return SEGMENT_SHAPES[(route, distributed)]


def _price(deps: Deps, table: PriceTable, placement: str, work: Work) -> Cost:
    return segment_cost(
        table,
        placement,
        work,
        _shape(placement, work.shards, deps),
        memory_mb=deps.settings.evaluator_memory_mb,
        architecture=deps.settings.evaluator_architecture,
    )


def _work(deps: Deps, run: EvolutionRun, generations: int, population: int) -> Work:
    """A segment's predicted work: `population` evaluations a generation (fewer than the
    run's population where a pre-screen keeps a share: `evaluated_per_generation`)."""
    return Work(
        generations=generations,
        population=population,
        seconds_per_evaluation=get_suite(run.suite).seconds_per_evaluation,
        shard_size=deps.shard_size,
    )


def place(req: PlaceSegmentRequest, deps: Deps) -> PlaceSegmentResult:
    run = owned_run(deps, req.run_id, req.execution_id)
    now = deps.clock.now()
    period = f"{now:%Y-%m}"
    sweep_expired(deps, period, now)
    first = run.generation
    final = run.max_generations - 1
    last = final if req.last_generation is None else min(req.last_generation, final)
    generations = max(0, last - first + 1)
    entry_id = f"{run.run_id}:{first:06d}:segment"
    stored = deps.store.get_ledger_entry(run.run_id, entry_id)
    if stored is not None:  # a retried place: the same choice, nothing held twice
        _record_placement(deps, req.execution_id, stored)
        return _placed(stored)
    table = load_prices()
    population = evaluated_per_generation(deps, run)
    work = _work(deps, run, generations, population)
    allowed = _allowed(deps)
    options = [_price(deps, table, p, work) for p in allowed]
    left_s = (run.started_at + timedelta(seconds=deps.deadline_s) - now).total_seconds()
    rest_s = _fastest_rest(deps, table, run, allowed, generations, max(0, final - last), population)
    decision = choose(options, left_s, rest_s)
    chosen, reason = decision.chosen, decision.reason
    if len(allowed) < len(DEPLOYED):
        reason = f"the deployment places every segment on {deps.settings.placement}; {reason}"
    try:
        entry, _ = deps.store.reserve(
            _entry(deps, run, entry_id, chosen, now, first, last, decision, reason), deps.budget_usd
        )
    except BudgetExceededError as exc:
        cheapest = min(decision.options, key=lambda o: o.usd)
        if cheapest.placement == chosen.placement:
            _record(deps, req.execution_id, f"{entry_id}:refused", f"{run.agent_id}: {exc}", {})
            raise
        reason = f"degraded to the cheapest placement: {exc}"
        try:
            entry, _ = deps.store.reserve(
                _entry(deps, run, entry_id, cheapest, now, first, last, decision, reason, True),
                deps.budget_usd,
            )
        except BudgetExceededError as again:
            _record(deps, req.execution_id, f"{entry_id}:refused", f"{run.agent_id}: {again}", {})
            raise
    _record_placement(deps, req.execution_id, entry)
    return _placed(entry)


def _fastest_rest(
    deps: Deps,
    table: PriceTable,
    run: EvolutionRun,
    allowed: list[str],
    size: int,
    left: int,
    population: int,
) -> float:
    """The least wall time the rest of the run can take: segment by segment (each pays its
    own start-up and loop), of this segment's size and a shorter last one."""
    if size <= 0:
        sizes = [left] if left else []
    else:
        sizes = [size] * (left // size) + ([left % size] if left % size else [])
    fastest: dict[int, float] = {}
    for g in set(sizes):
        fastest[g] = min(
            _price(deps, table, p, _work(deps, run, g, population)).seconds for p in allowed
        )
    return sum(fastest[g] for g in sizes)


def _route(placement: str) -> Route:
    route = DEPLOYED.get(placement)
    if route is None:
        raise ValidationFailedError("placement", f"{placement!r} is not a deployed placement")
    return route


def _allowed(deps: Deps) -> list[str]:
    """The placements layer 8 may choose among: all deployed ones, or those of the one route
    the deployment asks for (`CHIMERA_PLACEMENT`)."""
    wanted = deps.settings.placement
    return [p for p, route in DEPLOYED.items() if wanted in ("auto", route)]


def _record_placement(deps: Deps, execution_id: str, entry: LedgerEntry) -> None:
    """The placement's decision, from the entry alone: a retry records the same one."""
    options = entry.detail.get("options", [])
    listed = ", ".join(f"{o['placement']} ${o['usd']:.6f}/{o['seconds']:.0f}s" for o in options)
    _record(
        deps,
        execution_id,
        entry.entry_id,
        f"{entry.run_id}: {entry.placement} for generations {entry.detail.get('first_generation')}"
        f"-{entry.detail.get('last_generation')}, est. ${entry.estimated_usd:.6f}, "
        f"${entry.reserved_usd:.6f} reserved; {entry.detail.get('reason', '')} ({listed})",
        {"run_id": entry.run_id, "options": options},
    )


def _entry(
    deps: Deps,
    run: EvolutionRun,
    entry_id: str,
    cost: Cost,
    now: datetime,
    first: int,
    last: int,
    decision: Choice,
    reason: str,
    degraded: bool = False,
) -> LedgerEntry:
    expiry = max(MIN_EXPIRY_S, deps.deadline_s, 3 * cost.seconds)
    return LedgerEntry(
        entry_id=entry_id,
        run_id=run.run_id,
        execution_id=run.execution_id,
        period=f"{now:%Y-%m}",
        placement=cost.placement,
        estimated_usd=cost.usd,
        reserved_usd=cost.usd * RESERVE_FACTOR,
        reserved_at=now,
        expires_at=now + timedelta(seconds=expiry),
        detail={
            "first_generation": first,
            "last_generation": last,
            "estimate": cost.model_dump(),
            "options": [o.model_dump() for o in decision.options],
            "reason": reason,
            "degraded": degraded,
        },
    )


def _placed(entry: LedgerEntry) -> PlaceSegmentResult:
    return PlaceSegmentResult(
        placement=_route(entry.placement),
        detail=f"{entry.placement}: est. ${entry.estimated_usd:.6f}",
        estimated_usd=entry.estimated_usd,
        reserved_usd=entry.reserved_usd,
        entry_id=entry.entry_id,
        degraded=bool(entry.detail.get("degraded", False)),
    )


def _record(deps: Deps, execution_id: str, key: str, summary: str, detail: dict[str, Any]) -> None:
    deps.store.add_decision(
        Decision(
            execution_id=execution_id,
            layer="resources",
            summary=summary[:2000],
            detail=detail,
            key=f"resources:{key}",
        )
    )


def _actual(deps: Deps, entry: LedgerEntry, now: datetime) -> tuple[float, dict[str, Any]]:
    """A segment entry's actual cost from what ran (a training entry swept before its commit
    came: its reservation, nothing having been measured): the generations the run told in the segment and
    their evaluations (fitness points); on Lambda the evaluator's seconds the shards measured
    (each generation's `evaluation_seconds`), on an instance the job's measured wall time.

    Evaluations no shard timed (history told before shards were timed, a shard the
    Distributed Map recorded as failed past its retries) are counted at the suite's figure,
    and the counts say so: `measured` is "all", "partial" or "none" on Lambda, "job wall
    time" on an instance."""
    if entry.detail.get("kind") == TRAINING_KIND:
        # Only the training job's description measures it, and the task that had it never
        # came: nothing was measured, so the reservation is charged (the worst case held).
        return entry.reserved_usd, {
            "billable_s": None,
            "measured": "none",
            "why": "the training job's commit never came: nothing measured, charged as held",
        }
    try:
        run = deps.store.get_run(entry.run_id)
    except NotFoundError:
        return entry.reserved_usd, {"generations": 0, "why": "the run is gone: charged as held"}
    first = int(entry.detail.get("first_generation", 0))
    last = int(entry.detail.get("last_generation", run.max_generations - 1))
    points = [p for p in deps.store.fitness_history(run.run_id) if first <= p.generation <= last]
    told = len(points)
    evaluations = sum(p.evaluations for p in points)
    population = max(1, round(evaluations / told)) if told else run.population_size
    measured, evaluator_s, timed = None, None, 0
    if _route(entry.placement) != "lambda":
        measured = max(0.0, (now - entry.reserved_at).total_seconds())
        how = "job wall time"
    else:
        seconds = [p.evaluation_seconds for p in points if p.evaluation_seconds is not None]
        if seconds:
            evaluator_s = math.fsum(seconds)
            timed = sum(p.measured_evaluations or 0 for p in points)
        how = "all" if timed >= evaluations else "partial" if timed else "none"
    work = Work(
        generations=told,
        population=population,
        seconds_per_evaluation=get_suite(run.suite).seconds_per_evaluation,
        shard_size=deps.shard_size,
        measured_s=measured,
        evaluator_s=evaluator_s,
        measured_evaluations=timed,
    )
    cost = _price(deps, load_prices(), entry.placement, work)
    counts = {
        "generations": told,
        "evaluations": evaluations,
        "transitions": cost.transitions,
        "jobs": cost.jobs,
        "measured_s": measured,
        "evaluator_s": evaluator_s,
        "measured_evaluations": timed,
        "measured": how,
    }
    return cost.usd, counts


def commit_cost(req: CommitCostRequest, deps: Deps) -> CommitCostResult:
    owned_run(deps, req.run_id, req.execution_id)
    entry = deps.store.get_ledger_entry(req.run_id, req.entry_id)
    if entry is None:
        raise NotFoundError("ledger entry", f"{req.run_id}/{req.entry_id}", field="entry_id")
    if entry.status == "reserved":
        now = deps.clock.now()
        actual, counts = _actual(deps, entry, now)
        entry = deps.store.settle(req.run_id, req.entry_id, actual, now, "committed", counts)
    if entry.note == COMMITTED:  # recorded from the entry: a retry records what a kill lost
        counts = {k: entry.detail.get(k) for k in SEGMENT_COUNTS}
        _record(
            deps,
            req.execution_id,
            f"{req.entry_id}:commit",
            f"{entry.placement}: actual ${entry.actual_usd or 0:.6f} against est. "
            f"${entry.estimated_usd:.6f} ({counts['generations']} generations, measured: "
            f"{counts['measured']}); "
            f"${max(0.0, entry.reserved_usd - (entry.actual_usd or 0)):.6f} released",
            {"run_id": req.run_id, "entry_id": req.entry_id, **counts},
        )
    fired = deps.store.fire_thresholds(entry.period, deps.budget_usd)
    return CommitCostResult(
        entry_id=entry.entry_id,
        placement=entry.placement,
        estimated_usd=entry.estimated_usd,
        actual_usd=entry.actual_usd or 0.0,
        generations=int(entry.detail.get("generations", 0)),
        thresholds_fired=fired,
    )


def sweep_expired(deps: Deps, period: str, now: datetime) -> list[LedgerEntry]:
    """Settle the period's reservations whose process died (past their expiry) at the actual
    the store shows ran; the entries settled."""
    settled = []
    for entry in deps.store.list_ledger(period=period):
        if entry.expired(now):
            actual, counts = _actual(deps, entry, now)
            settled.append(
                deps.store.settle(
                    entry.run_id, entry.entry_id, actual, now, "expired: never committed", counts
                )
            )
    if settled:
        deps.store.fire_thresholds(period, deps.budget_usd)
    return settled


# -- predictor-training's job (statemachines/predictor-training.asl.json) ----------------------
# A training execution's ledger entry: run id `predictor:<agent>` (every training of the agent,
# as `GET /costs?run_id=` and `chimera cost --run` list them), entry id `training:<execution>`
# (one per execution: a retried ReserveTraining finds it), detail["kind"] "training".
TRAINING_KIND = "training"
# predictor-training's path through a trained job, as `prices.flow_shape` counts it from the
# file with these facts (tests/unit/test_training_cost.py checks it): ExportHistory,
# HasHistory, ReserveTraining, CanTrain, Train, CommitTraining, InstallPredictor, Done (the
# failure path, Train → SettleFailedTraining → RecordFailure → Failed, is as long and has as
# many Lambdas).
TRAINING_FACTS: dict[str, Any] = {"$.export.exported": True, "$.reservation.reserved": True}
TRAINING_SHAPE = FlowShape(per_segment=8, segment_lambdas=4, segment_jobs=1)
# Seconds of training per exported row and epoch, stated conservatively:
# `bench/training_time_bench.py --rows 480 4800 --epochs 20 --repeat 2` measured on one core
# here 2.3e-5 (480 rows) and 1.6e-5 (4,800 rows) at the trainer's default batch of 64, and
# 8.0e-5 / 5.4e-5 at batch 16; this is above all four. The table's start-up (sagemaker-spot:
# 300 s) is added once, and torch's import and the data's load are in it.
TRAINING_S_PER_ROW_EPOCH = 1e-4
DEFAULT_EPOCHS = 300  # gpu_jobs/predictor/train.py's DEFAULTS["epochs"] (a test checks it)


def training_run_id(agent_id: str) -> str:
    return f"predictor:{agent_id}"


def training_entry_id(execution_id: str) -> str:
    """One entry per execution (a name past 180 characters by its SHA-1: entry ids are 200)."""
    if len(execution_id) > 180:
        execution_id = hashlib.sha1(execution_id.encode()).hexdigest()
    return f"training:{execution_id}"


def _epochs(hyperparameters: dict[str, str]) -> tuple[int, str]:
    """The job's epochs, and how they were read; a value the trainer will refuse is priced at
    its default (the job fails at once: its actual is what it billed)."""
    raw = hyperparameters.get("epochs")
    if raw is None:
        return DEFAULT_EPOCHS, " (the trainer's default)"
    try:
        epochs = int(raw)
    except ValueError:
        epochs = 0
    if not 1 <= epochs <= 100_000:
        return DEFAULT_EPOCHS, f" (epochs {raw[:20]!r} unreadable: the trainer's default)"
    return epochs, ""


def _training_price(deps: Deps, table: PriceTable, placement: str, work: TrainingWork) -> Cost:
    return training_cost(
        table,
        placement,
        work,
        TRAINING_SHAPE,
        memory_mb=deps.settings.evaluator_memory_mb,
        architecture=deps.settings.evaluator_architecture,
    )


def reserve_training(req: ReserveTrainingRequest, deps: Deps) -> ReserveTrainingResult:
    """Price the execution's training job and reserve it against the period's budget, as a
    segment is (`RESERVE_FACTOR` times the estimate, never more than the job's cost at
    MaxRuntimeInSeconds, which it cannot pass). Over the budget: a refusal recorded as a
    decision (`reserved` false: the machine ends in OverBudget, no job started)."""
    now = deps.clock.now()
    period = f"{now:%Y-%m}"
    sweep_expired(deps, period, now)
    run_id, entry_id = training_run_id(req.agent_id), training_entry_id(req.execution_id)
    stored = deps.store.get_ledger_entry(run_id, entry_id)
    if stored is not None:  # a retried reserve: the same entry, nothing held twice
        _record_training(deps, req.execution_id, stored)
        return _training_reserved(stored)
    try:
        deps.store.get_agent(req.agent_id)
    except NotFoundError as exc:
        raise NotFoundError("agent", req.agent_id, field="agent_id") from exc
    table = load_prices()
    inst = table.instance(req.placement)
    if inst.service != "sagemaker":
        raise ValidationFailedError("placement", f"{req.placement!r} is not a SageMaker price")
    if inst.instance_type != req.instance_type:
        raise ValidationFailedError(
            "instance_type",
            f"{req.instance_type!r}: {req.placement} is priced for {inst.instance_type}",
        )
    if req.max_wait_s < req.max_runtime_s:
        raise ValidationFailedError("max_wait_s", "is below max_runtime_s")
    epochs, how = _epochs(req.hyperparameters)
    work = TrainingWork(
        rows=req.rows,
        epochs=epochs,
        seconds_per_row_epoch=TRAINING_S_PER_ROW_EPOCH,
        max_runtime_s=req.max_runtime_s,
    )
    cost = _training_price(deps, table, req.placement, work)
    worst = _training_price(
        deps, table, req.placement, work.model_copy(update={"billable_s": float(req.max_runtime_s)})
    )
    reason = (
        f"predictor training on {inst.instance_type} managed spot: {req.rows} rows x {epochs} "
        f"epochs{how} x {TRAINING_S_PER_ROW_EPOCH:g} s + {inst.startup_s:.0f} s start-up, "
        f"at most {req.max_runtime_s} s"
    )
    expiry = max(MIN_EXPIRY_S, req.max_wait_s + MIN_EXPIRY_S, 3 * cost.seconds)
    entry = LedgerEntry(
        entry_id=entry_id,
        run_id=run_id,
        execution_id=req.execution_id,
        period=period,
        placement=req.placement,
        estimated_usd=cost.usd,
        reserved_usd=min(cost.usd * RESERVE_FACTOR, worst.usd),
        reserved_at=now,
        expires_at=now + timedelta(seconds=expiry),
        detail={
            "kind": TRAINING_KIND,
            "agent_id": req.agent_id,
            "rows": req.rows,
            "epochs": epochs,
            "instance_type": inst.instance_type,
            "seconds_per_row_epoch": TRAINING_S_PER_ROW_EPOCH,
            "max_runtime_s": req.max_runtime_s,
            "estimate": cost.model_dump(),
            "options": [cost.model_dump()],
            "reason": reason,
        },
    )
    try:
        entry, _ = deps.store.reserve(entry, deps.budget_usd)
    except BudgetExceededError as exc:
        why = f"predictor training refused, no job started: {exc}"
        _record(
            deps,
            req.execution_id,
            f"{entry_id}:refused",
            f"{run_id}: {why}",
            {"run_id": run_id, "estimated_usd": cost.usd, "reserved_usd": entry.reserved_usd},
        )
        return ReserveTrainingResult(
            reserved=False,
            entry_id=entry_id,
            run_id=run_id,
            estimated_usd=cost.usd,
            reserved_usd=0.0,
            reason=why,
        )
    _record_training(deps, req.execution_id, entry)
    return _training_reserved(entry)


def _training_reserved(entry: LedgerEntry) -> ReserveTrainingResult:
    return ReserveTrainingResult(
        reserved=True,
        entry_id=entry.entry_id,
        run_id=entry.run_id,
        estimated_usd=entry.estimated_usd,
        reserved_usd=entry.reserved_usd,
        reason=str(entry.detail.get("reason", "")),
    )


def _record_training(deps: Deps, execution_id: str, entry: LedgerEntry) -> None:
    _record(
        deps,
        execution_id,
        entry.entry_id,
        f"{entry.run_id}: est. ${entry.estimated_usd:.6f}, ${entry.reserved_usd:.6f} reserved; "
        f"{entry.detail.get('reason', '')}",
        {"run_id": entry.run_id, "options": entry.detail.get("options", [])},
    )


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and 0 <= value <= 28 * 86_400 else None


def _measured(req: CommitTrainingRequest) -> dict[str, Any]:
    """What the job billed: DescribeTrainingJob's BillableTimeInSeconds from Train's output,
    or, on the Catch path, from the Cause (DescribeTrainingJob's JSON for a failed or stopped
    job); 0 when the API refused to create it; None (charged as held) when nothing says."""
    if req.error is None:
        if req.billable_seconds is None:
            raise ValidationFailedError("billable_seconds", "give the job's or the Catch's error")
        return {
            "billable_s": req.billable_seconds,
            "training_s": req.training_seconds,
            "job_status": "Completed",
            "job_name": req.job_name,
            "measured": "billable time",
        }
    name = str(req.error.get("Error", ""))
    cause = req.error.get("Cause", "")
    try:
        described = json.loads(cause) if isinstance(cause, str) else cause
    except ValueError:
        described = None
    if isinstance(described, dict) and "TrainingJobStatus" in described:
        billable = _seconds(described.get("BillableTimeInSeconds"))
        return {
            "billable_s": 0.0 if billable is None else billable,
            "training_s": _seconds(described.get("TrainingTimeInSeconds")),
            "job_status": str(described["TrainingJobStatus"])[:40],
            "job_name": str(described.get("TrainingJobName", ""))[:63],
            "measured": "billable time"
            if billable is not None
            else "billable time: none reported (not billed)",
        }
    if name.startswith("SageMaker."):
        return {
            "billable_s": 0.0,
            "training_s": None,
            "job_status": "not created",
            "job_name": "",
            "measured": f"the job was not created ({name[:80]}): nothing billed",
        }
    return {
        "billable_s": None,
        "training_s": None,
        "job_status": "unknown",
        "job_name": "",
        "measured": f"none ({name[:80] or 'no error name'}): charged as held",
    }


def commit_training(req: CommitTrainingRequest, deps: Deps) -> CommitTrainingResult:
    """Commit the training job's actual (its measured billable seconds at the table's price,
    plus the execution's counted transitions, Lambdas and requests) and release the rest;
    run twice, it commits once."""
    run_id = training_run_id(req.agent_id)
    entry = deps.store.get_ledger_entry(run_id, req.entry_id)
    if entry is None:
        raise NotFoundError("ledger entry", f"{run_id}/{req.entry_id}", field="entry_id")
    if entry.detail.get("kind") != TRAINING_KIND or entry.execution_id != req.execution_id:
        raise ValidationFailedError(
            "entry_id", f"{req.entry_id!r} is not this execution's training entry"
        )
    if entry.status == "reserved":
        now = deps.clock.now()
        counts = _measured(req)
        if counts["billable_s"] is None:
            actual = entry.reserved_usd
            counts |= {"transitions": None, "jobs": None}
        else:
            work = TrainingWork(
                rows=int(entry.detail.get("rows", 0)),
                epochs=int(entry.detail.get("epochs", DEFAULT_EPOCHS)),
                seconds_per_row_epoch=float(
                    entry.detail.get("seconds_per_row_epoch", TRAINING_S_PER_ROW_EPOCH)
                ),
                max_runtime_s=float(entry.detail.get("max_runtime_s", 1)),
                billable_s=counts["billable_s"],
            )
            cost = _training_price(deps, load_prices(), entry.placement, work)
            actual = cost.usd
            counts |= {
                "transitions": cost.transitions,
                "jobs": cost.jobs,
                "compute_usd": cost.compute_usd,
            }
        failed = req.error is not None
        entry = deps.store.settle(
            run_id,
            req.entry_id,
            actual,
            now,
            COMMITTED_FAILED if failed else COMMITTED,
            counts,
        )
    if entry.note in (COMMITTED, COMMITTED_FAILED):  # a retry records what a kill lost
        counts = {k: entry.detail.get(k) for k in TRAINING_COUNTS}
        _record(
            deps,
            req.execution_id,
            f"{req.entry_id}:commit",
            f"{run_id}: training job {counts['job_status']}: actual ${entry.actual_usd or 0:.6f}"
            f" against est. ${entry.estimated_usd:.6f} (measured: {counts['measured']}; "
            f"billable {counts['billable_s']} s, trained {counts['training_s']} s on "
            f"{entry.detail.get('instance_type')}); "
            f"${max(0.0, entry.reserved_usd - (entry.actual_usd or 0)):.6f} released",
            {"run_id": run_id, "entry_id": req.entry_id, **counts},
        )
    fired = deps.store.fire_thresholds(entry.period, deps.budget_usd)
    billable = entry.detail.get("billable_s")
    return CommitTrainingResult(
        entry_id=entry.entry_id,
        estimated_usd=entry.estimated_usd,
        actual_usd=entry.actual_usd or 0.0,
        billable_s=float(billable) if isinstance(billable, int | float) else None,
        measured=str(entry.detail.get("measured", "")),
        thresholds_fired=fired,
    )
