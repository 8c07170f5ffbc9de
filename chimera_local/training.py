"""`sagemaker:createTrainingJob.sync` locally: the training image's entrypoint in a subprocess.

`run_training_job(params)` takes CreateTrainingJob's parameters as the state machine passes
them and:

* validates them as the API does (required fields, the job-name pattern, the role ARN,
  hyperparameters and environment as string maps of at most 100 entries, S3 URIs,
  MaxWaitTimeInSeconds present and at least MaxRuntimeInSeconds with managed spot); a refused
  request, and a second job of a name already used, fail the task as Step Functions reports
  a SageMaker ValidationException (`SageMaker.AmazonSageMakerException`);
* lays out the container's `/opt/ml` under `<home>/training/<TrainingJobName>/`
  (input/config/hyperparameters.json, resourceconfig.json, inputdataconfig.json, model/,
  output/, checkpoints/) and runs `gpu_jobs.sagemaker.ENTRYPOINT train` on the CPU with the
  request's Environment, SM_* variables and `CHIMERA_SM_ROOT` naming the tree;
* downloads each InputDataConfig channel (S3DataSource, S3DataType S3Prefix, File mode) into
  `input/data/<channel>/` from the local stand-in of its bucket (`bucket_dir`: the
  deployment's blob store for the artifact bucket, `<home>/training/s3/<bucket>/` for any
  other), as SageMaker copies every object under the prefix; a prefix with no object fails
  the job (ClientError), as SageMaker's does;
* keeps CheckpointConfig.S3Uri's contents under `<home>/training/s3/<bucket>/<key>`: copied
  into the job's checkpoint dir before each attempt and back after it, as SageMaker syncs
  the dir to S3 and restores it when a spot job restarts;
* treats an attempt killed by a signal (the instance reclaimed) as a managed-spot
  interruption: with EnableManagedSpotTraining it starts again (SecondaryStatus Interrupted,
  then Starting...) while MaxWaitTimeInSeconds allows; without it the job fails;
* stops an attempt past MaxRuntimeInSeconds (SIGTERM, then SIGKILL after a grace period):
  TrainingJobStatus Stopped, SecondaryStatus MaxRuntimeExceeded;
* tars model/ into `output/model.tar.gz`, uploads it to
  `<S3OutputPath>/<TrainingJobName>/output/model.tar.gz` in that bucket's stand-in (where the
  next state reads ModelArtifacts.S3ModelArtifacts), and returns DescribeTrainingJob's
  response, which
  is what the .sync integration returns (times as epoch milliseconds, as Step Functions
  writes them). A Failed or Stopped job fails the task with States.TaskFailed and that
  response as the Cause's JSON, FailureReason read from the container's output/failure.

BillableTimeInSeconds equals TrainingTimeInSeconds here: there is no spot price locally
(layer 8 prices the placement from its table, not from this figure).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from chimera.runtime import deps
from chimera.services.execution import LOCAL_ARTIFACT_BUCKET
from chimera.settings import LocalSettings

from chimera_local.asl import TaskFailedError
from chimera_local.blobs import FileBlobs
from gpu_jobs.sagemaker import ENTRYPOINT, conventions

RESOURCE = "arn:aws:states:::sagemaker:createTrainingJob.sync"
ACCOUNT = "000000000000"
REGION = "local"
DEFAULT_CHECKPOINT_PATH = "/opt/ml/checkpoints"
STOP_GRACE_SECONDS = 10.0  # SIGTERM, then this long before SIGKILL
EXIT_STOPPED = 143  # 128 + SIGTERM: the entrypoint stopped by SIGTERM before its end

_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_ROLE = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$")
_S3 = re.compile(r"^(https|s3)://([^/]+)/?(.*)$")
_ENV_KEY = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,511}$")
_INPUT_MODES = ("Pipe", "File", "FastFile")
_CHANNEL = re.compile(r"^[A-Za-z0-9\.\-_]+$")
_S3_DATA_TYPES = ("ManifestFile", "S3Prefix", "AugmentedManifestFile")
MAX_CHANNELS = 20


def _home() -> Path:
    settings = deps().settings
    return settings.home if isinstance(settings, LocalSettings) else Path(".chimera")


def _refuse(message: str) -> TaskFailedError:
    cause = (
        f"{message} (Service: AmazonSageMaker; Status Code: 400; "
        "Error Code: ValidationException; Request ID: local)"
    )
    return TaskFailedError("SageMaker.AmazonSageMakerException", cause)


def _constraint(value: Any, member: str, constraint: str) -> TaskFailedError:
    return _refuse(
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
        f"constraint: {constraint}"
    )


def _require(params: dict[str, Any], path: str) -> Any:
    node: Any = params
    for part in path.split("."):
        if not isinstance(node, dict) or node.get(part) is None:
            return _fail_missing(path)
        node = node[part]
    return node


def _fail_missing(path: str) -> Any:
    member = path[0].lower() + path[1:]
    raise _constraint(None, member, "Member must not be null")


def _string_map(
    params: dict[str, Any], field: str, key: re.Pattern[str] | None, limit: int
) -> None:
    values = params.get(field)
    if values is None:
        return
    member = field[0].lower() + field[1:]
    if not isinstance(values, dict):
        raise _constraint(values, member, "Member must be a map of strings")
    if len(values) > 100:
        raise _constraint(len(values), member, "Member must have length less than or equal to 100")
    for k, v in values.items():
        if key is not None and not key.match(k):
            raise _constraint(
                k, f"{member}.{k}", f"Member must satisfy regular expression pattern: {key.pattern}"
            )
        if not isinstance(v, str):
            raise _constraint(v, f"{member}.{k}", "Member must be a string")
        if len(v) > limit:
            raise _constraint(
                v[:40], f"{member}.{k}", f"Member must have length less than or equal to {limit}"
            )


def validate(params: Any) -> None:
    """CreateTrainingJob's own checks; the first failure is raised as the API words it."""
    if not isinstance(params, dict):
        raise _refuse("the request must be a JSON object")
    name = _require(params, "TrainingJobName")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _constraint(
            name,
            "trainingJobName",
            f"Member must satisfy regular expression pattern: {_NAME.pattern}",
        )
    mode = _require(params, "AlgorithmSpecification.TrainingInputMode")
    if mode not in _INPUT_MODES:
        raise _constraint(
            mode,
            "algorithmSpecification.trainingInputMode",
            f"Member must satisfy enum value set: {list(_INPUT_MODES)}",
        )
    _require(params, "AlgorithmSpecification.TrainingImage")
    role = _require(params, "RoleArn")
    if not isinstance(role, str) or not _ROLE.match(role):
        raise _constraint(
            role, "roleArn", f"Member must satisfy regular expression pattern: {_ROLE.pattern}"
        )
    output = _require(params, "OutputDataConfig.S3OutputPath")
    if not isinstance(output, str) or not _S3.match(output):
        raise _constraint(
            output,
            "outputDataConfig.s3OutputPath",
            f"Member must satisfy regular expression pattern: {_S3.pattern}",
        )
    for path in ("ResourceConfig.InstanceCount", "ResourceConfig.VolumeSizeInGB"):
        value = _require(params, path)
        if not isinstance(value, int) or value < 1:
            member = ".".join(p[0].lower() + p[1:] for p in path.split("."))
            raise _constraint(value, member, "Member must have value greater than or equal to 1")
    _require(params, "ResourceConfig.InstanceType")
    stopping = _require(params, "StoppingCondition")
    runtime = stopping.get("MaxRuntimeInSeconds", 86_400)
    if not isinstance(runtime, int) or runtime < 1:
        raise _constraint(
            runtime,
            "stoppingCondition.maxRuntimeInSeconds",
            "Member must have value greater than or equal to 1",
        )
    spot = params.get("EnableManagedSpotTraining", False)
    if not isinstance(spot, bool):
        raise _constraint(spot, "enableManagedSpotTraining", "Member must be a boolean")
    wait = stopping.get("MaxWaitTimeInSeconds")
    if spot and wait is None:
        raise _refuse(
            "MaxWaitTimeInSeconds is required in StoppingCondition when "
            "EnableManagedSpotTraining is true"
        )
    if wait is not None and (not isinstance(wait, int) or wait < runtime):
        raise _refuse(
            f"Invalid MaxWaitTimeInSeconds: {wait}. It must be greater than or equal to "
            f"MaxRuntimeInSeconds ({runtime})"
        )
    if wait is not None and not spot:
        raise _refuse("MaxWaitTimeInSeconds is only valid with EnableManagedSpotTraining")
    checkpoint = params.get("CheckpointConfig")
    if checkpoint is not None:
        uri = _require(params, "CheckpointConfig.S3Uri")
        if not isinstance(uri, str) or not _S3.match(uri):
            raise _constraint(
                uri,
                "checkpointConfig.s3Uri",
                f"Member must satisfy regular expression pattern: {_S3.pattern}",
            )
        local = checkpoint.get("LocalPath", DEFAULT_CHECKPOINT_PATH)
        if not isinstance(local, str) or not local.startswith("/"):
            raise _constraint(
                local, "checkpointConfig.localPath", "Member must be an absolute path"
            )
    _string_map(params, "HyperParameters", None, 2500)
    _string_map(params, "Environment", _ENV_KEY, 512)
    _validate_channels(params.get("InputDataConfig"))


