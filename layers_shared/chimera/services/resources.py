"""Layer 8: before each segment of a run, price it on every placement, choose the cheapest
that keeps the run's deadline, and reserve its cost against the period's hard budget; after
the segment, commit its actual cost (from what the store says ran: the shards' measured
seconds on Lambda, the job's wall time on an instance, and the counted requests, transitions
and writes) and release the rest. Reservations whose process died expire and are settled by
the next placement."""

from __future__ import annotations

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
    Work,
    choose,
    load_prices,
    segment_cost,
)
from chimera.domain.suites import get_suite
from chimera.services.cost_contracts import (
    CommitCostRequest,
    CommitCostResult,
    PlaceSegmentRequest,
    PlaceSegmentResult,
)
from chimera.services.deps import Deps
from chimera.services.evolution import owned_run

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


def _work(deps: Deps, run: EvolutionRun, generations: int, **extra: Any) -> Work:
    return Work(
        generations=generations,
        population=run.population_size,
        seconds_per_evaluation=get_suite(run.suite).seconds_per_evaluation,
        shard_size=deps.shard_size,
        **extra,
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
    work = _work(deps, run, generations)
    allowed = _allowed(deps)
    options = [_price(deps, table, p, work) for p in allowed]
    left_s = (run.started_at + timedelta(seconds=deps.deadline_s) - now).total_seconds()
    rest_s = _fastest_rest(deps, table, run, allowed, generations, max(0, final - last))
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
) -> float:
    """The least wall time the rest of the run can take: segment by segment (each pays its
    own start-up and loop), of this segment's size and a shorter last one."""
    if size <= 0:
        sizes = [left] if left else []
    else:
        sizes = [size] * (left // size) + ([left % size] if left % size else [])
    fastest: dict[int, float] = {}
    for g in set(sizes):
        fastest[g] = min(_price(deps, table, p, _work(deps, run, g)).seconds for p in allowed)
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
    """The entry's actual cost from what ran: the generations the run told in the segment and
    their evaluations (fitness points); on Lambda the evaluator's seconds the shards measured
    (each generation's `evaluation_seconds`), on an instance the job's measured wall time.

    Evaluations no shard timed (history told before shards were timed, a shard the
    Distributed Map recorded as failed past its retries) are counted at the suite's figure,
    and the counts say so: `measured` is "all", "partial" or "none" on Lambda, "job wall
    time" on an instance."""
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
    fired: list[float] = []
    if entry.status == "reserved":
        now = deps.clock.now()
        actual, counts = _actual(deps, entry, now)
        entry = deps.store.settle(req.run_id, req.entry_id, actual, now, "committed", counts)
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
