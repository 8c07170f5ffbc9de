"""Layer 4: live jobs — real work routed through the alias, each with an outcome.

`run_job` routes a job by the live alias (sticky by its job key), runs it on the live module (a
version layer 3 passed) with that genome version in the sandbox, under the manifest's limits,
and stores it once by (agent, job id): a retried request answers the stored job and runs
nothing again. An outcome known at once (a CartPole episode's return) is published as a
`KpiRecorded`, which the bus delivers to ingestion; a classification waits for its label, which
`record_labels` joins to the stored job by job id and ingests as the job's KPI. Every KPI of a
job carries the job's version, the experiment and step that routed it, and the job's time.

`Fault` is the local traffic generator's fault and drift injection, for exercising detection
and rollback. It is a parameter of these functions only: no route or event can carry one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from chimera.domain.errors import ConflictError, NotFoundError, ValidationFailedError
from chimera.domain.events import KpiRecorded
from chimera.domain.models import Agent, KpiRecord, LiveJob
from chimera.domain.sandbox import GuestError, finite_number
from chimera.domain.suites import LiveFault, LiveOutcome, get_suite, job_key
from chimera.services import refinement
from chimera.services.contracts import (
    IngestRequest,
    IngestResult,
    JobRequest,
    JobResult,
    LabelRequest,
)
from chimera.services.deps import Deps
from chimera.services.execution import load_runtime, route


class LabelConflictError(ConflictError):
    """A job's label differs from the one already recorded: a label is recorded once."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Drift:
    """The environment changes from the traffic's job number `from_job` on (0: the first job
    of the drive) by `amount` (what that means per suite: `chimera.domain.suites.LiveFault`)."""

    from_job: int
    amount: float

    def __post_init__(self) -> None:
        if self.from_job < 0:
            raise ValueError(f"drift.from_job: {self.from_job} is negative")
        if not math.isfinite(self.amount):
            raise ValueError(f"drift.amount: {self.amount} is not a finite number")


@dataclass(frozen=True)
class Fault:
    """Degrade chosen genome versions' jobs, and change the environment from a job on.

    degrade: version -> factor in [0, 1]. A job served by that version keeps each answer the
        agent gives with probability `factor`; otherwise the answer is replaced by a wrong or
        random one (CartPole: each action of the episode by a fair coin; breast-cancer: the
        predicted class flipped). factor 1 changes nothing, 0 replaces every answer.
    slow: version -> extra milliseconds added to the latency recorded for that version's jobs
        (nothing sleeps).
    drift: from which job of the drive, and by how much, the environment has changed.

    Deterministic: each job's random stream is seeded from its job key and `seed`.
    """

    degrade: Mapping[int, float] = field(default_factory=dict)
    slow: Mapping[int, float] = field(default_factory=dict)
    drift: Drift | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for version, factor in self.degrade.items():
            if not 0.0 <= factor <= 1.0:
                raise ValueError(f"degrade: v{version}'s factor {factor} is not in [0, 1]")
        for version, ms in self.slow.items():
            if not 0.0 <= ms <= 86_400_000:
                raise ValueError(f"slow: v{version}'s {ms} ms is not in [0, 86,400,000]")

    def for_job(self, job_id: str, version: int, job_number: int | None) -> LiveFault:
        drift = 0.0
        if self.drift is not None and job_number is not None and job_number >= self.drift.from_job:
            drift = self.drift.amount
        return LiveFault(
            randomize=1.0 - self.degrade.get(version, 1.0),
            drift=drift,
            seed=job_key(job_id) * 1_000_003 + self.seed,
        )


def _result(job: LiveJob, kpi: KpiRecord | None = None) -> JobResult:
    """The answer of a stored job; `kpi`, when its label has arrived, makes it recorded."""
    outcome = "recorded" if kpi is not None and job.outcome == "awaiting-label" else job.outcome
    score = job.output if job.outcome == "recorded" else None  # known at once: its output
    if kpi is not None:
        score = kpi.score
    return JobResult(
        agent_id=job.agent_id,
        job_id=job.job_id,
        genome_version=job.genome_version,
        outcome=outcome,
        output=job.output,
        score=score,
        reason=job.reason,
        latency_ms=job.latency_ms,
        fuel=job.fuel,
        experiment_id=job.experiment_id,
        step=job.step,
        at=job.at,
    )


