"""Layer 5 (minimal for now): ingest KPIs idempotently, summarize an execution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chimera.domain.errors import NotFoundError, ValidationFailedError
from chimera.domain.models import CLOCK_SKEW, Decision, KpiRecord
from chimera.services.contracts import IngestRequest, IngestResult, KpiMessage, ReportRequest
from chimera.services.deps import Deps

REPORT_KEY = "refinement:report"


def _check_known(records: Sequence[KpiRecord], deps: Deps) -> None:
    """A KPI is of a known agent and one of its stored genome versions (0: before any),
    else it is refused naming the record's field: nothing of the batch is stored then."""
    latest: dict[str, int] = {}
    horizon = deps.clock.now() + CLOCK_SKEW  # later than this is no measurement of ours
    for i, record in enumerate(records):
        if record.recorded_at > horizon:
            raise ValidationFailedError(
                f"records.{i}.recorded_at", f"{record.recorded_at.isoformat()} is in the future"
            )
        if record.agent_id not in latest:
            try:
                deps.store.get_agent(record.agent_id)
            except NotFoundError as exc:
                raise NotFoundError(
                    "agent", record.agent_id, field=f"records.{i}.agent_id"
                ) from exc
            latest[record.agent_id] = deps.store.latest_genome_version(record.agent_id)
        if record.genome_version > latest[record.agent_id]:
            raise ValidationFailedError(
                f"records.{i}.genome_version",
                f"agent {record.agent_id} has no genome version {record.genome_version} "
                f"(newest: {latest[record.agent_id]})",
            )


def ingest(req: IngestRequest, deps: Deps) -> IngestResult:
    """Store KPI records not stored yet (idempotent by agent and job id)."""
    _check_known(req.records, deps)
    new = deps.store.put_kpis(req.records)
    return IngestResult(received=len(req.records), new=new)


def ingest_message(record: KpiMessage, deps: Deps) -> None:
    """One SQS message (parsed by the batch processor's model): the same path as ingest."""
    ingest(IngestRequest(records=[record.body.detail.record]), deps)


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
