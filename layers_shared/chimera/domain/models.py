"""Pydantic v2 models of Chimera's state. Pure: no I/O, no environment."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chimera.domain.genome import GeneSpec, check_genes, default_genes

AgentId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
RunId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
ExperimentId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,160}$")]
# improvement: the champion must beat the incumbent on the hold-out items (a paired one-sided
# test: ties never churn versions); non_inferiority: no worse than the suite's margin, for a
# change wanted for another reason (a new module version, a cheaper genome).
GateMode = Literal["improvement", "non_inferiority"]

# Sizes and ranges every model at the edge shares (issue 6: a 1 MB string, a 10,000-item
# list and `1e999` were accepted and stored). Every float of a `Frozen` model is finite.
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
MAX_TEXT = 4000  # a reason, a summary, a description
Text = Annotated[str, Field(max_length=MAX_TEXT)]
Name = Annotated[str, Field(min_length=1, max_length=256)]  # ids of jobs, entries, traces
Suite = Annotated[str, Field(min_length=1, max_length=128)]
MAX_VERSION = 99_999_999  # keys hold a genome version as 8 digits
Version = Annotated[int, Field(ge=1, le=MAX_VERSION)]
MAX_GENES = 4096
MAX_POPULATION = 100_000
MAX_AGENTS = 200  # per cycle: one plan item each, and the plan stays far below 256 KB
U64 = 2**64 - 1
EARLIEST = datetime(2020, 1, 1, tzinfo=UTC)  # older: a zero or garbage clock
CLOCK_SKEW = timedelta(minutes=5)  # a measurement from later than this is refused

ABI_VERSION: Literal[1] = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


class Frozen(BaseModel):
    """Immutable, no unknown fields, and no NaN or infinity in any float (JSON has neither:
    pydantic would write them as null, which then fails to read back)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, ser_json_inf_nan="constants"
    )


class ResourceLimits(Frozen):
    fuel_per_call: int = Field(default=200_000_000, gt=0, le=U64)
    memory_pages: int = Field(default=64, gt=0, le=65536)
    wall_ms: int = Field(default=2_000, gt=0, le=86_400_000)
    wasi: bool = False


class AgentManifest(Frozen):
    """What a bundle declares next to its module (manifest.json)."""

    agent_id: AgentId
    abi_version: Literal[1] = ABI_VERSION
    description: Text = ""
    suite: Suite = Field(description="task suite the agent is evaluated on")
    obs_len: int = Field(gt=0, le=4096)
    genome: tuple[GeneSpec, ...] = Field(min_length=1, max_length=MAX_GENES)
    limits: ResourceLimits = ResourceLimits()
    kpis: tuple[Annotated[str, Field(min_length=1, max_length=64)], ...] = Field(
        default=("score", "latency_ms", "fuel", "success"), max_length=64
    )
    module: str = Field(default="agent.wasm", min_length=1, max_length=256)
    # The batched torch form of the policy (gpu_jobs/twins/), checked against this module
    # before a GPU job uses it: "linear" outputs w . obs + b, "linear-step" 1 when that is
    # > 0, else 0 (genes: obs_len weights, then the bias). None: the agent has no GPU path.
    # Left out of the JSON when absent, so manifests without one keep their digests.
    twin: Literal["linear", "linear-step"] | None = Field(
        default=None, exclude_if=lambda v: v is None
    )

    @field_validator("genome")
    @classmethod
    def _unique_genes(cls, genes: tuple[GeneSpec, ...]) -> tuple[GeneSpec, ...]:
        names = [g.name for g in genes]
        if len(set(names)) != len(names):
            raise ValueError("gene names must be unique")
        return genes

    @property
    def genome_len(self) -> int:
        return len(self.genome)

    def default_genes(self) -> tuple[float, ...]:
        return default_genes(self.genome)

    def check_genes(self, genes: tuple[float, ...] | list[float]) -> None:
        """Raise ValidationFailedError naming the first gene out of bounds."""
        check_genes(self.genome, genes)


Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


