"""The predictor-training state machine (statemachines/predictor-training.asl.json) as it runs
locally: the deployed file through the local executor, its Lambda steps the refinement
handler, its Train state the local stand-in of `sagemaker:createTrainingJob.sync` (the
SageMaker entrypoint in a subprocess on the CPU, the `training` channel downloaded from the
artifact bucket's stand-in, model.tar.gz uploaded back to it).

* After short CartPole runs made history (driven task by task through the handlers, as
  evolution-segment calls them), `chimera train-predictor` exports it, trains, and installs a
  model that `parse_model` reads back from `blob_key(agent)`, with the R² and within-10 % the
  job measured; the decisions say so.
* InstallPredictor invoked again for an execution that installed (a retry) writes nothing:
  a newer execution's model stays installed. A model below the R² floor is not installed and
  its decision says why.
* A training job that fails (a bad hyperparameter) lands in the Catch: RecordFailure records
  the job's FailureReason naming the field, the execution fails, nothing is installed.
* Too little history is refused as an outcome (no training job starts); an unknown agent is a
  clear error naming it.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from chimera import runtime
from chimera.domain.errors import NotFoundError, ValidationFailedError
from chimera.domain.predictor import (
    DenseLayer,
    PredictorMetrics,
    PredictorModel,
    blob_key,
    parse_model,
)
from chimera.runtime import deps

from chimera_local import training
from chimera_local.asl import ExecutionFailedError, TaskFailedError
from chimera_local.cli import EXIT_SKIPPED, main
from chimera_local.workflows import handler_for, local_executor, state_machine_arn

AGENT = "cartpole-linear"
MACHINE = state_machine_arn("predictor-training")
QUICK = {"epochs": "60", "hidden": "32,32"}


def _call(package: str, event: dict[str, Any]) -> Any:
    return handler_for(package)(json.loads(json.dumps(event)))


def _run(execution_id: str, generations: int, population: int, seed: int) -> str:
    ex = {"execution_id": execution_id}
    choice = _call("meta_evolution", {"action": "choose", **ex, "agent_id": AGENT})
    choice |= {"population_size": population, "max_generations": generations}
    start = {"action": "start", **ex, "agent_id": AGENT, "choice": choice, "seed": seed}
    run_id = _call("evolution", start)["run_id"]
    proceed = True
    while proceed:
        asked = _call("evolution", {"action": "ask", **ex, "run_id": run_id})
        for shard in asked["shards"]:
            _call("execution", {"action": "evaluate", **shard})
        gen = asked["generation"]
        _call("evolution", {"action": "tell", **ex, "run_id": run_id, "generation": gen})
        proceed = _call("meta_evolution", {"action": "adapt", **ex, "run_id": run_id})["proceed"]
    _call("evolution", {"action": "finish", **ex, "run_id": run_id, "reason": "history"})
    return run_id


def _discover() -> None:
    _call("discovery", {"action": "discover", "execution_id": "h0"})
    ok = _call("validation", {"action": "validate", "execution_id": "h0", "agent_id": AGENT})
    assert ok["ok"], ok


@pytest.fixture
def history(home: Path, only_cartpole: Path) -> Path:
    """Six short CartPole runs (seeded): 6 x 5 generations x 16 evaluated candidates."""
    runtime.deps.cache_clear()
    _discover()
    for i in range(6):
        _run(f"h{i}", generations=5, population=16, seed=1000 + i)
    return home


def _decisions(execution: str) -> dict[str, Any]:
    return {d.key: d for d in deps().store.list_decisions(execution) if d.key}


def _start(input_: dict[str, Any], name: str) -> dict[str, Any]:
    return local_executor().start(MACHINE, input_, name)


def test_trains_installs_and_a_retry_installs_once(history, capsys):
    ports = deps()
    assert (
        main(["train-predictor", AGENT, "--json", *(f"--set={k}={v}" for k, v in QUICK.items())])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    export, install = out["export"], out["install"]
    assert export["exported"] and export["rows"] == 6 * 5 * 16 and export["runs"] == 6
    assert export["training_data"].startswith("s3://chimera-local-artifacts/predictor-training/")
    assert export["hyperparameters"] == {**QUICK, "job": "predictor"}
    assert install["installed"] and install["key"] == blob_key(AGENT), install
    assert install["r2"] >= 0.3 and install["split"] == "runs"
    assert install["n_train"] + install["n_test"] == 480 and install["n_test"] == 80  # a run

    # What Layer 7 reads: the model, with the metrics the training job measured.
    model = parse_model(ports.store.blobs.get(blob_key(AGENT)))
    assert model.agent_id == AGENT and model.suite == "cartpole-v1" and len(model.genes) == 5
    assert model.metrics is not None
    assert (model.metrics.r2[0], model.metrics.within_10pct[0]) == (
        install["r2"],
        install["within_10pct"],
    )
    assert [len(layer.bias) for layer in model.layers] == [32, 32, 1]
    execution = out["execution"]
    decided = _decisions(execution)
    assert decided[f"predictor-export:{execution}"].detail["exported"] is True
    assert decided[f"predictor-install:{execution}"].detail["installed"] is True
    assert "installed: held-out R²" in decided[f"predictor-install:{execution}"].summary

    # The training job ran as SageMaker runs it: described Completed, its model.tar.gz in the
    # artifact bucket where InstallPredictor read it.
    (job,) = [p for p in (history / "training").iterdir() if p.name.startswith("predictor-")]
    described = json.loads((job / "describe.json").read_text())
    assert described["TrainingJobStatus"] == "Completed"
    assert described["EnableManagedSpotTraining"] is True
    assert described["InputDataConfig"][0]["ChannelName"] == "training"
    assert described["CheckpointConfig"]["S3Uri"] == export["checkpoint_uri"]
    assert (job / "input/data/training/history.jsonl").read_text().count("\n") == 480

    # A second execution whose floor the model misses: not installed, the first one stays.
    second = _start({"agent_id": AGENT, "hyperparameters": QUICK, "min_r2": 0.999}, "second")
    assert second["install"]["installed"] is False
    assert "below the floor 0.999" in second["install"]["reason"]
    assert "below the floor" in _decisions("second")["predictor-install:second"].summary
    assert ports.store.blobs.get(blob_key(AGENT)) == model.model_dump_json().encode()

    # A newer model installed by a third execution; then the first execution's InstallPredictor
    # runs again (a retry after a lost response): it answers what it decided, writes nothing.
    newer_input = {"agent_id": AGENT, "hyperparameters": {"epochs": "60", "hidden": "16"}}
    third = _start(newer_input | {"min_r2": -1.0}, "third")  # no floor: installed whatever R²
    assert third["install"]["installed"]
    newer = ports.store.blobs.get(blob_key(AGENT))
    assert parse_model(newer) != model
    retried = _call(
        "refinement",
        {
            "action": "install_predictor",
            "execution_id": execution,
            "agent_id": AGENT,
            "model_artifacts": described["ModelArtifacts"]["S3ModelArtifacts"],
            "training_job": described["TrainingJobName"],
            "min_r2": 0.3,
        },
    )
    assert retried == {**install, "replayed": True}
    assert ports.store.blobs.get(blob_key(AGENT)) == newer
    keys = [d.key for d in ports.store.list_decisions(execution)]
    assert keys.count(f"predictor-install:{execution}") == 1


def test_a_failing_training_job_lands_in_the_catch_with_its_failure_reason(history):
    with pytest.raises(ExecutionFailedError) as failed:
        _start({"agent_id": AGENT, "hyperparameters": {"epochs": "many"}}, "bad-epochs")
    assert failed.value.error == "PredictorTrainingFailed"
    decided = _decisions("bad-epochs")["predictor-failure:bad-epochs"]
    assert decided.detail["error"] == "States.TaskFailed"
    assert decided.detail["reason"].startswith(
        "AlgorithmError: ValidationFailedError: hyperparameters.epochs: 'many' is not a number"
    )
    with pytest.raises(NotFoundError):
        deps().store.blobs.get(blob_key(AGENT))


def test_too_little_history_is_refused_and_an_unknown_agent_named(home, only_cartpole, capsys):
    _discover()
    _run("h0", generations=2, population=8, seed=1)  # 16 evaluated candidates, under the 50 needed
    assert main(["train-predictor", AGENT]) == EXIT_SKIPPED
    assert capsys.readouterr().out.endswith(
        f"{AGENT}: refused: not enough history to train a predictor: 16 evaluated "
        "candidate(s) in 1 run(s), at least 50 needed\n"
    )
    assert main(["train-predictor", AGENT, "--json"]) == EXIT_SKIPPED
    out = json.loads(capsys.readouterr().out)
    assert out["install"] is None and out["export"]["exported"] is False
    execution = out["execution"]
    decided = _decisions(execution)[f"predictor-export:{execution}"]
    assert decided.detail == {"exported": False} and "16 evaluated candidate(s)" in decided.summary
    assert not (home / "training").exists()  # no training job was started
    with pytest.raises(NotFoundError):
        deps().store.blobs.get(blob_key(AGENT))

    assert main(["train-predictor", "nobody"]) == 2
    assert "agent 'nobody' not found" in capsys.readouterr().err
    assert main(["train-predictor", AGENT, "--set", "epochs"]) == 2
    assert "--set: 'epochs' is not NAME=VALUE" in capsys.readouterr().err
    assert main(["train-predictor", AGENT, "--min-rows", "3"]) == 2
    assert "min_rows: Input should be greater than or equal to 10" in capsys.readouterr().err


def _job(name: str, channel: dict[str, Any]) -> dict[str, Any]:
    """CreateTrainingJob as predictor-training's Train state sends it, with one channel."""
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": "local", "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::000000000000:role/chimera-sagemaker",
        "HyperParameters": {"job": "predictor"},
        "InputDataConfig": [channel],
        "OutputDataConfig": {"S3OutputPath": "s3://chimera-local-artifacts/out/"},
        "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }


def _channel(uri: str, name: str = "training", kind: str = "S3Prefix") -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {"S3DataSource": {"S3DataType": kind, "S3Uri": uri}},
    }


def test_the_stand_in_checks_channels_and_fails_an_empty_prefix(home):
    ok = "s3://chimera-local-artifacts/predictor-training/x/data/"
    for channel, member in (
        (_channel(ok, name="bad name"), "inputDataConfig.1.member.channelName"),
        (_channel(ok, kind="S3Objects"), "inputDataConfig.1.member.dataSource.s3DataSource"),
        (_channel("ftp://x/y"), "inputDataConfig.1.member.dataSource.s3DataSource.s3Uri"),
    ):
        with pytest.raises(TaskFailedError) as refused:
            training.run_training_job(_job("refused", channel), home=home)
        assert refused.value.error == "SageMaker.AmazonSageMakerException"
        assert f"at '{member}" in refused.value.cause, refused.value.cause
    assert not (home / "training" / "refused").exists()

    # Nothing under the prefix: the job fails as SageMaker's does, before the container runs.
    with pytest.raises(TaskFailedError) as failed:
        training.run_training_job(_job("empty", _channel(ok)), home=home)
    described = json.loads(failed.value.cause)
    assert described["TrainingJobStatus"] == "Failed"
    assert described["FailureReason"].startswith(
        f'ClientError: No S3 objects found under S3 URL "{ok}"'
    )
    assert not (home / "training" / "empty" / "output" / "container.log").exists()


