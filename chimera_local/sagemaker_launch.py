"""`chimera train-segment`: start a segment's SageMaker training job from the CLI with the
sagemaker SDK's ModelTrainer (the optional extra `sagemaker`, never in the Lambda runtime).

It is the job the state machine's `sagemaker:createTrainingJob.sync` state starts: the same
image and entrypoint (`gpu_jobs.sagemaker.train`), hyperparameters `run_id`, `execution_id`,
`last_generation` as strings, managed spot with MaxWaitTimeInSeconds, and a checkpoint S3 URI.
`build_request` makes CreateTrainingJob's request (checked by the local stand-in's validator,
as the API would check it); `--dry-run` prints it and starts nothing (no SDK, no account
needed); without `--dry-run` the request is handed to `ModelTrainer(...).train(wait=False)`.
The CLI (`chimera_local/cli.py`) wires `add_parser` and `cmd` in. ModelTrainer names the job
`<base_job_name>-<timestamp>`, and building one already asks IAM about the role (sagemaker
3.27's `model_post_init`), hence a dry run that needs neither the SDK nor an account.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from chimera.domain.errors import ValidationFailedError

from chimera_local import training

EXTRA = "sagemaker"
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"


class MissingExtraError(ValidationFailedError):
    """The sagemaker SDK is not installed."""

    def __init__(self) -> None:
        super().__init__(
            "sagemaker",
            f"the sagemaker SDK is not installed: pip install 'chimera[{EXTRA}]' "
            "(an optional extra, kept out of the Lambda runtime)",
        )


def build_request(
    *,
    name: str,
    run_id: str,
    execution_id: str,
    last_generation: int,
    image: str,
    role: str,
    output_path: str,
    checkpoint_uri: str,
    instance_type: str = "ml.g5.xlarge",
    max_runtime: int = 3600,
    max_wait: int = 7200,
    spot: bool = True,
    environment: dict[str, str] | None = None,
) -> dict[str, Any]:
    """CreateTrainingJob's request for one segment, validated as the API validates it."""
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
        "RoleArn": role,
        "HyperParameters": {
            "job": "segment",
            "run_id": run_id,
            "execution_id": execution_id,
            "last_generation": str(last_generation),
        },
        "EnableManagedSpotTraining": spot,
        "CheckpointConfig": {"S3Uri": checkpoint_uri, "LocalPath": CHECKPOINT_LOCAL_PATH},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime}
        | ({"MaxWaitTimeInSeconds": max_wait} if spot else {}),
        "OutputDataConfig": {"S3OutputPath": output_path},
        "ResourceConfig": {"InstanceCount": 1, "InstanceType": instance_type, "VolumeSizeInGB": 30},
        "Environment": dict(environment or {}),
    }
    try:
        training.validate(request)
    except training.TaskFailedError as exc:
        member = re.search(r"at '([^']+)'", exc.cause)
        raise ValidationFailedError(member.group(1) if member else "request", exc.cause) from None
    return request


def model_trainer(request: dict[str, Any]) -> Any:
    """The ModelTrainer that makes `request` (sagemaker>=3: `sagemaker.train.ModelTrainer`)."""
    try:
        from sagemaker.train import ModelTrainer
        from sagemaker.train.configs import (
            CheckpointConfig,
            Compute,
            OutputDataConfig,
            StoppingCondition,
        )
    except ImportError:
        raise MissingExtraError() from None
    resource, stopping = request["ResourceConfig"], request["StoppingCondition"]
    return ModelTrainer(
        training_image=request["AlgorithmSpecification"]["TrainingImage"],
        training_input_mode=request["AlgorithmSpecification"]["TrainingInputMode"],
        role=request["RoleArn"],
        base_job_name=request["TrainingJobName"],
        hyperparameters=request["HyperParameters"],
        environment=request["Environment"],
        compute=Compute(
            instance_type=resource["InstanceType"],
            instance_count=resource["InstanceCount"],
            volume_size_in_gb=resource["VolumeSizeInGB"],
            enable_managed_spot_training=request["EnableManagedSpotTraining"],
        ),
        stopping_condition=StoppingCondition(
            max_runtime_in_seconds=stopping["MaxRuntimeInSeconds"],
            **(
                {"max_wait_time_in_seconds": stopping["MaxWaitTimeInSeconds"]}
                if "MaxWaitTimeInSeconds" in stopping
                else {}
            ),
        ),
        checkpoint_config=CheckpointConfig(
            s3_uri=request["CheckpointConfig"]["S3Uri"],
            local_path=request["CheckpointConfig"]["LocalPath"],
        ),
        output_data_config=OutputDataConfig(
            s3_output_path=request["OutputDataConfig"]["S3OutputPath"]
        ),
    )


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "train-segment", help="start a segment as a SageMaker training job (ModelTrainer)"
    )
    parser.add_argument("--name", required=True, help="the training job's name")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--execution-id", required=True)
    parser.add_argument("--last-generation", required=True, type=int)
    parser.add_argument("--image", required=True, help="the training image URI")
    parser.add_argument("--role", required=True, help="the SageMaker execution role ARN")
    parser.add_argument("--output-path", required=True, help="s3:// for model.tar.gz")
    parser.add_argument("--checkpoint-uri", required=True, help="s3:// for checkpoints")
    parser.add_argument("--instance-type", default="ml.g5.xlarge")
    parser.add_argument("--max-runtime", type=int, default=3600)
    parser.add_argument("--max-wait", type=int, default=7200)
    parser.add_argument("--on-demand", action="store_true", help="no managed spot")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="container env"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the request only")
    return parser


def cmd(args: argparse.Namespace) -> int:
    environment: dict[str, str] = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"--env: {item!r} is not NAME=VALUE", file=sys.stderr)
            return 2
        environment[key] = value
    try:
        request = build_request(
            name=args.name,
            run_id=args.run_id,
            execution_id=args.execution_id,
            last_generation=args.last_generation,
            image=args.image,
            role=args.role,
            output_path=args.output_path,
            checkpoint_uri=args.checkpoint_uri,
            instance_type=args.instance_type,
            max_runtime=args.max_runtime,
            max_wait=args.max_wait,
            spot=not args.on_demand,
            environment=environment,
        )
        if args.dry_run:
            print(json.dumps(request, indent=2, sort_keys=True))
            return 0
        model_trainer(request).train(wait=False)
    except ValidationFailedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"started training job {request['TrainingJobName']}")
    return 0
