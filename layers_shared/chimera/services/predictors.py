"""Layer 5: the performance predictor's training pipeline (statemachines/
predictor-training.asl.json), the Lambda side of it. Torch is never imported here: the
training itself is a SageMaker training job (`python -m gpu_jobs.sagemaker.train` with
hyperparameter `job=predictor`).

* `export_history` (ExportHistory): an agent's evaluated candidates (`history_rows`, read
  through the store's ports) as JSON lines in the artifact bucket under the execution's own
  prefix, and where the training job reads them (its `training` channel), writes its
  model.tar.gz and keeps its checkpoints. Too little history is refused as an outcome (a
  recorded decision, `exported` false), not a failure.
* `install_predictor` (InstallPredictor): model.json from the job's model.tar.gz, validated
  (`parse_model`) and checked against the agent's manifest (suite, the genes by name and
  order), written to `chimera.domain.predictor.blob_key(agent_id)` — where Layer 7's ask reads
  it — unless its held-out R² of fitness is below the floor; either way one decision records
  R², within-10 % and why. A retry of the same execution's install after its decision returns
  that decision and writes nothing (an old retry does not overwrite a newer execution's
  model); one killed between the write and the decision writes the same model again.
* `record_training_failure` (RecordFailure): a failed step's error (a training job's
  FailureReason read out of DescribeTrainingJob's JSON) as a decision, before the machine's
  Fail state.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import tarfile
from collections.abc import Iterator
from typing import Any, Protocol

from chimera.domain.errors import NotFoundError, ValidationFailedError
from chimera.domain.models import Agent, Decision, EvolutionRun, Generation, RunStatus
from chimera.domain.predictor import PredictorModel, blob_key, parse_model
from chimera.services.deps import Deps
from chimera.services.execution import LOCAL_ARTIFACT_BUCKET
from chimera.services.predictor_contracts import (
    ExportHistoryRequest,
    ExportHistoryResult,
    InstallPredictorRequest,
    InstallPredictorResult,
    RecordTrainingFailureRequest,
    RecordTrainingFailureResult,
)
from chimera.settings import AwsSettings

LAYER = "refinement"
JOB = "predictor"  # gpu_jobs.sagemaker.JOBS: what the training job runs
HISTORY_FILE = "history.jsonl"
MODEL_FILE = "model.json"  # gpu_jobs/predictor/train.py's MODEL_FILE, inside model.tar.gz
MAX_ARCHIVE_BYTES = 64 * 1024 * 1024
MAX_MODEL_BYTES = 32 * 1024 * 1024
_KEY_SAFE = re.compile(r"^[A-Za-z0-9_:-][A-Za-z0-9_.:-]{0,79}$")


class HistoryStore(Protocol):
    """What the exporter reads: the RunStore and GenerationStore ports' list and get."""

    def list_runs(
        self, agent_id: str | None = None, status: RunStatus | None = None
    ) -> list[EvolutionRun]: ...
    def get_generation(self, run_id: str, number: int) -> Generation: ...
    def get_agent(self, agent_id: str) -> Agent: ...


def history_rows(store: HistoryStore, agent_id: str) -> Iterator[dict[str, Any]]:
    """Every evaluated candidate of every run of the agent, oldest run first: one row each,
    `{"agent_id", "suite", "run_id", "generation", "gene_names", "genes", "fitness", "kpis"}`
    (`gene_names`: the manifest's, so the model names its inputs and a run can check that it
    fits; `kpis`: the further objectives and the constraint values the run has). Failed
    candidates, and candidates a pre-screen left out, have no fitness: they are not rows;
    neither are candidates of a genome with another number of genes than the manifest's now."""
    names = [g.name for g in store.get_agent(agent_id).manifest.genome]
    for run in store.list_runs(agent_id):
        for number in range(run.generation):  # told generations only
            generation = store.get_generation(run.run_id, number)
            if not generation.evaluated:
                continue
            for ind in generation.individuals:
                if ind.fitness is None or not math.isfinite(ind.fitness):
                    continue
                if len(ind.genes) != len(names):  # an earlier genome of the agent
                    continue
                kpis: dict[str, float] = {}
                for i, v in enumerate(ind.objectives[1:], start=1):
                    kpis[f"objective_{i}"] = v
                for i, v in enumerate(ind.constraints):
                    kpis[f"constraint_{i}"] = v
                yield {
                    "agent_id": run.agent_id,
                    "suite": run.suite,
                    "run_id": run.run_id,
                    "generation": number,
                    "gene_names": names,
                    "genes": list(ind.genes),
                    "fitness": ind.fitness,
                    "kpis": kpis,
                }


