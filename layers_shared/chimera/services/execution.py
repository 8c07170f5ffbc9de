"""Layer 4: run evaluation batches and single jobs in the sandbox; emit KPIs."""

from __future__ import annotations

import json
import math
import time
import zlib
from typing import Any

import numpy as np

from chimera.domain.errors import NotFoundError, ValidationFailedError
from chimera.domain.events import KpiRecorded
from chimera.domain.models import Agent, Alias, Decision, KpiRecord
from chimera.domain.optimizers import Fitness
from chimera.domain.sandbox import GuestError, finite_number
from chimera.domain.statistics import Moments
from chimera.domain.suites import get_suite
from chimera.ports import AgentRuntime
from chimera.services import modules
from chimera.services.contracts import (
    CollectShardsRequest,
    CollectShardsResult,
    Differences,
    EvaluateShardRequest,
    EvaluateShardResult,
    FailedShard,
    HoldoutRequest,
    HoldoutResult,
    PredictRequest,
    PredictResult,
    Shard,
    StageShardsRequest,
    StageShardsResult,
)
from chimera.services.deps import Deps
from chimera.settings import AwsSettings


def generation_seed(run_seed: int, generation: int) -> int:
    return (run_seed * 1_000_003 + generation * 7_919) % 1_000_000_000


def load_runtime(deps: Deps, agent: Agent) -> AgentRuntime:
    """The agent's live module (a version layer 3 passed), under the live manifest's limits.

    Its bytes come from the blob store by digest and are checked: never from the bundle, which
    an upload may have changed since. NotFoundError while no version is live.
    """
    if agent.live is None:
        raise NotFoundError("validated live module of agent", agent.agent_id)
    return deps.sandbox.instantiate(modules.module_bytes(deps, agent.live), agent.manifest.limits)


def shard_seconds(started: float) -> float:
    """Seconds since `started` (time.perf_counter: monotonic), rounded up to the millisecond
    as Lambda bills an invoke's duration (1 ms at least)."""
    return max(1, math.ceil((time.perf_counter() - started) * 1000)) / 1000


def evaluate_shard(req: EvaluateShardRequest, deps: Deps) -> EvaluateShardResult:
    """Evaluate a shard's candidates in the sandbox and store their fitness with the seconds
    the work took (its reads, the module's load and the evaluation; not the write after it):
    layer 8 prices the Lambda placement's evaluator from them. A retried shard's write
    replaces the first (one record per shard), so its seconds count once."""
    started = time.perf_counter()
    run = deps.store.get_run(req.run_id)
    generation = deps.store.get_generation(req.run_id, req.generation)
    individuals = generation.individuals[req.start : req.stop]
    if not individuals:
        raise ValidationFailedError("start", f"shard [{req.start}, {req.stop}) is empty")
    agent = deps.store.get_agent(run.agent_id)
    genomes = np.array([i.genes for i in individuals], dtype=np.float32)
    failed = None
    try:
        result = get_suite(run.suite).evaluate(
            load_runtime(deps, agent), genomes, seed=generation_seed(run.seed, req.generation)
        )
        # A non-finite score is a failed evaluation (NaN ranks last in every optimizer); so is
        # a candidate the suite failed (a NaN action). The shard fails when all of them did.
        fitness = [Fitness((float(f) if math.isfinite(f) else math.nan,)) for f in result.fitness]
        if result.failures and len(result.failures) == len(individuals):
            failed = f"every candidate failed: {next(iter(result.failures.values()))}"
    except GuestError as exc:
        # A whole-shard failure (a trap, a budget, a bad module) fails every candidate in it.
        failed, fitness = exc.reason, [Fitness((math.nan,))] * len(individuals)
    deps.store.put_shard_fitness(
        req.run_id,
        req.generation,
        req.shard,
        {i.index: f.to_json() for i, f in zip(individuals, fitness, strict=True)},
        seconds=shard_seconds(started),
    )
    return EvaluateShardResult(shard=req.shard, evaluated=len(individuals), failed=failed)