def test_a_model_that_names_other_genes_is_not_installed(home, only_cartpole):
    """A model whose inputs are not the agent's genes, by name and in order (a data set
    exported before the genome changed, or one that named no genes): refused, naming the
    field, and nothing is written where a run reads it."""
    _discover()
    names = [g.name for g in deps().store.get_agent(AGENT).manifest.genome]
    for genes in ([f"g{i}" for i in range(len(names))], list(reversed(names))):
        model = PredictorModel(
            agent_id=AGENT,
            suite="cartpole-v1",
            genes=tuple(genes),
            targets=("fitness",),
            x_mean=(0.0,) * len(genes),
            x_std=(1.0,) * len(genes),
            y_mean=(0.0,),
            y_std=(1.0,),
            layers=(DenseLayer(weight=((0.5,) * len(genes),), bias=(0.0,)),),
            metrics=PredictorMetrics(
                r2=(0.9,), within_10pct=(0.5,), n_train=40, n_test=10, split="runs"
            ),
        )
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            data = model.model_dump_json().encode()
            info = tarfile.TarInfo("model.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        deps().store.blobs.put("predictor-training/misfit/model.tar.gz", buffer.getvalue())
        with pytest.raises(ValidationFailedError) as refused:
            _call(
                "refinement",
                {
                    "action": "install_predictor",
                    "execution_id": f"misfit-{genes[0]}",
                    "agent_id": AGENT,
                    "model_artifacts": "s3://chimera-local-artifacts/predictor-training/misfit/model.tar.gz",
                    "min_r2": 0.3,
                },
            )
        assert refused.value.field == "predictor.genes", refused.value
        with pytest.raises(NotFoundError):
            deps().store.blobs.get(blob_key(AGENT))
