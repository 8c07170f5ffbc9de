"""Layer 5: ingest KPIs idempotently (with their rollups), recognize patterns in the windows
they close, summarize an execution."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from chimera.domain.anomalies import WINDOWS_PER_WRITE, DetectorState, advance
from chimera.domain.errors import (
    ConflictError,
    NotFoundError,
    UnavailableError,
    ValidationFailedError,
)
from chimera.domain.events import AnomalyDetected
from chimera.domain.models import CLOCK_SKEW, Decision, KpiRecord
from chimera.domain.rollups import floor_window
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
    detect(deps, closing(req.records, deps.settings.rollup_window_s))
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
    stored = [messages[i].body.detail.record for i in good if outcomes[i] is None]
    detect(deps, closing(stored, window_s))
    return outcomes


# -- pattern recognition on the windows ingestion closes ---------------------------------------
DETECT_RETRIES = 4  # a state moved by a concurrent ingest: re-read and feed what is left
Pair = tuple[str, int]
# Per store: the newest watermark this process has seen for each (agent, version). The stored
# one only moves forward, so a batch whose windows all start before cached + one window
# closes nothing and skips the read: detector work happens when a window closes, not per batch.
_WATERMARKS: weakref.WeakKeyDictionary[object, dict[Pair, datetime]] = weakref.WeakKeyDictionary()


def closing(records: Iterable[KpiRecord], window_s: int) -> dict[Pair, datetime]:
    """For each (agent, version) of `records`, the start of its newest window among them:
    every window of that version starting before it is closed."""
    newest: dict[Pair, datetime] = {}
    for r in records:
        pair = (r.agent_id, r.genome_version)
        if pair not in newest or r.recorded_at > newest[pair]:
            newest[pair] = r.recorded_at
    return {pair: floor_window(at, window_s) for pair, at in newest.items()}


def close_windows(deps: Deps, agent_id: str | None = None) -> list[AnomalyDetected]:
    """Close, explicitly (at report time), every window that ended before the deployment's
    time, for each agent version with a detector state or a share of its alias."""
    window_s = deps.settings.rollup_window_s
    until = floor_window(deps.clock.now(), window_s)
    agents = [agent_id] if agent_id is not None else [a.agent_id for a in deps.store.list_agents()]
    pairs: dict[Pair, datetime] = {}
    for agent in agents:
        for state in deps.store.list_detector_states(agent):
            pairs[(agent, state.genome_version)] = until
        alias = deps.store.get_alias(agent)
        for version in alias.weights if alias is not None else {}:
            pairs[(agent, version)] = until
    return detect(deps, pairs)


def detect(deps: Deps, until: Mapping[Pair, datetime]) -> list[AnomalyDetected]:
    """Feed every window of each (agent, version) that starts before `until[pair]` and was not
    fed yet into its detectors (`domain.anomalies`); store the state with the events it makes
    (conditional on its revision: each window fed once, each event written once). Answers
    the events written. A store that is busy or a state that keeps moving is left for the
    next batch or report to catch up on (the KPIs are stored; the watermark did not move)."""
    window_s = deps.settings.rollup_window_s
    try:
        known = _WATERMARKS.setdefault(deps.store, {})
    except TypeError:  # a store that cannot be weakly referenced: no cache
        known = {}
    step = timedelta(seconds=window_s)
    todo = {p: u for p, u in until.items() if p not in known or u > known[p] + step}
    if not todo:
        return []
    emitted: list[AnomalyDetected] = []
    try:
        states = deps.store.get_detector_states(list(todo), window_s)
        for pair, boundary in todo.items():
            emitted += _close(deps, pair, boundary, states.get(pair), known)
    except UnavailableError:
        log.warning("pattern recognition deferred: the store is unavailable", exc_info=True)
    return emitted


def _close(
    deps: Deps,
    pair: Pair,
    until: datetime,
    state: DetectorState | None,
    known: dict[Pair, datetime],
) -> list[AnomalyDetected]:
    agent_id, version = pair
    window_s = deps.settings.rollup_window_s
    emitted: list[AnomalyDetected] = []
    for _ in range(DETECT_RETRIES):
        if state is None:
            state = DetectorState.fresh(agent_id, version, window_s)
        if not state.needs(until):
            break
        # The table's query (strongly consistent), not the index: a rollup this batch wrote
        # must be seen as it is now.
        rollups = [
            r
            for r in deps.store.list_rollups(agent_id, None, state.since, until)
            if r.genome_version == version
        ]
        try:
            while True:
                chunk, rollups = rollups[:WINDOWS_PER_WRITE], rollups[WINDOWS_PER_WRITE:]
                boundary = until if not rollups else rollups[0].window_start
                assert boundary is not None
                nxt, events = advance(state, chunk, boundary, deps.clock.now().isoformat())
                state = deps.store.save_detector_state(nxt, events)
                emitted += events
                if not rollups:
                    break
        except ConflictError:  # a concurrent ingest fed some of them: feed what is left
            log.info("detector state of %s v%d moved; re-reading", agent_id, version)
            state = deps.store.get_detector_states([pair], window_s).get(pair)
            continue
        break
    else:
        log.warning("detector state of %s v%d kept moving; left for later", agent_id, version)
        return emitted
    if state is not None and state.last_window is not None:
        known[pair] = max(known.get(pair, state.last_window), state.last_window)
    return emitted


def report(req: ReportRequest, deps: Deps) -> dict[str, Any]:
    # Its own decision of a previous attempt is not part of what it reports.
    decisions = [d for d in deps.store.list_decisions(req.execution_id) if d.key != REPORT_KEY]
    runs = [r for r in deps.store.list_runs() if r.execution_id == req.execution_id]
    if not decisions and not runs:  # every cycle's discovery decides first
        raise NotFoundError("execution", req.execution_id, field="execution_id")
    # The report closes the windows that ended by now (their AnomalyDetected go out with the
    # detector states); a retried report finds them closed and announces nothing again.
    close_windows(deps)
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