# -- the Distributed Map over shards -------------------------------------------------------
# Locally the artifact "bucket" is the blob store; the local executor reads and writes it
# under this name (chimera_local.workflows).
LOCAL_ARTIFACT_BUCKET = "chimera-local-artifacts"
_MAX_ERROR = 1000  # characters of a failed shard's error kept with each of its candidates


def _artifact_location(deps: Deps) -> tuple[str, str]:
    """The bucket and key prefix of the blob store (S3Blobs' prefix, normalised as it does)."""
    settings = deps.settings
    if isinstance(settings, AwsSettings):
        prefix = settings.artifact_prefix
        return settings.artifact_bucket, prefix.rstrip("/") + "/" if prefix else ""
    return LOCAL_ARTIFACT_BUCKET, ""


def _staging_key(run_id: str, generation: int) -> str:
    return f"distributed-map/{run_id}/{generation:06d}"


def stage_shards(req: StageShardsRequest, deps: Deps) -> StageShardsResult:
    """Over the threshold, write the generation's shards as a JSON array for the Distributed
    Map's ItemReader and say where its ResultWriter is to write; at or under it, nothing.

    The object's key is the run's and generation's, and its bytes are the shards': a retry
    (or a second run after a crash) writes the same object again.
    """
    for i, shard in enumerate(req.shards):
        if shard.run_id != req.run_id or shard.generation != req.generation:
            raise ValidationFailedError(
                f"shards[{i}]",
                f"shard of {shard.run_id}/{shard.generation}, not {req.run_id}/{req.generation}",
            )
    numbers = [s.shard for s in req.shards]
    if len(set(numbers)) != len(numbers):
        raise ValidationFailedError("shards", "a shard number appears twice")
    count = len(req.shards)
    if count <= deps.settings.distributed_map_threshold:
        return StageShardsResult(distributed=False, shards=count)
    bucket, prefix = _artifact_location(deps)
    base = _staging_key(req.run_id, req.generation)
    items = [s.model_dump(mode="json") for s in req.shards]
    deps.store.blobs.put(f"{base}/shards.json", json.dumps(items, separators=(",", ":")).encode())
    return StageShardsResult(
        distributed=True,
        shards=count,
        bucket=bucket,
        key=f"{prefix}{base}/shards.json",
        results_prefix=f"{prefix}{base}/results",
    )


def _read_json(deps: Deps, bucket: str, key: str, what: str) -> Any:
    """A document the map run wrote, by its S3 key (inside the blob store's prefix)."""
    ours, prefix = _artifact_location(deps)
    if bucket != ours:
        raise ValidationFailedError(what, f"bucket {bucket!r} is not the artifact bucket")
    if not key.startswith(prefix):
        raise ValidationFailedError(what, f"{key!r} is outside the artifact prefix {prefix!r}")
    try:
        return json.loads(deps.store.blobs.get(key[len(prefix) :]))
    except ValueError as exc:
        raise ValidationFailedError(what, f"{key} is not JSON: {exc}") from exc


def _shard_of(entry: Any) -> Shard | None:
    """The shard a child execution evaluated, from its Input (the ItemSelector's output)."""
    try:
        data = entry["Input"]
        return Shard.model_validate(
            {k: v for k, v in json.loads(data).items() if k in Shard.model_fields}
        )
    except (KeyError, TypeError, ValueError):
        return None


def _error_of(entry: dict[str, Any], status: str) -> str:
    if status == "PENDING":
        return "the map run ended before this shard's child execution ran"
    error = str(entry.get("Error") or "States.TaskFailed")
    cause = entry.get("Cause")
    return (f"{error}: {cause}" if cause else error)[:_MAX_ERROR]


