"""The Batch placement end to end, locally: layer 8 places each segment of evolution-run on
Batch (the deployment asks for it: CHIMERA_PLACEMENT=batch, the switch behind
`chimera run --placement batch`), and batch:submitJob.sync runs the segment job
(gpu_jobs/segment) in a subprocess, as the job definition would in AWS: one job per
segment, never one per generation.

* The torch twin on the CPU gives the Lambda placement's champion for the same seed: the
  same fitness history, the same genes; every segment's cost is reserved, then committed.
* A guest that traps (an agent without a twin: the job evaluates it in the sandbox) is a
  failed fitness with its reason on the Batch path exactly as on the Lambda path.
* A job that crashes fails its task the way batch:submitJob.sync does in AWS
  (States.TaskFailed, the job's DescribeJobs JSON as the Cause: status, status reason,
  each attempt's exit code and log), is not retried (a deterministic failure), the
  segment's cost is still committed, and the run is marked failed with that reason.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from chimera import runtime
from chimera.settings import BUNDLED_AGENTS

from chimera_local.asl import ExecutionFailedError
from chimera_local.workflows import function_arn, handler_for, local_executor, state_machine_arn

# cartpole-linear's ABI (5 genes, 4 observations). Its chimera_act traps unless the first
# agent's first gene is 0: layer 3's smoke call (the default genome, all zeros) passes, the
# evolved candidates trap.
TRAPPING_AGENT = r"""
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "{\"output\":0}")
  (global $top (mut i32) (i32.const 1024))
  (func (export "chimera_abi_version") (result i32) i32.const 1)
  (func (export "chimera_genome_len") (result i32) i32.const 5)
  (func (export "chimera_obs_len") (result i32) i32.const 4)
  (func (export "chimera_reset") i32.const 1024 global.set $top)
  (func (export "chimera_alloc") (param $n i32) (result i32) (local $p i32)
    global.get $top local.set $p
    global.get $top local.get $n i32.add global.set $top
    local.get $p)
  (func (export "chimera_predict") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 12)))
  (func (export "chimera_act") (param i32 i32 i32 i32 i32 i32) (result i32)
    (if (f32.ne (f32.load (local.get 0)) (f32.const 0)) (then unreachable))
    i32.const 0)
)
"""
EVENT = {"execution_id": "batch", "agent_id": "cartpole-linear", "segment_generations": 3}


@pytest.fixture
def trapping_cartpole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cartpole-linear with a trapping module and no twin (the job evaluates in WASM)."""
    agents = tmp_path / "agents"
    shutil.copytree(BUNDLED_AGENTS / "cartpole-linear", agents / "cartpole-linear")
    (agents / "cartpole-linear" / "agent.wasm").write_bytes(wasmtime.wat2wasm(TRAPPING_AGENT))
    manifest_path = agents / "cartpole-linear" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.pop("twin", None)
    manifest_path.write_text(json.dumps(manifest))
    monkeypatch.setenv("CHIMERA_AGENTS_DIR", str(agents))
    runtime.deps.cache_clear()
    return agents


def evolve(
    placement: str, monkeypatch: pytest.MonkeyPatch, on_state=None, **event: Any
) -> tuple[Any, list[dict[str, Any]]]:
    """evolution-run with the real handlers, layer 8 placing every segment on `placement`;
    returns its output (or error) and the failures the `fail` action recorded."""
    monkeypatch.setenv("CHIMERA_PLACEMENT", placement)
    runtime.deps.cache_clear()
    handler_for("discovery")({"action": "discover", "execution_id": EVENT["execution_id"]})
    validated = handler_for("validation")(
        {"action": "validate", "execution_id": EVENT["execution_id"], "agent_id": EVENT["agent_id"]}
    )
    assert validated["ok"], validated
    executor = local_executor(on_state=on_state)
    evolution = function_arn("evolution")
    evolve_ = executor.functions[evolution]
    failures: list[dict[str, Any]] = []

    def recording(request: dict[str, Any]) -> Any:
        if request["action"] == "fail":
            failures.append(request)
        return evolve_(request)

    executor.functions[evolution] = recording
    try:
        out = executor.start(state_machine_arn("evolution-run"), EVENT | event, f"run-{placement}")
    except ExecutionFailedError as exc:
        out = exc
    return out, failures


def run_state(agent_id: str = "cartpole-linear") -> dict[str, Any]:
    store = runtime.deps().store
    (run,) = store.list_runs(agent_id)
    history = store.fitness_history(run.run_id)
    return {
        "status": run.status.value,
        "generation": run.generation,
        "decision": run.decision.split(";")[0],
        "champion": run.best_genes,
        # NaN is a failed evaluation; compare it as text
        "history": json.dumps([(p.generation, p.best, p.mean, p.evaluations) for p in history]),
    }


def ledger(agent_id: str = "cartpole-linear") -> list[Any]:
    store = runtime.deps().store
    (run,) = store.list_runs(agent_id)
    return store.list_ledger(run_id=run.run_id)


def job_logs(home: Path) -> list[str]:
    return [p.read_text() for p in sorted((home / "jobs").glob("*.log"))]


