"""Layer 5: ingest KPIs idempotently (with their rollups), summarize an execution."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from chimera.domain.errors import NotFoundError, ValidationFailedError
from chimera.domain.models import CLOCK_SKEW, Decision, KpiRecord
from chimera.services.contracts import IngestRequest, IngestResult, KpiMessage, ReportRequest
from chimera.services.deps import Deps

REPORT_KEY = "refinement:report"
log = logging.getLogger(__name__)


def _check_known(records: Sequence[KpiRecord], deps: Deps) -> None:
    """A KPI is of a known agent and one of its stored genome versions (0: before any),
    else it is refused naming the record's field: nothing of the batch is stored then."""
    known = _Known(deps)
    for i, record in enumerate(records):
        known.check(record, f"records.{i}")


class _Known:
    """The checks of `_check_known` for one record at a time, each agent read once."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.latest: dict[str, int] = {}
        self.horizon = deps.clock.now() + CLOCK_SKEW  # later than this is no measurement of ours

    def check(self, record: KpiRecord, where: str) -> None:
        if record.recorded_at > self.horizon:
            raise ValidationFailedError(
                f"{where}.recorded_at", f"{record.recorded_at.isoformat()} is in the future"
            )
        if record.agent_id not in self.latest:
            try:
                self.deps.store.get_agent(record.agent_id)
            except NotFoundError as exc:
                raise NotFoundError("agent", record.agent_id, field=f"{where}.agent_id") from exc
            self.latest[record.agent_id] = self.deps.store.latest_genome_version(record.agent_id)
        if record.genome_version > self.latest[record.agent_id]:
            raise ValidationFailedError(
                f"{where}.genome_version",
                f"agent {record.agent_id} has no genome version {record.genome_version} "
                f"(newest: {self.latest[record.agent_id]})",
            )


def ingest(req: IngestRequest, deps: Deps) -> IngestResult:
    """Store KPI records not stored yet (idempotent by agent and job id), and update their
    rollups in the same transactions (`KpiStore.put_kpis`)."""
    _check_known(req.records, deps)
    new = deps.store.put_kpis(req.records, deps.settings.rollup_window_s)
    return IngestResult(received=len(req.records), new=new)


def ingest_message(record: KpiMessage, deps: Deps) -> None:
    """One SQS message (parsed by the batch processor's model): the same path as ingest."""
    ingest(IngestRequest(records=[record.body.detail.record]), deps)


def ingest_messages(messages: Sequence[KpiMessage], deps: Deps) -> list[Exception | None]:
    """Many SQS messages (each parsed by the batch processor's model) stored together.

    Each record is checked alone (as `ingest` checks it); those that pass are stored in one
    `put_kpis`, in as few transactions as its chunking allows. Answers, per message, None
    or the exception that failed it: a refused record fails its message only, and if the
    store refuses the batch, each message is stored on its own to find the one at fault
    (what was stored before stays: put_kpis skips it)."""
    outcomes: list[Exception | None] = [None] * len(messages)
    known = _Known(deps)
    good: list[int] = []
    for i, message in enumerate(messages):
        try:
            known.check(message.body.detail.record, "records.0")
        except (ValidationFailedError, NotFoundError) as exc:
            outcomes[i] = exc
        else:
            good.append(i)
    window_s = deps.settings.rollup_window_s
    try:
        deps.store.put_kpis([messages[i].body.detail.record for i in good], window_s)
    except Exception:  # noqa: BLE001 - isolate the message at fault; each failure is reported
        log.warning("a batch of %d KPI records failed; storing them one by one", len(good))
        for i in good:
            try:
                deps.store.put_kpis([messages[i].body.detail.record], window_s)
            except Exception as exc:  # noqa: BLE001 - reported in batchItemFailures
                outcomes[i] = exc
    return outcomes


def report(req: ReportRequest, deps: Deps) -> dict[str, Any]:
    # Its own decision of a previous attempt is not part of what it reports.
    decisions = [d for d in deps.store.list_decisions(req.execution_id) if d.key != REPORT_KEY]
    runs = [r for r in deps.store.list_runs() if r.execution_id == req.execution_id]
    if not decisions and not runs:  # every cycle's discovery decides first
        raise NotFoundError("execution", req.execution_id, field="execution_id")
    summary = {
        "execution_id": req.execution_id,
        "runs": [
            {
                "run_id": r.run_id,
                "agent_id": r.agent_id,
                "status": r.status.value,
                "generations": r.generation,
                "best_fitness": r.best_fitness,
                "decision": r.decision,
            }
            for r in runs
        ],
        "decisions": len(decisions),
    }
    deps.store.add_decision(
        Decision(
            execution_id=req.execution_id,
            layer="refinement",
            summary=f"report: {len(runs)} run(s), {len(decisions)} decision(s)",
            detail=summary,
            key=REPORT_KEY,
        )
    )
    return summary