def collect_shards(req: CollectShardsRequest, deps: Deps) -> CollectShardsResult:
    """After the Distributed Map: every shard the map run did not complete (failed past its
    retries, or never ran) is recorded against its candidates as failed fitness (NaN) with
    the error, so tell sees every candidate; nothing is dropped in silence.

    Reads the ResultWriter's manifest and its FAILED/PENDING files, and the staged shards (a
    shard in no result file counts as failed too). A shard that has fitness stored keeps it
    (its evaluation landed before its execution failed). Safe to run twice: the second run
    finds the failed shards' fitness written and its decision recorded.
    """
    details = req.map_run.result_writer_details
    manifest = _read_json(deps, details.bucket, details.key, "map_run")
    try:
        files = manifest["ResultFiles"]
        listed = {status: [f["Key"] for f in files.get(status, [])] for status in files}
    except (KeyError, TypeError) as exc:
        raise ValidationFailedError("map_run", f"{details.key} is not a manifest: {exc}") from exc
    staged = _read_json(
        deps,
        details.bucket,
        _artifact_location(deps)[1] + _staging_key(req.run_id, req.generation) + "/shards.json",
        "map_run",
    )
    shards = {s.shard: s for s in (Shard.model_validate(item) for item in staged)}
    outcome: dict[int, str | None] = {}  # shard -> None (succeeded) or its error
    for status in ("SUCCEEDED", "FAILED", "PENDING"):
        for key in listed.get(status, []):
            for entry in _read_json(deps, details.bucket, key, "map_run"):
                shard = _shard_of(entry)
                if shard is None or shard.shard not in shards:
                    continue
                if status == "SUCCEEDED":
                    outcome[shard.shard] = None
                else:
                    outcome.setdefault(shard.shard, _error_of(entry, status))
    for number in shards:
        outcome.setdefault(number, "no result from the map run for this shard")
    stored = deps.store.get_shard_fitness(req.run_id, req.generation)
    failed: list[FailedShard] = []
    for number, error in sorted(outcome.items()):
        if error is None:
            continue
        shard = shards[number]
        failed.append(FailedShard(shard=number, start=shard.start, stop=shard.stop, error=error))
        if all(i in stored for i in range(shard.start, shard.stop)):
            continue  # evaluated before it failed, or recorded by an earlier run of this step
        fitness = Fitness((math.nan,)).to_json() | {"error": error}
        deps.store.put_shard_fitness(
            req.run_id,
            req.generation,
            number,
            dict.fromkeys(range(shard.start, shard.stop), fitness),
        )
    if failed:
        deps.store.add_decision(
            Decision(
                execution_id=req.execution_id,
                layer="execution",
                summary=(
                    f"generation {req.generation}: {len(failed)} of {len(shards)} shard(s) failed "
                    f"past their retries; their {sum(f.stop - f.start for f in failed)} "
                    f"candidate(s) scored as failed ({failed[0].error[:200]})"
                ),
                detail={
                    "run_id": req.run_id,
                    "generation": req.generation,
                    "failed_shards": [f.shard for f in failed],
                },
                key=f"execution:{req.run_id}:{req.generation:06d}:collect",
            )
        )
    return CollectShardsResult(
        shards=len(shards), succeeded=len(shards) - len(failed), failed=failed
    )


def _holdout_kpi(
    deps: Deps, agent: Agent, version: int, run_id: str, seed: int
) -> tuple[KpiRecord, np.ndarray | None]:
    """A version's hold-out KPI, with its outcome on each hold-out item (NaN where it failed)."""
    genome = deps.store.get_genome(agent.agent_id, version)
    suite = get_suite(agent.manifest.suite)
    started = time.perf_counter()
    runtime, items = None, None
    try:
        runtime = load_runtime(deps, agent)
        result = suite.evaluate(
            runtime, np.array([genome.genes], dtype=np.float32), seed=seed, split="holdout"
        )
        reason = result.failures.get(0)
        success, score = reason is None, finite_number(float(result.score[0]))
        if success and score is None:
            success, reason = False, "non-finite score"
        if success and result.items is not None:
            items = np.asarray(result.items[0], dtype=np.float64)
    except GuestError as exc:
        success, score, reason = False, None, exc.reason
    record = KpiRecord(
        agent_id=agent.agent_id,
        genome_version=version,
        job_id=f"{run_id}:holdout:v{version}",
        suite=suite.name,
        success=success,
        score=score,
        reason=reason,
        latency_ms=(time.perf_counter() - started) * 1000,
        fuel=runtime.fuel_used if runtime is not None else 0,
        trace_id=run_id,
    )
    return record, items


