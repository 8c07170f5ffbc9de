"""sagemaker:createTrainingJob.sync locally, driven as Step Functions drives it: a Task state
whose resource is the SageMaker integration, CreateTrainingJob's parameters as the state
machine passes them (HyperParameters as strings, managed spot, a checkpoint S3 URI), run by
the local stand-in (`chimera_local.training`) through the ASL executor.

* A request the API would refuse (a bad name, spot without enough MaxWaitTimeInSeconds, a
  missing field) fails the task as SageMaker.AmazonSageMakerException with the field named,
  and so does a second job of the same name (a task invoked twice).
* A job whose hyperparameters are bad fails the task with States.TaskFailed and
  DescribeTrainingJob's JSON as the Cause: Failed, its FailureReason the container's
  output/failure naming the field.
* A segment of a run trained as a SageMaker job returns DescribeTrainingJob's shape
  (Completed, model.tar.gz holding the summary) and ends the run where an in-process run of
  the same segment ends.
* A spot interruption (SIGTERM to the container mid-way: it stops after the generation it is
  in and exits 143) is restarted by the stand-in as managed spot restarts it: the checkpoint
  dir comes back from the checkpoint URI, the second attempt resumes, and the run ends
  exactly where the uninterrupted job ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from chimera import runtime
from chimera.settings import BUNDLED_AGENTS

from chimera_local import training
from chimera_local.asl import AslExecutor, ExecutionFailedError
from chimera_local.workflows import handler_for
from gpu_jobs.sagemaker import train
from gpu_jobs.segment.job import run_segment

AGENT = "cartpole-linear"
EXECUTION = "sagemaker-job"
SEED = 20_261_109
POPULATION = 16
LAST_GENERATION = 5  # a segment of six generations

MACHINE = {
    "StartAt": "RunSegmentTraining",
    "States": {
        "RunSegmentTraining": {
            "Type": "Task",
            "Resource": training.RESOURCE,
            "Parameters": {
                "TrainingJobName.$": "$.name",
                "AlgorithmSpecification": {
                    "TrainingImage": "000000000000.dkr.ecr.local.amazonaws.com/chimera-gpu:latest",
                    "TrainingInputMode": "File",
                },
                "RoleArn": "arn:aws:iam::000000000000:role/chimera-sagemaker",
                "HyperParameters.$": "$.hyperparameters",
                "EnableManagedSpotTraining": True,
                "CheckpointConfig": {
                    "S3Uri.$": "$.checkpoints",
                    "LocalPath": "/opt/ml/checkpoints",
                },
                "StoppingCondition": {
                    "MaxRuntimeInSeconds.$": "$.max_runtime",
                    "MaxWaitTimeInSeconds.$": "$.max_wait",
                },
                "OutputDataConfig": {"S3OutputPath": "s3://chimera-artifacts/training/"},
                "ResourceConfig": {
                    "InstanceCount": 1,
                    "InstanceType": "ml.g5.xlarge",
                    "VolumeSizeInGB": 30,
                },
                "Environment": {"CHIMERA_SHARD_SIZE": "8"},
            },
            "End": True,
        }
    },
}


def executor() -> AslExecutor:
    ex = AslExecutor(functions={}, jobs={training.RESOURCE: training.run_training_job})
    ex.register(
        "train", "arn:aws:states:local:000000000000:stateMachine:train", json.dumps(MACHINE)
    )
    return ex


def train_input(name: str, hyperparameters: dict[str, str], **over: Any) -> dict[str, Any]:
    return {
        "name": name,
        "hyperparameters": hyperparameters,
        "checkpoints": f"s3://chimera-artifacts/checkpoints/{name}/",
        "max_runtime": 600,
        "max_wait": 1200,
    } | over


def start(ex: AslExecutor, input_: dict[str, Any], name: str) -> Any:
    return ex.start("arn:aws:states:local:000000000000:stateMachine:train", input_, name)


@pytest.fixture
def deployment(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local deployment with cartpole-linear (its torch twin declared)."""
    agents = tmp_path / "agents"
    shutil.copytree(BUNDLED_AGENTS / AGENT, agents / AGENT)
    monkeypatch.setenv("CHIMERA_AGENTS_DIR", str(agents))
    monkeypatch.setenv("CHIMERA_SHARD_SIZE", "8")
    runtime.deps.cache_clear()
    return home


def start_run() -> str:
    """Discovery, validation, layer 6's choice and layer 7's start, as evolution-run calls them."""
    handler_for("discovery")({"action": "discover", "execution_id": EXECUTION})
    ok = handler_for("validation")(
        {"action": "validate", "execution_id": EXECUTION, "agent_id": AGENT}
    )
    assert ok["ok"], ok
    choice = handler_for("meta_evolution")(
        {"action": "choose", "execution_id": EXECUTION, "agent_id": AGENT}
    )
    choice |= {"population_size": POPULATION, "max_generations": 50}
    started = handler_for("evolution")(
        {
            "action": "start",
            "execution_id": EXECUTION,
            "agent_id": AGENT,
            "choice": choice,
            "seed": SEED,
        }
    )
    return str(started["run_id"])


