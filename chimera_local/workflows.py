"""Local mode's workflow engine: the deployed ASL files, handlers called in process."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chimera.catalog import (
    GPU_JOB,
    LAYERS,
    STATE_MACHINES,
    asl_path,
    logical_state_machine_name,
    substitute,
)
from chimera.runtime import deps
from chimera.services.execution import LOCAL_ARTIFACT_BUCKET
from chimera.settings import LocalSettings

from chimera_local import training
from chimera_local.asl import AslExecutor, Bucket, TaskFailedError
from gpu_jobs.evaluate_population import definition

ACCOUNT = "000000000000"
REGION = "local"


def function_arn(package: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:chimera-{package.replace('_', '-')}"


def state_machine_arn(name: str) -> str:
    return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:chimera-{name}"


GPU_JOB_DEFINITION = f"arn:aws:batch:{REGION}:{ACCOUNT}:job-definition/chimera-{GPU_JOB}:1"
GPU_JOB_QUEUE = f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/chimera-gpu"


@dataclass(frozen=True)
class LambdaContext:
    """What Powertools reads from a Lambda context, for in-process calls."""

    function_name: str
    invoked_function_arn: str
    aws_request_id: str = "local"
    memory_limit_in_mb: int = 1769
    function_version: str = "$LATEST"
    log_group_name: str = "local"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def substitutions() -> dict[str, str]:
    values = {f"{name}FunctionArn": function_arn(pkg) for name, pkg, _ in LAYERS}
    values |= {logical_state_machine_name(n): state_machine_arn(n) for n in STATE_MACHINES}
    values |= {"GpuJobDefinitionArn": GPU_JOB_DEFINITION, "GpuJobQueueArn": GPU_JOB_QUEUE}
    # The SageMaker placement's training job: image and role are names only here (the local
    # stand-in runs the entrypoint on this machine); its CHIMERA_* environment is this one's.
    values |= {
        "TrainingImageUri": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/chimera-gpu:local",
        "SageMakerRoleArn": f"arn:aws:iam::{ACCOUNT}:role/chimera-sagemaker",
        "ChimeraBackend": "local",
        "ChimeraTableName": "local",
        "ChimeraBundleBucket": "local",
        "ChimeraArtifactBucket": LOCAL_ARTIFACT_BUCKET,
    }
    return values


def handler_for(package: str) -> Callable[[Any], Any]:
    module = importlib.import_module(f"functions.{package}.handler")
    context = LambdaContext(f"chimera-{package}", function_arn(package))
    return lambda event: module.lambda_handler(event, context)


ESSENTIAL_CONTAINER_EXITED = "Essential container in task exited"


def _millis() -> int:
    return int(time.time() * 1000)


def _job_log_dir() -> Path:
    settings = deps().settings  # this deployment's, whatever the job's environment says
    home = settings.home if isinstance(settings, LocalSettings) else Path(".chimera")
    return home / "jobs"


def run_gpu_job(params: dict[str, Any]) -> dict[str, Any]:
    """batch:submitJob.sync locally: the job definition's command in a subprocess, waited for.

    Like Batch, the job gets AWS_BATCH_JOB_ID and AWS_BATCH_JOB_ATTEMPT, its output goes to a
    log (here `<home>/jobs/<job id>.log`, named in LogStreamName), a failed attempt is retried
    or not by the job definition's EvaluateOnExit, and the task's result is what the .sync
    integration returns: DescribeJobs' job with its keys capitalised. A failed job fails the
    task with States.TaskFailed and that job as the Cause's JSON (status, status reason,
    each attempt's exit code and log), as in AWS.
    """
    parameters = {str(k): str(v) for k, v in params.get("Parameters", {}).items()}
    job_id = str(uuid.uuid4())
    log_dir = _job_log_dir()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = str(log_dir / f"{job_id}.log")
    command = definition.command(parameters)
    argv = [sys.executable, *command[1:]]  # "python": this interpreter
    env = os.environ | {"AWS_BATCH_JOB_ID": job_id, "MANAGED_BY_AWS": "STARTED_BY_STEP_FUNCTIONS"}
    created = _millis()
    attempts: list[dict[str, Any]] = []
    while True:
        env["AWS_BATCH_JOB_ATTEMPT"] = str(len(attempts) + 1)
        started = _millis()
        with open(log, "a") as out:
            code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
        exit_code = code if code >= 0 else 128 - code  # killed by signal n: 128 + n, as ECS
        attempts.append(
            {
                "Container": {"ExitCode": exit_code, "LogStreamName": log},
                "StartedAt": started,
                "StatusReason": ESSENTIAL_CONTAINER_EXITED,
                "StoppedAt": _millis(),
            }
        )
        if (
            exit_code == 0
            or len(attempts) >= definition.ATTEMPTS
            or definition.action_on_exit(
                exit_code=exit_code, status_reason=ESSENTIAL_CONTAINER_EXITED
            )
            == "EXIT"
        ):
            break
    job = {
        "Attempts": attempts,
        "Container": {"Command": command, "ExitCode": exit_code, "LogStreamName": log},
        "CreatedAt": created,
        "DependsOn": [],
        "JobArn": f"arn:aws:batch:{REGION}:{ACCOUNT}:job/{job_id}",
        "JobDefinition": params.get("JobDefinition"),
        "JobId": job_id,
        "JobName": params.get("JobName"),
        "JobQueue": params.get("JobQueue"),
        "Parameters": parameters,
        "RetryStrategy": definition.RETRY_STRATEGY,
        "StartedAt": attempts[0]["StartedAt"],
        "Status": "SUCCEEDED" if exit_code == 0 else "FAILED",
        "StatusReason": ESSENTIAL_CONTAINER_EXITED,
        "StoppedAt": attempts[-1]["StoppedAt"],
        "Tags": {},
    }
    if exit_code != 0:
        cause = json.dumps(job, separators=(",", ":"), sort_keys=True)
        raise TaskFailedError("States.TaskFailed", cause)
    return job


def bake(seconds: float) -> None:
    """What a Wait (or a retry's back-off) does locally: `seconds` of simulated time pass, and
    the traffic generator drives the jobs they would have brought to every agent under
    experiment (`local_traffic_rate` jobs per second each). Nothing sleeps."""
    from chimera.domain.models import ExperimentStatus

    from chimera_local.traffic import drive

    ports = deps()
    running = ports.store.list_experiments(status=ExperimentStatus.RUNNING)
    if not running or not isinstance(ports.settings, LocalSettings):
        ports.clock.advance(seconds)
        return
    rate = ports.settings.local_traffic_rate
    jobs = max(1, round(rate * seconds))
    for experiment in running:  # together they let `seconds` pass
        drive(ports, experiment.agent_id, jobs=jobs, rate=jobs * len(running) / seconds)


def artifact_bucket(name: str) -> Bucket | None:
    """The S3 bucket a Distributed Map reads its items from and writes its results to: locally
    the deployment's blob store, under the name the execution layer gives it."""
    return deps().store.blobs if name == LOCAL_ARTIFACT_BUCKET else None


def local_executor(on_state: Callable[[str, str, Any], None] | None = None) -> AslExecutor:
    executor = AslExecutor(
        functions={function_arn(pkg): handler_for(pkg) for _, pkg, _ in LAYERS},
        jobs={GPU_JOB_DEFINITION: run_gpu_job, training.RESOURCE: training.run_training_job},
        on_state=on_state,
        sleep=bake,
        buckets=artifact_bucket,
    )
    values = substitutions()
    for name in STATE_MACHINES:
        executor.register(
            name, state_machine_arn(name), substitute(asl_path(name).read_text(), values)
        )
    return executor
