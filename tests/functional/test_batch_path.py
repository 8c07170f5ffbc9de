"""The Batch path end to end, locally: evolution-run places the evaluation on Batch, and
batch:submitJob.sync runs the gpu_jobs entrypoint in a subprocess, as the job definition
would in AWS.

Layer 8 chooses Batch only for workloads far larger than a test (a GPU host's start-up is
minutes); here its answer is kept but its placement is set to batch, the one thing changed.

* A guest that traps is a failed fitness with its reason on the Batch path exactly as on
  the Lambda path: the job succeeds, the run goes on, and both placements end the run in the
  same state.
* A job that crashes fails its task the way batch:submitJob.sync does in AWS
  (States.TaskFailed, the job's DescribeJobs JSON as the Cause: status, status reason, each
  attempt's exit code and log), is not retried (a deterministic failure), and the run is
  marked failed with that reason.
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
    agents = tmp_path / "agents"
    shutil.copytree(BUNDLED_AGENTS / "cartpole-linear", agents / "cartpole-linear")
    (agents / "cartpole-linear" / "agent.wasm").write_bytes(wasmtime.wat2wasm(TRAPPING_AGENT))
    monkeypatch.setenv("CHIMERA_AGENTS_DIR", str(agents))
    runtime.deps.cache_clear()
    return agents


def evolve(placement: str, on_state=None) -> tuple[Any, list[dict[str, Any]]]:
    """evolution-run with the real handlers; returns its output (or error) and the failures
    the `fail` action recorded."""
    handler_for("discovery")({"action": "discover", "execution_id": EVENT["execution_id"]})
    validated = handler_for("validation")(
        {"action": "validate", "execution_id": EVENT["execution_id"], "agent_id": EVENT["agent_id"]}
    )
    assert validated["ok"], validated
    executor = local_executor(on_state=on_state)
    resources, evolution = function_arn("resources"), function_arn("evolution")
    place, evolve_ = executor.functions[resources], executor.functions[evolution]
    failures: list[dict[str, Any]] = []

    def placed(event: dict[str, Any]) -> Any:
        out = place(event)
        if event["action"] == "place":
            out["placement"] = placement
        return out

    def recording(event: dict[str, Any]) -> Any:
        if event["action"] == "fail":
            failures.append(event)
        return evolve_(event)

    executor.functions[resources], executor.functions[evolution] = placed, recording
    try:
        out = executor.start(state_machine_arn("evolution-run"), EVENT, f"run-{placement}")
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
        "decision": run.decision,
        # NaN is a failed evaluation; compare it as text
        "history": json.dumps([(p.generation, p.best, p.mean) for p in history]),
    }


def job_logs(home: Path) -> list[str]:
    return [p.read_text() for p in sorted((home / "jobs").glob("*.log"))]


@pytest.mark.slow
def test_a_trapping_guest_is_a_failed_fitness_on_batch_as_on_lambda(
    home, trapping_cartpole, tmp_path, monkeypatch
):
    out, failures = evolve("batch")
    on_batch = run_state()
    logs = job_logs(home)
    assert not isinstance(out, ExecutionFailedError), failures
    assert failures == []  # no task failed: the guest's failure is a fitness
    # Every generation's job met the trapping guest, recorded failed fitnesses and succeeded:
    # one job per generation, none retried, and the run went on to its end.
    guest_failed = [log for log in logs if '"failed": "guest trapped' in log]
    assert len(guest_failed) == len(logs) == on_batch["generation"] >= 1

    monkeypatch.setenv("CHIMERA_HOME", str(tmp_path / "lambda-home"))
    runtime.deps.cache_clear()
    out_lambda, failures_lambda = evolve("lambda")
    assert not isinstance(out_lambda, ExecutionFailedError) and failures_lambda == []
    assert run_state() == on_batch
    assert not (tmp_path / "lambda-home" / "jobs").exists()


def test_a_crashing_job_fails_the_run_with_the_jobs_reason_and_is_not_retried(
    home, only_cartpole, monkeypatch
):
    def misconfigure_the_job(execution: str, state: str, data: Any) -> None:
        # The job's environment lacks the cloud's settings: it cannot build its store.
        if state == "EvaluateOnBatch":
            monkeypatch.setenv("CHIMERA_BACKEND", "aws")

    out, failures = evolve("batch", on_state=misconfigure_the_job)
    assert isinstance(out, ExecutionFailedError) and out.error == "EvolutionRunFailed"
    segment_failure, run_failure = failures
    error = segment_failure["error"]
    assert error["Error"] == "States.TaskFailed"
    job = json.loads(error["Cause"])
    assert (job["Status"], job["StatusReason"]) == ("FAILED", "Essential container in task exited")
    assert job["JobName"] == "chimera-evaluate-population"
    assert job["Parameters"] == {"run_id": segment_failure["run_id"]}
    (attempt,) = job["Attempts"]  # EvaluateOnExit: a deterministic failure exits
    assert attempt["Container"]["ExitCode"] == 1 == job["Container"]["ExitCode"]
    log = Path(attempt["Container"]["LogStreamName"]).read_text()
    assert "CHIMERA_TABLE_NAME" in log  # the log names what was wrong
    # The run records the reason, not an empty string; evolution-run records the child.
    monkeypatch.setenv("CHIMERA_BACKEND", "local")
    state = run_state()
    assert state["status"] == "failed"
    assert state["decision"].startswith('failed: States.TaskFailed: {"Attempts":[{"Container"')
    assert '"ExitCode":1' in state["decision"]
    assert run_failure["error"]["Error"] == "States.TaskFailed"