def outcome(run_id: str) -> dict[str, Any]:
    store = runtime.deps().store
    run = store.get_run(run_id)
    return json.loads(
        json.dumps(
            {
                "generation": run.generation,
                "asked": run.asked_generation,
                "best_fitness": run.best_fitness,
                "best_genes": run.best_genes,
                "optimizer": run.optimizer_state,
                "history": [
                    (p.generation, p.best, p.mean, p.std) for p in store.fitness_history(run_id)
                ],
                "fitness": [
                    [i.fitness for i in store.get_generation(run_id, g).individuals]
                    for g in range(run.generation)
                ],
            }
        )
    )


def segment_hyperparameters(run_id: str) -> dict[str, str]:
    return {"run_id": run_id, "execution_id": EXECUTION, "last_generation": str(LAST_GENERATION)}


# -- the API's own checks -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "named"),
    [
        ({"name": "bad_name!"}, "trainingJobName"),
        ({"name": "-starts-with-a-dash"}, "trainingJobName"),
        ({"name": "x" * 64}, "trainingJobName"),
        ({"max_runtime": 600, "max_wait": 300}, "MaxWaitTimeInSeconds"),
        ({"max_runtime": 0}, "maxRuntimeInSeconds"),
        ({"checkpoints": "file:///tmp/ck"}, "checkpointConfig.s3Uri"),
        ({"hyperparameters": {"last_generation": 5}}, "hyperParameters.last_generation"),
    ],
)
def test_a_request_the_api_refuses_fails_the_task_naming_the_field(
    deployment: Path, over: dict[str, Any], named: str
) -> None:
    ex = executor()
    with pytest.raises(ExecutionFailedError) as err:
        start(ex, train_input("refused", {"run_id": "r"}) | over, "refused")
    assert err.value.error == "SageMaker.AmazonSageMakerException"
    assert named in err.value.cause
    assert "ValidationException" in err.value.cause
    assert not (deployment / "training" / str(over.get("name", "refused"))).exists()


def test_required_fields_are_named() -> None:
    params = json.loads(json.dumps(MACHINE["States"]["RunSegmentTraining"]["Parameters"]))
    for field in ("RoleArn", "OutputDataConfig", "ResourceConfig", "StoppingCondition"):
        request = {k: v for k, v in params.items() if not k.endswith(".$") and k != field}
        request |= {"TrainingJobName": "job", "HyperParameters": {}}
        request["StoppingCondition"] = {"MaxRuntimeInSeconds": 60, "MaxWaitTimeInSeconds": 60}
        if field == "StoppingCondition":
            del request["StoppingCondition"]
        with pytest.raises(training.TaskFailedError) as err:
            training.validate(request)
        assert field[0].lower() + field[1:] in err.value.cause


def test_bad_hyperparameters_fail_the_job_and_a_second_job_of_that_name_is_refused(
    deployment: Path,
) -> None:
    ex = executor()
    bad = train_input("segment-bad", {"run_id": "r1", "execution_id": "e", "last_generation": "x"})
    with pytest.raises(ExecutionFailedError) as err:
        start(ex, bad, "first")
    assert err.value.error == "States.TaskFailed"
    described = json.loads(err.value.cause)
    assert described["TrainingJobStatus"] == "Failed"
    assert described["TrainingJobName"] == "segment-bad"
    assert "hyperparameters.last_generation" in described["FailureReason"]
    assert described["FailureReason"].startswith("AlgorithmError: ")
    assert "ModelArtifacts" not in described
    # the state machine's task invoked again with the same job name
    with pytest.raises(ExecutionFailedError) as again:
        start(ex, bad, "second")
    assert again.value.error == "SageMaker.AmazonSageMakerException"
    assert "already exists" in again.value.cause
    assert "training-job/segment-bad" in again.value.cause


# -- a segment as a training job ----------------------------------------------------------


def reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The same segment run in process (no SageMaker), in a deployment of its own."""
    monkeypatch.setenv("CHIMERA_HOME", str(tmp_path / "reference"))
    runtime.deps.cache_clear()
    run_id = start_run()
    run_segment(run_id, EXECUTION, LAST_GENERATION, runtime.deps(), device="cpu")
    result = outcome(run_id)
    runtime.deps.cache_clear()
    return result


def test_a_segment_trains_as_a_sagemaker_job_and_ends_where_the_segment_ends(
    deployment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = start_run()
    ex = executor()
    described = start(ex, train_input("segment-1", segment_hyperparameters(run_id)), "seg")
    assert described["TrainingJobStatus"] == "Completed"
    assert described["SecondaryStatus"] == "Completed"
    assert described["TrainingJobArn"].endswith(":training-job/segment-1")
    assert described["ModelArtifacts"]["S3ModelArtifacts"] == (
        "s3://chimera-artifacts/training/segment-1/output/model.tar.gz"
    )
    assert described["HyperParameters"] == segment_hyperparameters(run_id)
    assert described["EnableManagedSpotTraining"] is True
    assert described["CheckpointConfig"] == {
        "S3Uri": "s3://chimera-artifacts/checkpoints/segment-1/",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert described["TrainingTimeInSeconds"] >= 1
    assert described["BillableTimeInSeconds"] == described["TrainingTimeInSeconds"]
    assert [t["Status"] for t in described["SecondaryStatusTransitions"]] == [
        "Starting",
        "Downloading",
        "Training",
        "Uploading",
        "Completed",
    ]
    with tarfile.open(deployment / "training" / "segment-1" / "output" / "model.tar.gz") as tar:
        member = tar.extractfile(train.SUMMARY_FILE)
        assert member is not None
        summary = json.load(member)
    assert summary["job"] == "segment" and summary["attempts"] == 1
    assert summary["result"]["run_id"] == run_id
    assert summary["result"]["generation"] == LAST_GENERATION + 1
    assert summary["result"]["twin"] is not None  # evaluated by the torch twin
    assert summary["device"] == "cpu"
    got = outcome(run_id)
    assert got == reference(tmp_path, monkeypatch)


def _training_pids() -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            b"gpu_jobs.sagemaker.train" in cmdline
            and Path(f"/proc/{pid}").stat().st_uid == os.getuid()
        ):
            pids.append(int(pid))
    return pids


def _kill_when(run_id: str, generation: int, killed: list[int]) -> None:
    """The spot reclaim's notice: SIGTERM to the training container (SageMaker's interruption
    notice; the container is killed after it) once the run has told `generation`, read from
    the store the container writes, as another process would."""
    store = runtime.build_deps(runtime.load_settings()).store
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not killed:
        if store.get_run(run_id).generation >= generation:
            for pid in _training_pids():
                os.kill(pid, signal.SIGTERM)
                killed.append(pid)
        time.sleep(0.02)


def test_a_spot_interruption_resumes_from_the_checkpoint_and_ends_as_uninterrupted(
    deployment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = start_run()
    killed: list[int] = []
    killer = threading.Thread(target=_kill_when, args=(run_id, 2, killed))
    killer.start()
    described = start(
        executor(), train_input("segment-spot", segment_hyperparameters(run_id)), "spot"
    )
    killer.join()
    assert len(killed) == 1, "the container was never killed"
    statuses = [t["Status"] for t in described["SecondaryStatusTransitions"]]
    assert statuses == [
        "Starting",
        "Downloading",
        "Training",
        "Interrupted",
        "Starting",
        "Downloading",
        "Training",
        "Uploading",
        "Completed",
    ]
    assert described["TrainingJobStatus"] == "Completed"
    # the checkpoint went to the S3 URI and came back: the second attempt knew the first
    s3 = deployment / "training" / "s3" / "chimera-artifacts" / "checkpoints" / "segment-spot"
    progress = json.loads((s3 / train.PROGRESS_FILE).read_text())
    assert progress["attempts"] == 2
    assert progress["result"]["first_generation"] >= 2  # resumed, not started over
    assert outcome(run_id) == reference(tmp_path, monkeypatch)


def test_a_job_past_its_max_runtime_is_stopped(deployment: Path, tmp_path: Path) -> None:
    params = json.loads(json.dumps(MACHINE["States"]["RunSegmentTraining"]["Parameters"]))
    params = {k.removesuffix(".$"): v for k, v in params.items()}
    params |= {
        "TrainingJobName": "on-demand",
        "HyperParameters": {"run_id": "r", "execution_id": "e", "last_generation": "1"},
        "EnableManagedSpotTraining": False,
        "StoppingCondition": {"MaxRuntimeInSeconds": 1},
        "CheckpointConfig": {"S3Uri": "s3://chimera-artifacts/checkpoints/on-demand/"},
    }
    # MaxRuntimeInSeconds of 1 s: the container (which imports torch) is stopped first
    with pytest.raises(training.TaskFailedError) as err:
        training.run_training_job(params, home=tmp_path)
    described = json.loads(err.value.cause)
    assert (described["TrainingJobStatus"], described["SecondaryStatus"]) == (
        "Stopped",
        "MaxRuntimeExceeded",
    )
    assert "MaxRuntimeExceeded" in described["FailureReason"]