def _validate_channels(channels: Any) -> None:
    """InputDataConfig as the API checks it (names, S3 data sources); what the stand-in cannot
    run (another data source or S3DataType, Pipe mode) is refused as well, saying so."""
    if channels is None:
        return
    if not isinstance(channels, list) or not 1 <= len(channels) <= MAX_CHANNELS:
        raise _constraint(
            channels, "inputDataConfig", f"Member must have length between 1 and {MAX_CHANNELS}"
        )
    seen: set[str] = set()
    for i, channel in enumerate(channels):
        where = f"inputDataConfig.{i + 1}"
        if not isinstance(channel, dict):
            raise _constraint(channel, where, "Member must be a structure")
        name = channel.get("ChannelName")
        if name is None:
            raise _constraint(None, f"{where}.member.channelName", "Member must not be null")
        if not isinstance(name, str) or len(name) > 64 or not _CHANNEL.match(name):
            raise _constraint(
                name,
                f"{where}.member.channelName",
                f"Member must satisfy regular expression pattern: {_CHANNEL.pattern}",
            )
        if name in seen:
            raise _refuse(f"Channel names must be unique: {name!r} appears twice")
        seen.add(name)
        source = (channel.get("DataSource") or {}).get("S3DataSource")
        if not isinstance(source, dict):
            raise _refuse(f"{where}.member.dataSource: locally only an S3DataSource is supported")
        kind = source.get("S3DataType")
        if kind not in _S3_DATA_TYPES:
            raise _constraint(
                kind,
                f"{where}.member.dataSource.s3DataSource.s3DataType",
                f"Member must satisfy enum value set: {list(_S3_DATA_TYPES)}",
            )
        uri = source.get("S3Uri")
        if not isinstance(uri, str) or not _S3.match(uri):
            raise _constraint(
                uri,
                f"{where}.member.dataSource.s3DataSource.s3Uri",
                f"Member must satisfy regular expression pattern: {_S3.pattern}",
            )
        if kind != "S3Prefix":
            raise _refuse(f"{where}: S3DataType {kind} is not supported locally (S3Prefix is)")
        if channel.get("InputMode", "File") != "File":
            raise _refuse(f"{where}: InputMode {channel['InputMode']} is not supported locally")