def manifest_sha256(manifest: AgentManifest) -> str:
    """The manifest's digest over its canonical JSON (what a module version was registered with)."""
    return hashlib.sha256(manifest.model_dump_json().encode()).hexdigest()


def module_blob_key(digest: str) -> str:
    """Where a module's bytes live in the blob store: named by their content, written once."""
    return f"modules/{digest}.wasm"


def manifest_blob_key(digest: str) -> str:
    return f"manifests/{digest}.json"


class ModuleVersion(Frozen):
    """One registered module of an agent: its bytes and manifest, immutable blobs by digest.

    A bundle file can change under us; the version cannot: `key` and `manifest_key` name
    content-addressed blobs that are written once and checked against their digests on read.
    """

    version: int = Field(ge=1)
    digest: Sha256 = Field(description="SHA-256 of the module bytes")
    key: str = Field(min_length=1, max_length=1024, description="blob key of the module bytes")
    manifest_digest: Sha256
    manifest_key: str = Field(min_length=1, max_length=1024, description="blob key of the manifest")
    bundle: str = Field(min_length=1, max_length=1024, description="the bundle it came from")
    discovered_at: datetime = Field(default_factory=utcnow, description="when L1 registered it")
    validated_at: datetime | None = Field(default=None, description="when layer 3 passed it")
    validated_by: str | None = Field(
        default=None, max_length=256, description="the execution whose layer 3 passed it"
    )


class ModuleRejection(Frozen):
    """A module version that failed layer 3; the bundle stays rejected until it changes."""

    version: int = Field(ge=1)
    digest: Sha256
    manifest_digest: Sha256
    bundle: str = Field(min_length=1, max_length=1024)
    problems: tuple[str, ...] = Field(min_length=1, max_length=64)
    at: datetime = Field(default_factory=utcnow)


class Agent(Frozen):
    """An agent id, bound to the bundle that registered it, and its module versions.

    `live` serves (predict, evaluation); `pending` waits for layer 3, which makes it live
    only if it passes; `rejected` is the last version that failed (the live one kept serving).
    `manifest` is the live module's manifest (the pending one's while nothing is live yet).
    Every save is conditional on `revision`.
    """

    manifest: AgentManifest
    bundle: str = Field(
        min_length=1,
        max_length=1024,
        description="the bundle location that first registered this id; no other may claim it",
    )
    live: ModuleVersion | None = None
    pending: ModuleVersion | None = None
    rejected: ModuleRejection | None = None
    versions: int = Field(default=0, ge=0, description="module versions registered so far")
    revision: int = Field(
        default=0, ge=0, description="bumped by every save; saves are conditional on it"
    )
    discovered_at: datetime = Field(default_factory=utcnow)

    @model_validator(mode="before")
    @classmethod
    def _first_layout(cls, data: Any) -> Any:
        """A document from before module versions (module_key and module_digest): its module
        becomes the pending version 1, bound to the bundle folder in its key. Discovery copies
        the bundle's bytes to the blob store again and layer 3 makes it live."""
        if not isinstance(data, dict) or "module_key" not in data:
            return data
        data = dict(data)
        key, digest = str(data.pop("module_key")), data.pop("module_digest", "")
        manifest = AgentManifest.model_validate(data["manifest"])
        m_digest = manifest_sha256(manifest)
        bundle = key.split("/", 1)[0] or key
        data.setdefault("bundle", bundle)
        data.setdefault(
            "pending",
            ModuleVersion(
                version=1,
                digest=digest,
                key=module_blob_key(digest),
                manifest_digest=m_digest,
                manifest_key=manifest_blob_key(m_digest),
                bundle=bundle,
            ),
        )
        data.setdefault("versions", 1)
        return data

    @model_validator(mode="after")
    def _versions(self) -> Agent:
        known = [m.version for m in (self.live, self.pending, self.rejected) if m is not None]
        if not known:
            raise ValueError("an agent needs a live, pending or rejected module version")
        if max(known) > self.versions:
            raise ValueError(f"versions: {self.versions} is below module version {max(known)}")
        return self

    @property
    def agent_id(self) -> str:
        return self.manifest.agent_id

    @property
    def module_digest(self) -> str:
        """The digest of the module that serves (or, while none does, of the newest one)."""
        for m in (self.live, self.pending, self.rejected):
            if m is not None:
                return m.digest
        raise AssertionError("unreachable: checked by _versions")


