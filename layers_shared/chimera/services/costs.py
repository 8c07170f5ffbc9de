"""Layer 8's read side: the ledger and the period's budget as the API, the CLI and the report
show them (`GET /costs`, `GET /budget`, `chimera cost`).

Each ledger entry is one segment of a run (or one predictor-training execution's training
job, `kind` training, run id `predictor:<agent>`): its placement, the estimate it was placed on, what
it held against the budget while open, and once committed the actual cost counted from what
ran (generations, evaluations, transitions, jobs). Totals compare estimated with actual on
the committed entries only (an open entry has no actual yet). Pages are in the ledger's order
(oldest first) with an opaque cursor; the totals always cover every entry asked for, not
only the page.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from chimera.domain.budget import THRESHOLDS, LedgerEntry
from chimera.domain.errors import NotFoundError, ValidationFailedError
from chimera.services.deps import Deps
from chimera.services.views import View

PERIOD_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"
Period = Annotated[str, Field(pattern=PERIOD_PATTERN, description="a calendar month, YYYY-MM")]
_PERIOD: TypeAdapter[str] = TypeAdapter(Period)
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
# What an entry's detail says it counted when it was committed (resources._actual).
COUNTS = (
    "generations",
    "evaluations",
    "transitions",
    "jobs",
    "measured_s",
    "evaluator_s",
    "measured_evaluations",
    "billable_s",  # a training job's (predictor-training): DescribeTrainingJob's figures
    "training_s",
)


class CostEntryView(View):
    entry_id: str
    run_id: str
    execution_id: str
    period: str
    placement: str
    kind: str = Field(
        description="segment (some generations of a run) or training (a predictor-training "
        "execution's SageMaker job; its run_id is predictor:<agent>)"
    )
    status: str = Field(description="reserved (open: held against the budget) or committed")
    first_generation: int | None
    last_generation: int | None
    estimated_usd: float = Field(description="the estimate the placement was chosen on")
    reserved_usd: float = Field(description="held against the budget while the entry was open")
    actual_usd: float | None = Field(description="counted from what ran (absent while open)")
    difference_usd: float | None = Field(description="actual - estimated (absent while open)")
    reason: str = Field(description="why this placement")
    degraded: bool = Field(description="placed on the cheapest option to stay in the budget")
    options: list[dict[str, Any]] = Field(
        description="every placement priced for the segment: placement, usd, seconds"
    )
    counts: dict[str, float | None] = Field(
        description="what the actual was counted from: generations, evaluations, "
        "transitions, jobs, measured_s (an instance job's wall time); a training job's "
        "billable_s and training_s"
    )
    note: str
    reserved_at: datetime
    settled_at: datetime | None


class CostTotals(View):
    entries: int
    committed: int
    open: int
    estimated_usd: float = Field(description="the estimates of every entry")
    held_usd: float = Field(description="what the open entries hold")
    committed_estimated_usd: float = Field(description="the estimates of the committed entries")
    actual_usd: float = Field(description="the actuals of the committed entries")
    actual_over_estimated: float | None = Field(
        description="actual / estimated over the committed entries (absent: nothing to compare)"
    )


class CostsPage(View):
    period: str | None
    run_id: str | None
    entries: list[CostEntryView]
    totals: CostTotals = Field(description="over every entry asked for, not only this page")
    by_placement: dict[str, CostTotals]
    by_run: dict[str, CostTotals]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


class BudgetView(View):
    period: str
    budget_usd: float = Field(description="the hard budget of every calendar month (UTC)")
    spent_usd: float = Field(description="committed actuals")
    reserved_usd: float = Field(description="open reservations")
    held_usd: float = Field(description="spent plus reserved: what the budget caps")
    available_usd: float = Field(description="what a new reservation may still take")
    fraction_used: float | None = Field(description="spent / budget (absent for a zero budget)")
    fraction_held: float | None = Field(description="held / budget (absent for a zero budget)")
    thresholds: list[float] = Field(description="fractions of the budget that raise an alert")
    thresholds_fired: list[float] = Field(description="those BudgetThresholdReached announced")


def current_period(deps: Deps) -> str:
    return f"{deps.clock.now():%Y-%m}"


def check_period(value: str, field: str = "period") -> str:
    """YYYY-MM with a real month; ValidationFailedError naming `field`."""
    try:
        return _PERIOD.validate_python(value)
    except ValidationError:
        raise ValidationFailedError(field, f"{value[:40]!r} is not a month (YYYY-MM)") from None


def entry_view(entry: LedgerEntry) -> CostEntryView:
    detail = entry.detail
    actual = entry.actual_usd if entry.status == "committed" else None

    def generation(key: str) -> int | None:
        value = detail.get(key)
        return int(value) if isinstance(value, int | float) else None

    options = [
        {"placement": str(o.get("placement")), "usd": o.get("usd"), "seconds": o.get("seconds")}
        for o in detail.get("options", [])
        if isinstance(o, dict)
    ]
    return CostEntryView(
        entry_id=entry.entry_id,
        run_id=entry.run_id,
        execution_id=entry.execution_id,
        period=entry.period,
        placement=entry.placement,
        kind=str(detail.get("kind", "segment")),
        status=entry.status,
        first_generation=generation("first_generation"),
        last_generation=generation("last_generation"),
        estimated_usd=entry.estimated_usd,
        reserved_usd=entry.reserved_usd,
        actual_usd=actual,
        difference_usd=None if actual is None else actual - entry.estimated_usd,
        reason=str(detail.get("reason", "")),
        degraded=bool(detail.get("degraded", False)),
        options=options,
        counts={k: detail.get(k) for k in COUNTS if k in detail and entry.status == "committed"},
        note=entry.note,
        reserved_at=entry.reserved_at,
        settled_at=entry.settled_at,
    )


def totals(entries: Iterable[CostEntryView]) -> CostTotals:
    rows = list(entries)
    done = [e for e in rows if e.actual_usd is not None]
    estimated = sum(e.estimated_usd for e in done)
    actual = sum(e.actual_usd or 0.0 for e in done)
    return CostTotals(
        entries=len(rows),
        committed=len(done),
        open=len(rows) - len(done),
        estimated_usd=sum(e.estimated_usd for e in rows),
        held_usd=sum(e.reserved_usd for e in rows if e.actual_usd is None),
        committed_estimated_usd=estimated,
        actual_usd=actual,
        actual_over_estimated=actual / estimated if done and estimated > 0 else None,
    )


def _grouped(entries: list[CostEntryView], key: str) -> dict[str, CostTotals]:
    groups: dict[str, list[CostEntryView]] = {}
    for e in entries:
        groups.setdefault(str(getattr(e, key)), []).append(e)
    return {k: totals(v) for k, v in sorted(groups.items())}


def _cursor(entry: CostEntryView) -> str:
    raw = f"{entry.reserved_at.isoformat()}|{entry.run_id}|{entry.entry_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _after(cursor: str) -> tuple[datetime, str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, run_id, entry_id = raw.split("|", 2)
        return datetime.fromisoformat(at), run_id, entry_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValidationFailedError("cursor", "not a cursor this listing returned") from None


def _order(e: CostEntryView) -> tuple[datetime, str, str]:
    return e.reserved_at, e.run_id, e.entry_id


def list_costs(
    deps: Deps,
    period: str | None = None,
    run_id: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> CostsPage:
    """The ledger of a period (default: the current one) or of a run (all its periods, or one
    when `period` is given too), oldest first, `limit` entries from `cursor` on."""
    if period is not None:
        check_period(period)
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailedError("limit", f"{limit} is not in [1, {MAX_LIMIT}]")
    if run_id is not None:
        stored = deps.store.list_ledger(run_id=run_id)
        if not stored:
            try:
                deps.store.get_run(run_id)
            except NotFoundError as exc:
                raise NotFoundError("evolution run", run_id, field="run_id") from exc
        if period is not None:
            stored = [e for e in stored if e.period == period]
    else:
        period = period or current_period(deps)
        stored = deps.store.list_ledger(period=period)
    views = sorted((entry_view(e) for e in stored), key=_order)
    start = 0
    if cursor is not None:
        after = _after(cursor)
        start = next((i for i, e in enumerate(views) if _order(e) > after), len(views))
    page = views[start : start + limit]
    more = start + limit < len(views)
    return CostsPage(
        period=period,
        run_id=run_id,
        entries=page,
        totals=totals(views),
        by_placement=_grouped(views, "placement"),
        by_run=_grouped(views, "run_id"),
        next_cursor=_cursor(page[-1]) if more and page else None,
    )


def budget(deps: Deps, period: str | None = None) -> BudgetView:
    """The period's budget (default: the current month) as the store's counters hold it."""
    period = current_period(deps) if period is None else check_period(period)
    state = deps.store.budget_state(period, deps.budget_usd)
    b = state.budget_usd
    return BudgetView(
        period=period,
        budget_usd=b,
        spent_usd=state.spent_usd,
        reserved_usd=round(max(0.0, state.held_usd - state.spent_usd), 6),
        held_usd=state.held_usd,
        available_usd=state.left_usd,
        fraction_used=state.spent_usd / b if b > 0 else None,
        fraction_held=state.held_usd / b if b > 0 else None,
        thresholds=list(THRESHOLDS),
        thresholds_fired=sorted(state.thresholds_fired),
    )