def _arn(name: str) -> str:
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name.lower()}"


def bucket_dir(home: Path, bucket: str) -> Path:
    """Where a bucket's objects lie locally, by key: the deployment's blob store for the
    artifact bucket (its files are named by key), else `<home>/training/s3/<bucket>/`."""
    if bucket == LOCAL_ARTIFACT_BUCKET:
        blobs = deps().store.blobs
        if isinstance(blobs, FileBlobs):
            return blobs.root
    return home / "training" / "s3" / bucket


def _objects(root: Path, prefix: str) -> list[tuple[str, Path]]:
    """(key, file) of every object whose key starts with `prefix` (temporary files of an
    unfinished write, named with a leading dot, are not objects)."""
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            key = path.relative_to(root).as_posix()
            if key.startswith(prefix):
                found.append((key, path))
    return found


def _download_channels(home: Path, job_dir: Path, params: dict[str, Any]) -> str | None:
    """Copy each channel's objects into input/data/<channel>/ (the key past the prefix's last
    `/`); the FailureReason when a channel's prefix holds no object."""
    for channel in params.get("InputDataConfig", []):
        uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
        match = _S3.match(uri)
        assert match is not None  # validated
        prefix = match.group(3)
        base = prefix[: prefix.rfind("/") + 1]
        objects = _objects(bucket_dir(home, match.group(2)), prefix)
        if not objects:
            return (
                f'ClientError: No S3 objects found under S3 URL "{uri}" given in input data '
                f"source. Please ensure that the bucket exists in the selected region, that "
                f"objects exist under that S3 prefix, and that the role has access to them."
            )
        target = job_dir / "input" / "data" / channel["ChannelName"]
        for key, path in objects:
            dest = target / key[len(base) :]
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
    return None


def _upload(home: Path, uri: str, source: Path) -> None:
    """A file to an S3 URI's local stand-in, atomically (a reader sees all of it or none)."""
    match = _S3.match(uri)
    assert match is not None
    dest = bucket_dir(home, match.group(2)) / match.group(3)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(dest)


