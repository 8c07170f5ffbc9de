"""The local traffic generator: live jobs through the same path as `POST /agents/{id}/jobs`.

`drive` runs `jobs` live jobs on one agent, one after another, each with a fresh job id, and
lets the deployment's clock move on by 1/rate seconds before each (`deps.clock.advance`:
simulated time, nothing sleeps). Each job goes through `chimera.services.jobs.run_job`: routed
by the live alias, run in the sandbox, stored once, its KPI recorded. For a suite whose outcome
arrives later (breast-cancer), the true label from the live data is posted through
`jobs.record_labels` — the path of `POST /kpis` — once `label_delay_s` of simulated time has
passed since the job; labels still waiting when the drive ends are posted then.

A `jobs.Fault` degrades chosen genome versions, slows them, or changes the environment from a
job on, so that detection, canaries and rollback have something real to find. `chimera
traffic` is this function on the command line; the local canary's bake calls it too.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from chimera.domain.errors import GuestError, ValidationFailedError
from chimera.domain.suites import get_suite
from chimera.services import jobs as live
from chimera.services.contracts import JobLabel, JobRequest, LabelRequest
from chimera.services.deps import Deps

LABEL_BATCH = 1000  # POST /kpis takes at most this many labels at once
MAX_JOBS = 1_000_000


@dataclass
class VersionSummary:
    jobs: int = 0
    failures: int = 0
    scores: list[float] = field(default_factory=list)

    @property
    def mean_score(self) -> float | None:
        return sum(self.scores) / len(self.scores) if self.scores else None

    def to_json(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "failures": self.failures,
            "scored": len(self.scores),
            "mean_score": self.mean_score,
        }


@dataclass
class TrafficSummary:
    agent_id: str
    suite: str
    jobs: int = 0
    failures: int = 0
    labels_posted: int = 0
    simulated_s: float = 0.0
    first_job_id: str | None = None
    last_job_id: str | None = None
    versions: dict[int, VersionSummary] = field(default_factory=dict)
    experiments: set[str] = field(default_factory=set)

    def version(self, v: int) -> VersionSummary:
        return self.versions.setdefault(v, VersionSummary())

    def to_json(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "suite": self.suite,
            "jobs": self.jobs,
            "failures": self.failures,
            "labels_posted": self.labels_posted,
            "simulated_s": round(self.simulated_s, 6),
            "first_job_id": self.first_job_id,
            "last_job_id": self.last_job_id,
            "experiments": sorted(self.experiments),
            "versions": {str(v): s.to_json() for v, s in sorted(self.versions.items())},
        }


@dataclass(frozen=True)
class _Pending:
    due: datetime
    label: JobLabel
    version: int
    score: float


def drive(
    deps: Deps,
    agent_id: str,
    jobs: int,
    rate: float = 10.0,
    fault: live.Fault | None = None,
    seed: int = 0,
    label_delay_s: float = 30.0,
) -> TrafficSummary:
    """Run `jobs` live jobs on `agent_id` at `rate` jobs per simulated second.

    Job ids are `traffic-<seed>-<n>`, numbered on from the last drive of this agent and seed
    (a store counter), so each drive's jobs are fresh, and a fresh home with the same seed
    replays the same jobs. A job the agent fails (trap, budget, bad output) is counted, its
    failed KPI recorded by `run_job`; any other error stops the drive.
    """
    if not 1 <= jobs <= MAX_JOBS:
        raise ValidationFailedError("jobs", f"{jobs} is not in [1, {MAX_JOBS:,}]")
    if not 0 < rate <= 1e6:
        raise ValidationFailedError("rate", f"{rate} jobs/s is not in (0, 1,000,000]")
    if not 0 <= label_delay_s <= 86_400 * 365:
        raise ValidationFailedError("label_delay_s", f"{label_delay_s} s is not in [0, a year]")
    agent = deps.store.get_agent(agent_id)
    suite = get_suite(agent.manifest.suite)
    summary = TrafficSummary(agent_id=agent_id, suite=suite.name)
    end = int(deps.store.add_to_counter(f"TRAFFIC#{agent_id}#{seed}", jobs))
    pending: deque[_Pending] = deque()
    for number, n in enumerate(range(end - jobs, end)):
        deps.clock.advance(1.0 / rate)
        summary.simulated_s += 1.0 / rate
        _post_due(deps, pending, summary, deps.clock.now())
        job_id = f"traffic-{seed}-{n}"
        summary.first_job_id = summary.first_job_id or job_id
        summary.last_job_id = job_id
        summary.jobs += 1
        request = JobRequest(agent_id=agent_id, job_id=job_id)
        try:
            result = live.run_job(request, deps, fault=fault, job_number=number)
        except GuestError:
            summary.failures += 1
            stored = deps.store.find_job(agent_id, job_id)
            if stored is not None:
                summary.version(stored.genome_version).failures += 1
                summary.version(stored.genome_version).jobs += 1
            continue
        stats = summary.version(result.genome_version)
        stats.jobs += 1
        if result.experiment_id is not None:
            summary.experiments.add(result.experiment_id)
        if result.score is not None:
            stats.scores.append(result.score)
            continue
        label = suite.live_label(suite.live_input(job_id))  # drawn from the job key
        if result.outcome == "awaiting-label" and label is not None and result.output is not None:
            pending.append(
                _Pending(
                    due=result.at + timedelta(seconds=label_delay_s),
                    label=JobLabel(agent_id=agent_id, job_id=job_id, label=label),
                    version=result.genome_version,
                    score=suite.label_score(result.output, label),
                )
            )
    _post_due(deps, pending, summary, None)
    return summary


def _post_due(
    deps: Deps, pending: deque[_Pending], summary: TrafficSummary, now: datetime | None
) -> None:
    """Post the labels due by `now` (None: all of them), in batches, oldest first."""
    while pending and (now is None or pending[0].due <= now):
        batch: list[_Pending] = []
        while pending and len(batch) < LABEL_BATCH and (now is None or pending[0].due <= now):
            batch.append(pending.popleft())
        live.record_labels(LabelRequest(labels=[p.label for p in batch]), deps)
        for p in batch:
            summary.version(p.version).scores.append(p.score)
        summary.labels_posted += len(batch)


def text(summary: TrafficSummary) -> str:
    """The summary as `chimera traffic` prints it."""
    lines = [
        f"{summary.agent_id} ({summary.suite}): {summary.jobs} job(s) over "
        f"{summary.simulated_s:g} simulated s, {summary.failures} failed, "
        f"{summary.labels_posted} label(s) posted"
    ]
    if summary.first_job_id:
        lines.append(f"  job ids {summary.first_job_id} .. {summary.last_job_id}")
    if summary.experiments:
        lines.append(f"  routed by experiment(s): {', '.join(sorted(summary.experiments))}")
    for version, stats in sorted(summary.versions.items()):
        mean = stats.mean_score
        shown = f"{mean:.4g}" if mean is not None else "-"
        lines.append(
            f"  v{version}: {stats.jobs} job(s), {stats.failures} failed, "
            f"mean score {shown} over {len(stats.scores)}"
        )
    return "\n".join(lines)