class Genome(Frozen):
    """An immutable, versioned parameter vector of one agent."""

    agent_id: AgentId
    version: Version
    genes: tuple[float, ...] = Field(min_length=1, max_length=MAX_GENES)
    parent_version: Version | None = None
    source_run: RunId | None = None
    fitness: float | None = None
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def digest(self) -> str:
        blob = json.dumps([self.agent_id, list(self.genes)]).encode()
        return hashlib.sha256(blob).hexdigest()


class Alias(Frozen):
    """Routes jobs across genome versions by weight. `revision` guards concurrent writers."""

    agent_id: AgentId
    name: str = Field(default="live", pattern=r"^[a-z][a-z0-9-]{0,31}$")
    weights: dict[Version, float] = Field(max_length=64)
    revision: int = Field(ge=0)
    updated_at: datetime = Field(default_factory=utcnow)
    experiment_id: ExperimentId | None = Field(
        default=None, description="the experiment that set these weights (its jobs carry it)"
    )
    step: int | None = Field(default=None, ge=0, le=64, description="that experiment's step")

    @field_validator("weights")
    @classmethod
    def _weights(cls, w: dict[int, float]) -> dict[int, float]:
        if not w:
            raise ValueError("weights must name at least one genome version")
        if any(v < 0 for v in w.values()) or not math.isclose(sum(w.values()), 1.0):
            raise ValueError("weights must be non-negative and sum to 1")
        return w

    @property
    def primary_version(self) -> int:
        return max(self.weights.items(), key=lambda kv: (kv[1], kv[0]))[0]


class KpiRecord(Frozen):
    """One measured job. Idempotent by (agent_id, job_id)."""

    agent_id: AgentId
    genome_version: int = Field(ge=0, le=MAX_VERSION)
    job_id: Name
    suite: Suite
    success: bool
    score: float | None = None
    latency_ms: float = Field(ge=0, le=86_400_000, description="at most a day")
    fuel: int = Field(ge=0, le=U64)
    cost_usd: float = Field(ge=0, le=1_000_000, default=0.0)
    reason: Text | None = None
    trace_id: Name | None = None
    recorded_at: datetime = Field(default_factory=utcnow)
    experiment_id: ExperimentId | None = Field(
        default=None, description="the experiment whose alias routed this job (set by Chimera)"
    )
    step: int | None = Field(
        default=None, ge=0, le=64, description="the experiment's weight step it was routed in"
    )

    @field_validator("recorded_at")
    @classmethod
    def _utc(cls, at: datetime) -> datetime:
        """Stored and indexed in UTC; a time without an offset is taken as UTC. A time before
        2020 is no measurement of ours. (A time in the future is refused at ingestion, against
        the deployment's clock: `chimera.services.refinement`.)"""
        at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
        if at < EARLIEST:
            raise ValueError(f"{at.isoformat()} is before {EARLIEST:%Y-%m-%d}")
        return at

    @model_validator(mode="after")
    def _experiment_step(self) -> KpiRecord:
        if (self.experiment_id is None) != (self.step is None):
            raise ValueError("step: experiment_id and step go together")
        return self

    @model_validator(mode="after")
    def _score_when_ok(self) -> KpiRecord:
        if self.success and (self.score is None or not math.isfinite(self.score)):
            raise ValueError("score: a successful job needs a finite score")
        if not self.success and not self.reason:
            raise ValueError("reason: a failed job needs a reason")
        return self