def _s3_dir(home: Path, uri: str) -> Path:
    match = _S3.match(uri)
    assert match is not None  # validated
    return home / "training" / "s3" / match.group(2) / match.group(3).strip("/")


def _sync(source: Path, target: Path) -> None:
    if source.exists():
        shutil.copytree(source, target, dirs_exist_ok=True)


def _layout(job_dir: Path, params: dict[str, Any]) -> None:
    config = job_dir / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(params.get("HyperParameters", {})))
    resource = params["ResourceConfig"]
    hosts = [f"algo-{i + 1}" for i in range(resource["InstanceCount"])]
    (config / "resourceconfig.json").write_text(
        json.dumps(
            {
                "current_host": hosts[0],
                "hosts": hosts,
                "current_instance_type": resource["InstanceType"],
                "current_group_name": "homogeneousCluster",
                "network_interface_name": "eth0",
            }
        )
    )
    channels = {
        c["ChannelName"]: {
            "TrainingInputMode": params["AlgorithmSpecification"]["TrainingInputMode"],
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
        }
        for c in params.get("InputDataConfig", [])
    }
    (config / "inputdataconfig.json").write_text(json.dumps(channels))
    for sub in ("model", "output/data", "checkpoints", *(f"input/data/{c}" for c in channels)):
        (job_dir / sub).mkdir(parents=True, exist_ok=True)


def _environment(job_dir: Path, params: dict[str, Any], checkpoint_dir: Path) -> dict[str, str]:
    hyperparameters = params.get("HyperParameters", {})
    channels = [c["ChannelName"] for c in params.get("InputDataConfig", [])]
    env = dict(os.environ) | dict(params.get("Environment", {}))
    env |= {
        conventions.ROOT_ENV: str(job_dir),
        conventions.CHECKPOINT_ENV: str(checkpoint_dir),
        "SM_HPS": json.dumps(hyperparameters),
        "SM_MODEL_DIR": str(job_dir / "model"),
        "SM_OUTPUT_DIR": str(job_dir / "output"),
        "SM_OUTPUT_DATA_DIR": str(job_dir / "output" / "data"),
        "SM_INPUT_DIR": str(job_dir / "input"),
        "SM_INPUT_CONFIG_DIR": str(job_dir / "input" / "config"),
        "SM_CHANNELS": json.dumps(channels),
        "SM_CURRENT_HOST": "algo-1",
        "SM_NUM_GPUS": "0",  # locally on the CPU
        "TRAINING_JOB_NAME": params["TrainingJobName"],
        "TRAINING_JOB_ARN": _arn(params["TrainingJobName"]),
    }
    env |= {f"SM_CHANNEL_{c.upper()}": str(job_dir / "input" / "data" / c) for c in channels}
    return env


def _millis() -> int:
    return int(time.time() * 1000)


def _run_attempt(argv: list[str], env: dict[str, str], log: Path, limit: float) -> tuple[int, bool]:
    """One container run: its exit status (negative: killed by that signal) and whether it was
    stopped for running past `limit` seconds."""
    with open(log, "a") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            return proc.wait(timeout=max(limit, 0.001)), False
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return proc.returncode, True


