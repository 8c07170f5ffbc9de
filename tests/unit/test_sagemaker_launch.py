"""The CLI's SageMaker launcher, driven as `chimera train-segment` drives it: the dry-run
prints the CreateTrainingJob request it would make (image, role, spot, checkpoint URI,
hyperparameters as strings, instance type, environment), a bad request is refused naming
the field, and a real launch without the sagemaker SDK names the extra to install."""

from __future__ import annotations

import argparse
import importlib.util
import json

import pytest

from chimera_local import sagemaker_launch

ARGS = [
    "train-segment",
    "--name", "segment-run-1-g10",
    "--run-id", "run-1",
    "--execution-id", "ex-1",
    "--last-generation", "19",
    "--image", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/chimera-gpu:1",
    "--role", "arn:aws:iam::123456789012:role/chimera-sagemaker",
    "--output-path", "s3://chimera-artifacts/training/",
    "--checkpoint-uri", "s3://chimera-artifacts/checkpoints/run-1/",
    "--instance-type", "ml.g5.2xlarge",
    "--env", "CHIMERA_BACKEND=aws",
]  # fmt: skip


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="chimera")
    sagemaker_launch.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_the_dry_run_prints_the_request_it_would_make(capsys: pytest.CaptureFixture[str]) -> None:
    assert sagemaker_launch.cmd(parse([*ARGS, "--dry-run"])) == 0
    request = json.loads(capsys.readouterr().out)
    assert request["AlgorithmSpecification"] == {
        "TrainingImage": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/chimera-gpu:1",
        "TrainingInputMode": "File",
    }
    assert request["RoleArn"] == "arn:aws:iam::123456789012:role/chimera-sagemaker"
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {
        "MaxRuntimeInSeconds": 3600,
        "MaxWaitTimeInSeconds": 7200,
    }
    assert request["CheckpointConfig"] == {
        "S3Uri": "s3://chimera-artifacts/checkpoints/run-1/",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert request["HyperParameters"] == {
        "job": "segment",
        "run_id": "run-1",
        "execution_id": "ex-1",
        "last_generation": "19",
    }
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.2xlarge"
    assert request["Environment"] == {"CHIMERA_BACKEND": "aws"}
    assert request["OutputDataConfig"] == {"S3OutputPath": "s3://chimera-artifacts/training/"}


def test_on_demand_has_no_max_wait(capsys: pytest.CaptureFixture[str]) -> None:
    assert sagemaker_launch.cmd(parse([*ARGS, "--on-demand", "--dry-run"])) == 0
    request = json.loads(capsys.readouterr().out)
    assert request["EnableManagedSpotTraining"] is False
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["--name", "bad_name"], "trainingJobName"),
        (["--role", "chimera-sagemaker"], "roleArn"),
        (["--checkpoint-uri", "/tmp/ck"], "checkpointConfig.s3Uri"),
        (["--max-runtime", "9000"], "MaxWaitTimeInSeconds"),
        (["--env", "not-a-pair"], "--env"),
    ],
)
def test_a_bad_request_is_refused_naming_the_field(
    change: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sagemaker_launch.cmd(parse([*ARGS, *change, "--dry-run"])) == 2
    err = capsys.readouterr()
    assert named in err.err
    assert err.out == ""


@pytest.mark.skipif(
    importlib.util.find_spec("sagemaker") is not None, reason="the sagemaker extra is installed"
)
def test_a_launch_without_the_sdk_names_the_extra(capsys: pytest.CaptureFixture[str]) -> None:
    assert sagemaker_launch.cmd(parse(ARGS)) == 2
    assert "pip install 'chimera[sagemaker]'" in capsys.readouterr().err