class Strategy(StrEnum):
    GA = "ga"
    CMA_ES = "cma-es"


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class EvolutionRun(BaseModel):
    """One evolution of one agent. The optimizer's state is JSON, never a pickled object."""

    model_config = ConfigDict(extra="forbid")

    run_id: RunId
    agent_id: AgentId
    execution_id: str | None = Field(default=None, description="the execution driving it now")
    suite: str
    strategy: Strategy
    status: RunStatus = RunStatus.RUNNING
    seed: int
    population_size: int = Field(gt=1, le=100_000)
    max_generations: int = Field(gt=0, le=100_000)
    target_fitness: float | None = None
    generation: int = Field(default=0, ge=0, description="generations told so far")
    asked_generation: int | None = None
    optimizer_state: dict[str, Any]
    incumbent_version: int | None = None
    best_fitness: float | None = None
    best_genes: tuple[float, ...] | None = None
    champion_version: int | None = None
    termination: dict[str, Any] | None = Field(
        default=None, description="when to stop: a chimera.domain.termination criterion as JSON"
    )
    stop_reason: str | None = Field(default=None, description="why layer 6 stopped the search")
    gate: GateMode = Field(
        default="improvement", description="what the hold-out gate asks of the champion"
    )
    decision: str | None = None
    revision: int = Field(
        default=0, ge=0, description="bumped by every write; writes are conditional on it"
    )
    lease_until: datetime | None = Field(
        default=None,
        description="execution_id owns the run until then; every step of the owner renews it",
    )
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class Individual(Frozen):
    index: int = Field(ge=0, lt=MAX_POPULATION, description="position in its generation")
    trial_id: int = Field(default=-1, ge=-1, description="the optimizer's trial id (-1: none)")
    genes: tuple[float, ...] = Field(max_length=MAX_GENES)
    fitness: float | None = Field(default=None, description="the first objective, for display")
    objectives: tuple[float, ...] = Field(default=(), max_length=256)
    constraints: tuple[float, ...] = Field(default=(), max_length=256)
    parents: tuple[int, ...] = Field(default=(), max_length=MAX_POPULATION)


class Generation(Frozen):
    """One generation of a run: candidates, then their fitnesses (lineage by parent index)."""

    run_id: RunId
    number: int = Field(ge=0)
    individuals: tuple[Individual, ...] = Field(max_length=MAX_POPULATION)
    evaluated: bool = False

    @property
    def fitnesses(self) -> list[float]:
        return [i.fitness if i.fitness is not None else float("-inf") for i in self.individuals]


class ShardFitness(Frozen):
    """One shard's stored result: its candidates' fitness by index (chimera Fitness JSON) and
    the wall time its evaluation was measured to take (`execution.evaluate_shard`: the shard's
    reads, the module's load and the evaluation, on a monotonic clock, rounded up to the
    millisecond as Lambda bills an invoke). `seconds` is None where nothing was measured: a
    record stored before shards were timed, a shard the Distributed Map recorded as failed
    past its retries, or one an instance job evaluated in a batch (its time is the job's)."""

    shard: int = Field(ge=0)
    fitness: dict[int, dict[str, Any]]
    seconds: float | None = Field(default=None, ge=0)


def measured_seconds(shards: list[ShardFitness]) -> tuple[float | None, int | None]:
    """A generation's measured evaluation seconds, summed over its shards that were timed,
    and the candidates in those shards; (None, None) when none was. One record per shard: a
    retried shard's evaluation counts once (its last write)."""
    timed = [(s.seconds, len(s.fitness)) for s in shards if s.seconds is not None]
    if not timed:
        return None, None
    return math.fsum(t for t, _ in timed), sum(n for _, n in timed)