def _kpi(job: LiveJob, score: float | None) -> KpiRecord:
    """The job's KPI: idempotent by (agent, job id), at the job's time."""
    return KpiRecord(
        agent_id=job.agent_id,
        genome_version=job.genome_version,
        job_id=job.job_id,
        suite=job.suite,
        success=job.outcome != "failed",
        score=score if job.outcome != "failed" else None,
        reason=job.reason,
        latency_ms=job.latency_ms,
        fuel=job.fuel,
        recorded_at=job.at,
        experiment_id=job.experiment_id,
        step=job.step,
    )


def _find_kpi(deps: Deps, agent_id: str, job_id: str) -> KpiRecord | None:
    try:
        return deps.store.get_kpi(agent_id, job_id)
    except NotFoundError:
        return None


def _answer_stored(job: LiveJob, deps: Deps) -> JobResult:
    """A repeated request: the stored job's answer, running nothing. Its KPI is published
    again only if it is not stored (the first attempt died between storing the job and
    publishing; ingestion is idempotent by job id, so a duplicate costs nothing)."""
    kpi = _find_kpi(deps, job.agent_id, job.job_id)
    if kpi is None and job.outcome != "awaiting-label":
        deps.bus.publish([KpiRecorded(record=_kpi(job, job.output))])
    if job.outcome == "failed":
        kind, _, reason = (job.reason or "").partition(": ")
        raise GuestError(kind or "trap", reason or "the job failed")
    return _result(job, kpi)


def run_job(
    req: JobRequest, deps: Deps, fault: Fault | None = None, job_number: int | None = None
) -> JobResult:
    """Run one live job (or answer the stored one). A guest failure (trap, budget, bad output)
    is recorded as a failed job and KPI, then raised as the GuestError (422 on the API).

    `fault` and `job_number` are the local traffic generator's (see `Fault`)."""
    agent = deps.store.get_agent(req.agent_id)
    stored = deps.store.find_job(req.agent_id, req.job_id)
    if stored is not None:
        return _answer_stored(stored, deps)
    if req.observation is not None and len(req.observation) != agent.manifest.obs_len:
        raise ValidationFailedError(
            "observation", f"expected {agent.manifest.obs_len} values, got {len(req.observation)}"
        )
    alias = deps.store.get_alias(req.agent_id)
    if alias is None:
        raise NotFoundError("live alias of agent", req.agent_id)
    suite = get_suite(agent.manifest.suite)
    job_input = suite.live_input(req.job_id, req.observation)
    version = route(alias, req.job_id)
    genome = deps.store.get_genome(req.agent_id, version)
    live_fault = fault.for_job(req.job_id, version, job_number) if fault is not None else None
    outcome, failure, fuel, latency = _run(deps, agent, genome.genes, job_input, live_fault)
    if fault is not None:
        latency += fault.slow.get(version, 0.0)
    job = LiveJob(
        agent_id=req.agent_id,
        job_id=req.job_id,
        suite=suite.name,
        genome_version=version,
        experiment_id=alias.experiment_id,
        step=alias.step,
        input=job_input,
        output=outcome.output if outcome is not None else None,
        outcome=(
            "failed"
            if failure is not None
            else "recorded"
            if outcome is not None and outcome.score is not None
            else "awaiting-label"
        ),
        reason=f"{failure.kind}: {failure.reason}" if failure is not None else None,
        latency_ms=min(latency, 86_400_000.0),
        fuel=fuel,
        at=deps.clock.now(),
    )
    first = deps.store.put_job(job)
    if first != job:  # a concurrent request with this job id stored its job first
        return _answer_stored(first, deps)
    if job.outcome != "awaiting-label":
        score = outcome.score if outcome is not None else None
        deps.bus.publish([KpiRecorded(record=_kpi(job, score))])
    if failure is not None:
        raise GuestError(failure.kind, failure.reason)
    return _result(job)