# -- where things live in the artifact bucket -------------------------------------------------
def _location(deps: Deps) -> tuple[str, str]:
    """The artifact bucket and the blob store's key prefix in it (S3Blobs normalises it so)."""
    settings = deps.settings
    if isinstance(settings, AwsSettings):
        prefix = settings.artifact_prefix
        return settings.artifact_bucket, prefix.rstrip("/") + "/" if prefix else ""
    return LOCAL_ARTIFACT_BUCKET, ""


def _execution_key(execution_id: str) -> str:
    """The execution's name where it is a safe key segment, else its SHA-1."""
    if _KEY_SAFE.match(execution_id):
        return execution_id
    return hashlib.sha1(execution_id.encode()).hexdigest()


def training_prefix(agent_id: str, execution_id: str) -> str:
    """The blob-store prefix of one execution's data, output and checkpoints."""
    return f"predictor-training/{agent_id}/{_execution_key(execution_id)}"


def _uri(deps: Deps, key: str) -> str:
    bucket, prefix = _location(deps)
    return f"s3://{bucket}/{prefix}{key}"


def _blob_key_of(deps: Deps, uri: str, field: str) -> str:
    """The blob-store key of an S3 URI in the artifact bucket; any other place is refused."""
    bucket, prefix = _location(deps)
    match = re.fullmatch(r"s3://([^/]+)/(.+)", uri)
    if match is None:
        raise ValidationFailedError(field, f"{uri!r} is not an s3://bucket/key URI")
    if match.group(1) != bucket or not match.group(2).startswith(prefix):
        raise ValidationFailedError(field, f"{uri!r} is not in s3://{bucket}/{prefix}")
    return match.group(2)[len(prefix) :]


def _decided(deps: Deps, execution_id: str, key: str) -> Decision | None:
    return next((d for d in deps.store.list_decisions(execution_id) if d.key == key), None)


def _record(deps: Deps, execution_id: str, key: str, summary: str, detail: dict[str, Any]) -> None:
    deps.store.add_decision(
        Decision(
            execution_id=execution_id, layer=LAYER, summary=summary[:4000], detail=detail, key=key
        )
    )


def _agent(deps: Deps, agent_id: str, field: str) -> Agent:
    try:
        return deps.store.get_agent(agent_id)
    except NotFoundError as exc:
        raise NotFoundError("agent", agent_id, field=field) from exc


# -- ExportHistory ------------------------------------------------------------------------------
def export_history(req: ExportHistoryRequest, deps: Deps) -> ExportHistoryResult:
    """The agent's history as the training job's `training` channel, or a recorded refusal."""
    spec = req.input
    _agent(deps, spec.agent_id, "input.agent_id")
    if "job" in spec.hyperparameters:
        raise ValidationFailedError("input.hyperparameters.job", "is set by the state machine")
    lines: list[str] = []
    runs: set[str] = set()
    for row in history_rows(deps.store, spec.agent_id):
        lines.append(json.dumps(row, allow_nan=False))
        runs.add(row["run_id"])
    rows = len(lines)
    key = f"predictor-export:{req.execution_id}"
    common = {"agent_id": spec.agent_id, "rows": rows, "runs": len(runs), "min_r2": spec.min_r2}
    if rows < spec.min_rows:
        reason = (
            f"not enough history to train a predictor: {rows} evaluated candidate(s) in "
            f"{len(runs)} run(s), at least {spec.min_rows} needed"
        )
        _record(deps, req.execution_id, key, f"{spec.agent_id}: {reason}", {"exported": False})
        return ExportHistoryResult(exported=False, reason=reason, **common)
    base = training_prefix(spec.agent_id, req.execution_id)
    deps.store.blobs.put(f"{base}/data/{HISTORY_FILE}", ("\n".join(lines) + "\n").encode())
    result = ExportHistoryResult(
        exported=True,
        reason=f"{rows} evaluated candidates in {len(runs)} run(s) exported",
        training_data=_uri(deps, f"{base}/data/"),
        output_path=_uri(deps, f"{base}/output/"),
        checkpoint_uri=_uri(deps, f"{base}/checkpoints/"),
        hyperparameters={**spec.hyperparameters, "job": JOB},
        **common,
    )
    _record(
        deps,
        req.execution_id,
        key,
        f"{spec.agent_id}: {result.reason} for the predictor's training job",
        {"exported": True, "training_data": result.training_data},
    )
    return result