class FitnessPoint(Frozen):
    run_id: RunId
    generation: int = Field(ge=0)
    best: float
    mean: float
    std: float = Field(ge=0)
    evaluations: int = Field(ge=0)
    evaluation_seconds: float | None = Field(
        default=None,
        ge=0,
        description="the generation's measured shard seconds (measured_seconds); None when no "
        "shard was timed (history stored before they were, or an instance job's batch)",
    )
    measured_evaluations: int | None = Field(
        default=None, ge=0, description="the candidates in the shards `evaluation_seconds` timed"
    )


class Decision(Frozen):
    """What one layer decided, for the report and the audit trail."""

    execution_id: Name
    layer: str = Field(min_length=1, max_length=64)
    summary: Text
    detail: dict[str, Any] = Field(default={}, max_length=64)
    key: str | None = Field(
        default=None,
        max_length=512,
        description="idempotency key, as (run, generation, step): a retried step decides once",
    )
    at: datetime = Field(default_factory=utcnow)


class Quarantined(Frozen):
    """A stored item a reader could not parse: list reads skip it, single reads name it."""

    pk: str
    sk: str
    reason: str = Field(max_length=1000)
    head: str = Field(default="", max_length=200, description="the document's first characters")
    seen_at: datetime = Field(default_factory=utcnow)


class LiveJob(Frozen):
    """One unit of live work an agent did through its alias (`POST /agents/{id}/jobs`).

    Stored once by (agent_id, job_id): a repeated request answers what the first one did.
    Its outcome is known at once (a CartPole episode's return: the KPI is recorded with it) or
    later (a classification, judged when its label arrives through `POST /kpis`, joined by
    job id). The KPI record carries the job's version, experiment and step.
    """

    agent_id: AgentId
    job_id: Name
    suite: Suite
    genome_version: Version
    experiment_id: ExperimentId | None = None
    step: int | None = Field(default=None, ge=0, le=64)
    input: dict[str, Any] = Field(
        default={}, max_length=16, description="what the job was given (a seed, a sample index)"
    )
    output: float | None = Field(default=None, description="the agent's answer (None: failed)")
    outcome: Literal["recorded", "awaiting-label", "failed"]
    reason: Text | None = None
    latency_ms: float = Field(ge=0, le=86_400_000)
    fuel: int = Field(ge=0, le=U64)
    at: datetime


class ExperimentStatus(StrEnum):
    RUNNING = "running"
    CONCLUDED = "concluded"  # promoted or rolled back by the analysis
    STOPPED = "stopped"  # stopped by an operator (its candidate rolled back)


class Verdict(StrEnum):
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled-back"


class GuardrailConfig(Frozen):
    """Non-inferiority margins that stop an experiment when the candidate is worse by more."""

    error_rate_margin: float = Field(
        default=0.02, ge=0, le=1, description="absolute: candidate error rate - incumbent's"
    )
    latency_p95_margin: float = Field(
        default=0.5, ge=0, le=100, description="relative: candidate p95 / incumbent p95 - 1"
    )
    min_samples: int = Field(default=50, ge=2, le=10_000_000, description="per arm, before judging")