def _run(
    deps: Deps,
    agent: Agent,
    genes: Sequence[float],
    job_input: dict[str, object],
    fault: LiveFault | None,
) -> tuple[LiveOutcome | None, GuestError | None, int, float]:
    """The job in the sandbox: (outcome, failure, fuel, latency in ms)."""
    suite = get_suite(agent.manifest.suite)
    started = time.perf_counter()
    runtime = None
    outcome: LiveOutcome | None = None
    failure: GuestError | None = None
    try:
        runtime = load_runtime(deps, agent)
        outcome = suite.run_live(runtime, genes, dict(job_input), fault)
        if finite_number(outcome.output) is None:
            outcome, failure = None, GuestError("bad-output", "non-finite output")
    except GuestError as exc:
        failure = exc
    latency = (time.perf_counter() - started) * 1000
    return outcome, failure, runtime.fuel_used if runtime is not None else 0, latency


def record_labels(req: LabelRequest, deps: Deps) -> IngestResult:
    """Join each label to its stored job and ingest the job's KPI (score: the suite's
    `label_score`), with `req.records`, as one batch through `refinement.ingest`.

    An unknown job is a NotFoundError naming `labels.<i>.job_id`; a job that awaits no label
    (its outcome was known at once, or it failed) a ValidationFailedError naming it; a label
    other than the one already recorded for the job a LabelConflictError (409) naming
    `labels.<i>.label`. The same label again is idempotent: its KPI is not new.
    """
    joined: list[KpiRecord] = []
    seen: dict[tuple[str, str], tuple[int, int]] = {}
    agents: set[str] = set()
    for i, item in enumerate(req.labels):
        key = (item.agent_id, item.job_id)
        if key in seen:
            first, label = seen[key]
            if label != item.label:
                raise LabelConflictError(
                    f"labels.{i}.label",
                    f"job {item.job_id!r} is labelled {label} at labels.{first} of this batch",
                )
            continue
        seen[key] = (i, item.label)
        job, output = _labelled_job(deps, agents, i, item.agent_id, item.job_id)
        kpi = _kpi(job, get_suite(job.suite).label_score(output, item.label))
        recorded = _find_kpi(deps, job.agent_id, job.job_id)
        if recorded is not None:
            if recorded.score != kpi.score:
                raise LabelConflictError(
                    f"labels.{i}.label",
                    f"job {item.job_id!r} of agent {item.agent_id} has its label already "
                    f"(score {recorded.score}); a label is recorded once",
                )
            continue  # the same label again: nothing new
        joined.append(kpi)
    new = 0
    # Every label was checked above and the records are checked first, so a refused batch
    # stores nothing (each part holds at most 1000 records, as IngestRequest takes).
    for part in (req.records, joined):
        if part:
            new += refinement.ingest(IngestRequest(records=list(part)), deps).new
    return IngestResult(received=len(req.records) + len(req.labels), new=new)


def _labelled_job(
    deps: Deps, agents: set[str], i: int, agent_id: str, job_id: str
) -> tuple[LiveJob, float]:
    """The stored job a label names, awaiting its label, and the answer it served."""
    if agent_id not in agents:
        try:
            deps.store.get_agent(agent_id)
        except NotFoundError as exc:
            raise NotFoundError("agent", agent_id, field=f"labels.{i}.agent_id") from exc
        agents.add(agent_id)
    job = deps.store.find_job(agent_id, job_id)
    if job is None:
        raise NotFoundError(f"live job of agent {agent_id}", job_id, field=f"labels.{i}.job_id")
    if job.outcome != "awaiting-label" or job.output is None:
        raise ValidationFailedError(
            f"labels.{i}.job_id",
            f"job {job_id!r} of agent {agent_id} awaits no label (its outcome: {job.outcome})",
        )
    return job, job.output