def summaries(home: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for log in job_logs(home)
        for line in log.splitlines()
        if line.startswith("{")
    ]


@pytest.mark.slow
def test_the_batch_and_sagemaker_placements_give_the_lambda_placements_champion(
    home, only_cartpole, tmp_path, monkeypatch
):
    out, failures = evolve("batch", monkeypatch)
    assert not isinstance(out, ExecutionFailedError), failures
    on_batch, batch_ledger = run_state(), ledger()
    jobs = summaries(home)
    segments = -(-on_batch["generation"] // EVENT["segment_generations"])
    assert len(jobs) == len(job_logs(home)) == len(batch_ledger) == segments >= 2
    assert {job["twin"] for job in jobs} == {"linear-step"}  # the torch twin evaluated
    assert sum(job["generations"] for job in jobs) == on_batch["generation"]
    assert {e.placement for e in batch_ledger} == {"batch-gpu-spot"}
    assert all(e.status == "committed" and (e.actual_usd or 0) > 0 for e in batch_ledger)

    monkeypatch.setenv("CHIMERA_HOME", str(tmp_path / "lambda-home"))
    out_lambda, failures_lambda = evolve("lambda", monkeypatch)
    assert not isinstance(out_lambda, ExecutionFailedError), failures_lambda
    assert run_state() == on_batch  # same seed, same champion, same history
    assert {e.placement for e in ledger()} == {"lambda"}
    assert not (tmp_path / "lambda-home" / "jobs").exists()

    # The SageMaker placement: the same segment job as managed-spot training jobs.
    sagemaker_home = tmp_path / "sagemaker-home"
    monkeypatch.setenv("CHIMERA_HOME", str(sagemaker_home))
    out_sagemaker, failures_sagemaker = evolve("sagemaker", monkeypatch)
    assert not isinstance(out_sagemaker, ExecutionFailedError), failures_sagemaker
    assert run_state() == on_batch
    trained = sorted(p.name for p in (sagemaker_home / "training").iterdir() if p.name != "s3")
    assert len(trained) == segments
    assert {e.placement for e in ledger()} == {"sagemaker-spot"}


@pytest.mark.slow
def test_a_trapping_guest_is_a_failed_fitness_on_batch_as_on_lambda(
    home, trapping_cartpole, tmp_path, monkeypatch
):
    out, failures = evolve("batch", monkeypatch)
    on_batch = run_state()
    assert not isinstance(out, ExecutionFailedError), failures
    assert failures == []  # no task failed: the guest's failure is a fitness
    # Every segment's job met the trapping guest in the sandbox, recorded failed fitnesses
    # and succeeded: one job per segment, none retried, and the run went on to its end.
    jobs = summaries(home)
    assert {job["twin"] for job in jobs} == {None}
    assert len(jobs) == -(-on_batch["generation"] // EVENT["segment_generations"]) >= 1
    assert all(job["attempt"] == 1 for job in jobs)
    assert "-1e+300" in on_batch["history"]  # a generation of failed candidates ranks last

    monkeypatch.setenv("CHIMERA_HOME", str(tmp_path / "lambda-home"))
    out_lambda, failures_lambda = evolve("lambda", monkeypatch)
    assert not isinstance(out_lambda, ExecutionFailedError) and failures_lambda == []
    assert run_state() == on_batch


def test_a_crashing_job_fails_the_run_with_the_jobs_reason_and_is_not_retried(
    home, only_cartpole, monkeypatch
):
    def misconfigure_the_job(execution: str, state: str, data: Any) -> None:
        # The job's environment lacks the cloud's settings: it cannot build its store.
        if state == "RunSegmentOnBatch":
            monkeypatch.setenv("CHIMERA_BACKEND", "aws")

    out, failures = evolve("batch", monkeypatch, on_state=misconfigure_the_job)
    assert isinstance(out, ExecutionFailedError) and out.error == "EvolutionRunFailed"
    (run_failure,) = failures
    error = run_failure["error"]
    assert error["Error"] == "States.TaskFailed"
    job = json.loads(error["Cause"])
    assert (job["Status"], job["StatusReason"]) == ("FAILED", "Essential container in task exited")
    assert job["JobName"].endswith("-0")  # (execution, run) hashed, segment 0
    assert job["Parameters"] == {
        "run_id": run_failure["run_id"],
        "execution_id": EVENT["execution_id"],
        "last_generation": "2",
    }
    (attempt,) = job["Attempts"]  # EvaluateOnExit: a deterministic failure exits
    assert attempt["Container"]["ExitCode"] == 1 == job["Container"]["ExitCode"]
    log = Path(attempt["Container"]["LogStreamName"]).read_text()
    assert "CHIMERA_TABLE_NAME" in log  # the log names what was wrong
    # The run records the reason, not an empty string; the segment's cost is committed.
    monkeypatch.setenv("CHIMERA_BACKEND", "local")
    runtime.deps.cache_clear()
    state = run_state()
    assert state["status"] == "failed"
    assert state["decision"].startswith('failed: States.TaskFailed: {"Attempts":[{"Container"')
    assert '"ExitCode":1' in state["decision"]
    (entry,) = ledger()
    assert (entry.placement, entry.status) == ("batch-gpu-spot", "committed")