# -- InstallPredictor ---------------------------------------------------------------------------
def _model_from_archive(data: bytes) -> bytes:
    """model.json's bytes out of a model.tar.gz (SageMaker tars the model dir so)."""
    if len(data) > MAX_ARCHIVE_BYTES:
        raise ValidationFailedError("model_artifacts", f"{len(data)} bytes: too large")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            member = next(
                (m for m in tar.getmembers() if m.name.removeprefix("./") == MODEL_FILE), None
            )
            if member is None or not member.isfile():
                raise ValidationFailedError("model_artifacts", f"no {MODEL_FILE} in the archive")
            if member.size > MAX_MODEL_BYTES:
                raise ValidationFailedError("model_artifacts", f"{MODEL_FILE}: too large")
            extracted = tar.extractfile(member)
            assert extracted is not None  # a regular file
            return extracted.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ValidationFailedError("model_artifacts", f"not a model.tar.gz: {exc}") from None


def _check_fits(model: PredictorModel, agent: Agent) -> None:
    manifest = agent.manifest
    if model.agent_id is not None and model.agent_id != manifest.agent_id:
        raise ValidationFailedError(
            "predictor.agent_id", f"trained for {model.agent_id!r}, not {manifest.agent_id!r}"
        )
    if model.suite != manifest.suite:
        raise ValidationFailedError(
            "predictor.suite", f"{model.suite!r}: the agent's suite is {manifest.suite!r}"
        )
    names = [g.name for g in manifest.genome]
    if list(model.genes) != names:
        raise ValidationFailedError(
            "predictor.genes", f"made for genes {list(model.genes)}, the agent has {names}"
        )
    if model.metrics is None:
        raise ValidationFailedError("predictor.metrics", "no held-out metrics: cannot judge it")


def install_predictor(req: InstallPredictorRequest, deps: Deps) -> InstallPredictorResult:
    """Validate the trained model and install it at `blob_key(agent)` when good enough."""
    key = f"predictor-install:{req.execution_id}"
    before = _decided(deps, req.execution_id, key)
    if before is not None:  # this execution decided already: say so again, write nothing
        return InstallPredictorResult.model_validate({**before.detail, "replayed": True})
    agent = _agent(deps, req.agent_id, "agent_id")
    archive_key = _blob_key_of(deps, req.model_artifacts, "model_artifacts")
    try:
        archive = deps.store.blobs.get(archive_key)
    except NotFoundError as exc:
        raise NotFoundError("model artifacts", req.model_artifacts, "model_artifacts") from exc
    model = parse_model(_model_from_archive(archive))
    _check_fits(model, agent)
    metrics = model.metrics
    assert metrics is not None  # _check_fits
    r2, within = metrics.r2[0], metrics.within_10pct[0]
    installed = r2 >= req.min_r2
    if installed:
        deps.store.blobs.put(blob_key(req.agent_id), model.model_dump_json().encode())
        reason = f"installed: held-out R² {r2:.3f} ≥ {req.min_r2}"
    else:
        reason = f"not installed: held-out R² {r2:.3f} is below the floor {req.min_r2}"
    result = InstallPredictorResult(
        agent_id=req.agent_id,
        installed=installed,
        reason=reason,
        key=blob_key(req.agent_id),
        r2=r2,
        within_10pct=within,
        n_train=metrics.n_train,
        n_test=metrics.n_test,
        split=metrics.split,
    )
    summary = (
        f"{req.agent_id}: predictor {reason}; within 10 %: {within:.1%} of "
        f"{metrics.n_test} held-out rows ({metrics.split}), trained on {metrics.n_train}"
        + (f" by {req.training_job}" if req.training_job else "")
    )
    _record(deps, req.execution_id, key, summary, result.model_dump(mode="json"))
    return result


# -- RecordFailure ------------------------------------------------------------------------------
def _failure_reason(cause: Any) -> str:
    """A training job's FailureReason when the Cause is DescribeTrainingJob's JSON, else the
    Cause as written."""
    text = cause if isinstance(cause, str) else json.dumps(cause)
    try:
        described = json.loads(text)
    except ValueError:
        return text
    if isinstance(described, dict):
        for name in ("FailureReason", "errorMessage"):
            if isinstance(described.get(name), str):
                return str(described[name])
    return text


def record_training_failure(
    req: RecordTrainingFailureRequest, deps: Deps
) -> RecordTrainingFailureResult:
    state = req.state
    agent_id = state.get("agent_id")
    agent = agent_id if isinstance(agent_id, str) else ""
    error = state.get("error") if isinstance(state.get("error"), dict) else {}
    assert isinstance(error, dict)
    name = str(error.get("Error", "unknown"))
    reason = _failure_reason(error.get("Cause", ""))[:2000]
    _record(
        deps,
        req.execution_id,
        f"predictor-failure:{req.execution_id}",
        f"{agent or 'predictor training'}: predictor training failed: {name}: {reason}",
        {"agent_id": agent, "error": name, "reason": reason},
    )
    return RecordTrainingFailureResult(agent_id=agent, error=name, reason=reason)
