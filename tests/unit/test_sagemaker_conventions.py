"""The SageMaker conventions read a tree laid out as SageMaker lays out /opt/ml, and the
training program fails bad input the way SageMaker reports it: a non-zero exit and the reason,
naming the field, in output/failure (DescribeTrainingJob's FailureReason)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chimera.domain.errors import ValidationFailedError

from gpu_jobs.sagemaker import conventions, train


def sagemaker_tree(root: Path, hyperparameters: dict[str, object]) -> dict[str, str]:
    """/opt/ml as a SageMaker training container sees it (a File-mode channel `history`)."""
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "resourceconfig.json").write_text(
        json.dumps(
            {
                "current_host": "algo-1",
                "hosts": ["algo-1"],
                "current_instance_type": "ml.g5.xlarge",
                "current_group_name": "homogeneousCluster",
                "network_interface_name": "eth0",
            }
        )
    )
    (config / "inputdataconfig.json").write_text(
        json.dumps(
            {"history": {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}}
        )
    )
    (root / "input" / "data" / "history").mkdir(parents=True)
    (root / "input" / "data" / "history" / "history.jsonl").write_text("{}\n")
    return {conventions.ROOT_ENV: str(root)}


def test_a_sagemaker_shaped_tree_is_read_as_sagemaker_gives_it(tmp_path: Path) -> None:
    environ = sagemaker_tree(
        tmp_path, {"run_id": "run-1", "execution_id": "ex-1", "last_generation": "12"}
    )
    env = conventions.load(environ | {"SM_NUM_GPUS": "0"})
    assert env.hyperparameters == {
        "run_id": "run-1",
        "execution_id": "ex-1",
        "last_generation": "12",
    }
    assert env.integer("last_generation", minimum=0) == 12
    assert env.string("job", "segment") == "segment"
    assert env.model_dir == tmp_path / "model"
    assert env.output_data_dir == tmp_path / "output" / "data"
    assert env.failure_file == tmp_path / "output" / "failure"
    assert env.checkpoint_dir == tmp_path / "checkpoints"
    assert env.channels == {"history": tmp_path / "input" / "data" / "history"}
    assert (env.channels["history"] / "history.jsonl").exists()
    assert (env.current_host, env.hosts, env.num_gpus) == ("algo-1", ("algo-1",), 0)


def test_the_toolkits_sm_variables_win_and_sm_hps_values_come_back_as_text(
    tmp_path: Path,
) -> None:
    environ = {
        conventions.ROOT_ENV: str(tmp_path),
        "SM_HPS": json.dumps({"last_generation": 7, "run_id": "r", "weights": [1, 2]}),
        "SM_MODEL_DIR": str(tmp_path / "m"),
        "SM_OUTPUT_DATA_DIR": str(tmp_path / "d"),
        "SM_CHANNELS": json.dumps(["train"]),
        "SM_CHANNEL_TRAIN": str(tmp_path / "t"),
        "SM_CURRENT_HOST": "algo-2",
        "SM_HOSTS": json.dumps(["algo-1", "algo-2"]),
        "SM_NUM_GPUS": "4",
        conventions.CHECKPOINT_ENV: str(tmp_path / "ck"),
    }
    env = conventions.load(environ)
    assert env.hyperparameters == {"last_generation": "7", "run_id": "r", "weights": "[1, 2]"}
    assert env.integer("last_generation") == 7
    assert (env.model_dir, env.output_data_dir) == (tmp_path / "m", tmp_path / "d")
    assert env.channels == {"train": tmp_path / "t"}
    assert (env.current_host, env.hosts, env.num_gpus) == ("algo-2", ("algo-1", "algo-2"), 4)
    assert env.checkpoint_dir == tmp_path / "ck"


@pytest.mark.parametrize(
    ("hyperparameters", "field"),
    [
        ({"last_generation": 12}, "hyperparameters.last_generation"),  # not a string: not the API's
        ({"run_id": "r"}, None),  # parses; the accessors below decide
    ],
)
def test_hyperparameters_json_holds_strings_only(
    tmp_path: Path, hyperparameters: dict[str, object], field: str | None
) -> None:
    environ = sagemaker_tree(tmp_path, hyperparameters)
    if field is None:
        env = conventions.load(environ)
        with pytest.raises(ValidationFailedError) as missing:
            env.integer("last_generation")
        assert missing.value.field == "hyperparameters.last_generation"
        return
    with pytest.raises(ValidationFailedError) as err:
        conventions.load(environ)
    assert err.value.field == field


def test_the_accessors_name_the_hyperparameter(tmp_path: Path) -> None:
    env = conventions.load(sagemaker_tree(tmp_path, {"n": "twelve", "m": "-3", "id": "a/b"}))
    for call, field in [
        (lambda: env.integer("n"), "hyperparameters.n"),
        (lambda: env.integer("m", minimum=0), "hyperparameters.m"),
        (lambda: env.string("id", pattern=r"[a-z]+"), "hyperparameters.id"),
        (lambda: env.string("absent"), "hyperparameters.absent"),
        (lambda: env.refuse_unknown({"n", "m"}), "hyperparameters.id"),
    ]:
        with pytest.raises(ValidationFailedError) as err:
            call()
        assert err.value.field == field


@pytest.mark.parametrize(
    ("hyperparameters", "named"),
    [
        ({"run_id": "r1", "execution_id": "e1", "last_generation": "ten"}, "last_generation"),
        ({"run_id": "r1", "execution_id": "e1", "last_generation": "-1"}, "last_generation"),
        ({"run_id": "r1", "execution_id": "e1"}, "last_generation"),
        ({"run_id": "../x", "execution_id": "e1", "last_generation": "3"}, "run_id"),
        ({"run_id": "r1", "execution_id": "e1", "last_generation": "3", "lr": "1"}, "lr"),
        ({"job": "tune", "run_id": "r1"}, "job"),
        ({"run_id": "r1", "execution_id": "e1", "last_generation": 3}, "last_generation"),
    ],
)
def test_bad_hyperparameters_fail_the_job_with_the_field_in_its_failure_reason(
    tmp_path: Path, hyperparameters: dict[str, object], named: str
) -> None:
    environ = sagemaker_tree(tmp_path, hyperparameters)
    code = train.main(["train"], environ)
    assert code == train.EXIT_BAD_INPUT
    reason = (tmp_path / "output" / "failure").read_text()
    assert f"hyperparameters.{named}" in reason
    assert not (tmp_path / "model" / train.SUMMARY_FILE).exists()


def test_a_checkpoint_left_by_another_job_is_refused(tmp_path: Path) -> None:
    ours = {"run_id": "r1", "execution_id": "e1", "last_generation": "3"}
    environ = sagemaker_tree(tmp_path, ours)
    (tmp_path / "checkpoints").mkdir()
    other = {"hyperparameters": ours | {"run_id": "r2"}, "attempts": 1}
    (tmp_path / "checkpoints" / train.PROGRESS_FILE).write_text(json.dumps(other))
    assert train.main([], environ) == train.EXIT_BAD_INPUT
    assert "CheckpointConfig.S3Uri" in (tmp_path / "output" / "failure").read_text()
    # the other job's checkpoint is left as it was
    assert json.loads((tmp_path / "checkpoints" / train.PROGRESS_FILE).read_text()) == other


def test_unreadable_config_fails_with_the_file_named(tmp_path: Path) -> None:
    environ = sagemaker_tree(tmp_path, {})
    (tmp_path / "input" / "config" / "hyperparameters.json").write_text("{not json")
    assert train.main(["train"], environ) == train.EXIT_BAD_INPUT
    assert "hyperparameters.json" in (tmp_path / "output" / "failure").read_text()