def _differences(candidate: np.ndarray | None, incumbent: np.ndarray | None) -> Differences | None:
    """Candidate minus incumbent on the items both scored (the same episodes or samples)."""
    if candidate is None or incumbent is None or candidate.shape != incumbent.shape:
        return None
    diff = candidate - incumbent
    m = Moments.of(diff[np.isfinite(diff)])
    return Differences(n=m.n, mean=m.mean, m2=m.m2)


def holdout(req: HoldoutRequest, deps: Deps) -> HoldoutResult:
    """Score the run's candidate and the live incumbent on the same unseen data."""
    run = deps.store.get_run(req.run_id)
    if run.champion_version is None:
        raise ValidationFailedError("run_id", f"run {req.run_id} has no candidate yet")
    agent = deps.store.get_agent(run.agent_id)
    candidate, cand_items = _holdout_kpi(deps, agent, run.champion_version, run.run_id, run.seed)
    incumbent, inc_items = None, None
    if run.incumbent_version is not None and run.incumbent_version != run.champion_version:
        incumbent, inc_items = _holdout_kpi(
            deps, agent, run.incumbent_version, run.run_id, run.seed
        )
    records = [candidate] if incumbent is None else [candidate, incumbent]
    return HoldoutResult(
        candidate=candidate,
        incumbent=incumbent,
        records=records,
        difference=_differences(cand_items, inc_items),
    )


def route(alias: Alias, job_id: str) -> int:
    """Sticky weighted routing: the same job key always lands on the same version."""
    point = zlib.crc32(job_id.encode()) / 2**32
    acc = 0.0
    for version, weight in sorted(alias.weights.items()):
        acc += weight
        if point < acc:
            return version
    return max(alias.weights)


def predict(req: PredictRequest, deps: Deps) -> PredictResult:
    agent = deps.store.get_agent(req.agent_id)
    if len(req.observation) != agent.manifest.obs_len:
        raise ValidationFailedError(
            "observation", f"expected {agent.manifest.obs_len} values, got {len(req.observation)}"
        )
    alias = deps.store.get_alias(req.agent_id)
    if alias is None:
        raise NotFoundError("live alias of agent", req.agent_id)
    for i, x in enumerate(req.observation):
        if finite_number(x) is None:
            raise ValidationFailedError(f"observation[{i}]", f"{x!r} is not a finite number")
    version = route(alias, req.job_id)
    genome = deps.store.get_genome(req.agent_id, version)
    started = time.perf_counter()
    runtime = None
    score = None
    failure: GuestError | None = None
    try:
        runtime = load_runtime(deps, agent)
        output = runtime.predict({"genome": list(genome.genes), "observation": req.observation})
        # The answer is bounded and finite JSON (the sandbox checked); its output must be a
        # number: anything else is the guest's failure, recorded and answered as one.
        score = finite_number(output.get("output"))
        if score is None:
            failure = GuestError("bad-output", "chimera_predict answered no finite numeric output")
    except GuestError as exc:
        output, failure = {}, exc
    latency = (time.perf_counter() - started) * 1000
    record = KpiRecord(
        agent_id=req.agent_id,
        genome_version=version,
        job_id=req.job_id,
        suite=agent.manifest.suite,
        success=failure is None,
        score=score if failure is None else None,
        reason=failure.reason if failure is not None else None,
        latency_ms=latency,
        fuel=runtime.fuel_used if runtime is not None else 0,
    )
    deps.bus.publish([KpiRecorded(record=record)])
    if failure is not None:
        raise GuestError(failure.kind, failure.reason)
    return PredictResult(
        agent_id=req.agent_id,
        genome_version=version,
        job_id=req.job_id,
        output=output,
        latency_ms=latency,
    )