def run_training_job(params: dict[str, Any], *, home: Path | None = None) -> dict[str, Any]:
    """createTrainingJob.sync locally; returns DescribeTrainingJob's response (see module)."""
    validate(params)
    home = _home() if home is None else home
    name = params["TrainingJobName"]
    job_dir = home / "training" / name
    try:
        job_dir.mkdir(parents=True)
    except FileExistsError:
        raise _refuse(
            "Training job names must be unique within an AWS account and region, and a "
            f"training job with this name already exists ({_arn(name)})"
        ) from None
    _layout(job_dir, params)
    checkpoint_config = params.get("CheckpointConfig")
    local_path = (checkpoint_config or {}).get("LocalPath", DEFAULT_CHECKPOINT_PATH)
    checkpoint_dir = (
        job_dir / "checkpoints"
        if local_path.rstrip("/") == DEFAULT_CHECKPOINT_PATH
        else job_dir / "container" / local_path.strip("/")
    )
    s3_checkpoints = _s3_dir(home, checkpoint_config["S3Uri"]) if checkpoint_config else None
    env = _environment(job_dir, params, checkpoint_dir)
    argv = [sys.executable, *ENTRYPOINT[1:], "train"]  # "python": this interpreter
    log = job_dir / "output" / "container.log"
    stopping = params["StoppingCondition"]
    max_runtime = float(stopping.get("MaxRuntimeInSeconds", 86_400))
    spot = bool(params.get("EnableManagedSpotTraining", False))
    max_wait = float(stopping.get("MaxWaitTimeInSeconds", max_runtime))

    created = _millis()
    transitions: list[dict[str, Any]] = []

    def transition(status: str, message: str) -> None:
        now = _millis()
        if transitions:
            transitions[-1]["EndTime"] = now
        transitions.append({"Status": status, "StartTime": now, "StatusMessage": message})

    trained = 0.0
    attempts = 0
    status, secondary, failure = "Failed", "Failed", None
    while True:
        attempts += 1
        transition("Starting", "Preparing the instances for training")
        if attempts == 1 and params.get("InputDataConfig"):
            transition("Downloading", "Downloading input data")
            failure = _download_channels(home, job_dir, params)
            if failure is not None:
                status, secondary = "Failed", "Failed"
                break
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        if s3_checkpoints is not None:
            transition("Downloading", "Downloading the checkpoints from S3")
            _sync(s3_checkpoints, checkpoint_dir)
        (job_dir / "output" / "failure").unlink(missing_ok=True)  # a fresh container each time
        transition("Training", "Training image download completed. Training in progress.")
        began = time.monotonic()
        code, timed_out = _run_attempt(argv, env, log, max_runtime - trained)
        trained += time.monotonic() - began
        if s3_checkpoints is not None:
            _sync(checkpoint_dir, s3_checkpoints)
        if timed_out:
            status, secondary = "Stopped", "MaxRuntimeExceeded"
            failure = f"MaxRuntimeExceeded: the job ran past {int(max_runtime)} s"
            break
        if code == 0:
            status, secondary = "Completed", "Completed"
            break
        if spot and (code < 0 or code == EXIT_STOPPED):  # reclaimed: managed spot restarts
            transition("Interrupted", "The job was interrupted (spot capacity reclaimed)")
            if (_millis() - created) / 1000 >= max_wait:
                status, secondary = "Stopped", "MaxWaitTimeExceeded"
                failure = f"MaxWaitTimeExceeded: the job waited past {int(max_wait)} s"
                break
            continue
        failure_file = job_dir / "output" / "failure"
        reason = failure_file.read_text() if failure_file.exists() else ""
        if code < 0:
            reason = reason or f"the container was killed by signal {-code}"
        failure = f"AlgorithmError: {reason[: conventions.FAILURE_REASON_CHARS]}, exit code: {code}"
        status, secondary = "Failed", "Failed"
        break

    artifacts = (
        f"{params['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{name}/output/model.tar.gz"
    )
    if status == "Completed":
        transition("Uploading", "Uploading generated training model")
        with tarfile.open(job_dir / "output" / "model.tar.gz", "w:gz") as tar:
            for path in sorted((job_dir / "model").rglob("*")):
                tar.add(path, arcname=str(path.relative_to(job_dir / "model")), recursive=False)
        _upload(home, artifacts, job_dir / "output" / "model.tar.gz")
    transition(secondary, "Training job completed" if status == "Completed" else failure or "")
    transitions[-1]["EndTime"] = _millis()
    seconds = max(1, math.ceil(trained))
    described: dict[str, Any] = {
        "TrainingJobName": name,
        "TrainingJobArn": _arn(name),
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "SecondaryStatusTransitions": transitions,
        "HyperParameters": dict(params.get("HyperParameters", {})),
        "AlgorithmSpecification": params["AlgorithmSpecification"],
        "RoleArn": params["RoleArn"],
        "InputDataConfig": params.get("InputDataConfig", []),
        "OutputDataConfig": params["OutputDataConfig"],
        "ResourceConfig": params["ResourceConfig"],
        "StoppingCondition": stopping,
        "Environment": dict(params.get("Environment", {})),
        "EnableManagedSpotTraining": spot,
        "CreationTime": created,
        "TrainingStartTime": transitions[0]["StartTime"],
        "TrainingEndTime": transitions[-1]["EndTime"],
        "LastModifiedTime": transitions[-1]["EndTime"],
        "TrainingTimeInSeconds": seconds,
        "BillableTimeInSeconds": seconds,
    }
    if checkpoint_config is not None:
        described["CheckpointConfig"] = {
            "S3Uri": checkpoint_config["S3Uri"],
            "LocalPath": local_path,
        }
    if status == "Completed":
        described["ModelArtifacts"] = {"S3ModelArtifacts": artifacts}
    else:
        described["FailureReason"] = failure
    (job_dir / "describe.json").write_text(json.dumps(described, indent=2, sort_keys=True))
    if status != "Completed":
        raise TaskFailedError(
            "States.TaskFailed", json.dumps(described, separators=(",", ":"), sort_keys=True)
        )
    return described