class ExperimentConfig(Frozen):
    """How a canary proves a candidate: weight steps, bakes, the test and its margins."""

    steps: tuple[float, ...] = Field(
        default=(0.05, 0.25, 0.5, 1.0),
        min_length=1,
        max_length=16,
        description="the candidate's traffic share at each step; the last one promotes",
    )
    bake_s: int = Field(default=600, ge=1, le=86_400, description="one bake (a Wait state)")
    min_samples: int = Field(
        default=100, ge=2, le=10_000_000, description="per arm and step before moving on"
    )
    max_bakes: int = Field(
        default=8, ge=1, le=1000, description="bakes per step before the step must decide"
    )
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    metric: Literal["mean", "proportion"] = "mean"
    higher_is_better: bool = True
    margin: float = Field(
        default=0.0, ge=0, le=1e12, description="non-inferiority margin of the primary metric"
    )
    srm_threshold: float = Field(default=0.001, gt=0, lt=0.5)
    guardrails: GuardrailConfig = GuardrailConfig()
    analysis: Literal["sequential", "sprt", "welch"] = Field(
        default="sequential",
        description=(
            "the last step's judgement. sequential: the mixture test's confidence sequence; "
            "sprt: Wald's SPRT of 'worse by the margin' against 'worse by margin - mde', which "
            "also rolls back early when the data favour the first; welch: one fixed-horizon test"
        ),
    )
    mde: float | None = Field(
        default=None,
        gt=0,
        le=1e12,
        description="sprt: the effect it is planned for, toward better (default: the margin)",
    )
    power: float = Field(
        default=0.8, gt=0, lt=1, description="sprt: the chance to promote a candidate mde better"
    )

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < w <= 1 for w in steps) or list(steps) != sorted(set(steps)):
            raise ValueError("steps: increasing traffic shares in (0, 1]")
        if steps[-1] != 1.0:
            raise ValueError("steps: the last step gives the candidate all traffic (1.0)")
        return steps

    @model_validator(mode="after")
    def _sprt_planned(self) -> ExperimentConfig:
        if self.analysis == "sprt" and self.mde is None and self.margin == 0.0:
            raise ValueError("mde: analysis sprt needs an mde when the margin is 0")
        if self.analysis == "sprt" and self.power <= self.alpha:
            raise ValueError(f"power: must exceed alpha ({self.alpha})")
        return self

    def sprt_hypotheses(self) -> tuple[float, float]:
        """(null, alternative) for the difference candidate - incumbent under analysis sprt."""
        toward_better = 1.0 if self.higher_is_better else -1.0
        mde = self.margin if self.mde is None else self.mde
        return -toward_better * self.margin, toward_better * (mde - self.margin)


class Experiment(Frozen):
    """A canary of one candidate genome against the live incumbent (layer 5's state).

    The alias moves with the experiment in the same transaction: a weight step, the promotion
    or the rollback, each conditional on the alias revision the experiment last wrote.
    """

    experiment_id: ExperimentId
    agent_id: AgentId
    candidate_version: Version
    incumbent_version: Version
    run_id: RunId | None = Field(default=None, description="the evolution run that proposed it")
    execution_id: Name | None = Field(default=None, description="the canary execution")
    config: ExperimentConfig = ExperimentConfig()
    status: ExperimentStatus = ExperimentStatus.RUNNING
    verdict: Verdict | None = None
    reason: Text | None = None
    step: int = Field(default=0, ge=0, le=16, description="index into config.steps")
    bakes: int = Field(default=0, ge=0, description="bakes analysed in this step")
    p_value: float = Field(default=1.0, ge=0, le=1, description="always-valid, primary metric")
    guardrail_p: float = Field(default=1.0, ge=0, le=1, description="always-valid, error rate")
    alias_revision: int = Field(ge=0, description="the alias revision this experiment wrote")
    revision: int = Field(
        default=0, ge=0, description="bumped by every save; saves are conditional"
    )
    started_at: datetime
    step_started_at: datetime
    concluded_at: datetime | None = None
    statistics: dict[str, Any] = Field(
        default={}, max_length=64, description="the last analysis, as shown by the API"
    )

    @property
    def weight(self) -> float:
        return self.config.steps[self.step]


class ExperimentPoint(Frozen):
    """One analysis of an experiment: the statistic over time (GET /experiments/{id})."""

    experiment_id: ExperimentId
    seq: int = Field(ge=0, le=MAX_VERSION)
    at: datetime
    step: int = Field(ge=0, le=16)
    weight: float = Field(ge=0, le=1)
    n_control: int = Field(ge=0)
    n_treatment: int = Field(ge=0)
    difference: float | None = None
    lower: float | None = None
    upper: float | None = None
    p_value: float = Field(ge=0, le=1)
    srm_p: float | None = Field(default=None, ge=0, le=1)
    error_rate: tuple[float | None, float | None] = (None, None)  # incumbent, candidate
    latency_p95: tuple[float | None, float | None] = (None, None)
    decision: str = Field(max_length=64)
