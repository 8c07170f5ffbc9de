"""Local mode's workflow engine: the deployed ASL files, handlers called in process."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chimera.catalog import (
    GPU_JOB,
    LAYERS,
    STATE_MACHINES,
    asl_path,
    logical_state_machine_name,
    substitute,
)
from chimera.domain.errors import ChimeraError

from chimera_local.asl import AslExecutor

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
    return values


def handler_for(package: str) -> Callable[[Any], Any]:
    module = importlib.import_module(f"functions.{package}.handler")
    context = LambdaContext(f"chimera-{package}", function_arn(package))
    return lambda event: module.lambda_handler(event, context)


class BatchJobError(ChimeraError):
    pass


def run_gpu_job(params: dict[str, Any]) -> dict[str, Any]:
    """batch:submitJob.sync locally: the gpu_jobs entrypoint in a subprocess, waited for."""
    args = [sys.executable, "-m", f"gpu_jobs.{GPU_JOB}.entrypoint"]
    for key, value in sorted(params.get("Parameters", {}).items()):
        args += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(args, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise BatchJobError(
            f"job {params.get('JobName')} exited {proc.returncode}: {proc.stderr.strip()[-500:]}"
        )
    return {"JobName": params.get("JobName"), "Status": "SUCCEEDED"}


def local_executor(on_state: Callable[[str, str, Any], None] | None = None) -> AslExecutor:
    executor = AslExecutor(
        functions={function_arn(pkg): handler_for(pkg) for _, pkg, _ in LAYERS},
        jobs={GPU_JOB_DEFINITION: run_gpu_job},
        on_state=on_state,
    )
    values = substitutions()
    for name in STATE_MACHINES:
        executor.register(
            name, state_machine_arn(name), substitute(asl_path(name).read_text(), values)
        )
    return executor
