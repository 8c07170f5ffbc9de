"""Layer 8 counts the predictor-training job's dollars: the deployed predictor-training file
through the local executor (its Lambda steps the refinement and resources handlers, its Train
state the local stand-in of `sagemaker:createTrainingJob.sync`), over history made by seeded
CartPole runs.

* A training execution reserves the job's estimate (the exported rows x the epochs x the
  stated figure, plus the table's start-up and orchestration) before Train and commits the
  actual from the job's measured BillableTimeInSeconds at the table's managed-spot price
  after it; the rest of the reservation is released. GET /costs and `chimera cost` list it
  under run `predictor:<agent>`. ReserveTraining and CommitTraining invoked again (a retry)
  hold and commit nothing twice.
* A training job that fails (a bad hyperparameter) is committed on the failure path from the
  DescribeTrainingJob JSON in the Catch's Cause, before the failure is recorded.
* A budget too small for the job refuses it: a recorded decision, the execution succeeds in
  OverBudget, no job started, nothing installed, nothing held.
* A process killed between ReserveTraining and Train leaves the entry held until its expiry;
  the next reservation's sweep settles it at its reservation and says why; a late commit
  charges nothing again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from chimera import runtime
from chimera.domain.errors import NotFoundError, ValidationFailedError
from chimera.domain.predictor import blob_key
from chimera.runtime import deps
from chimera.services.resources import TRAINING_S_PER_ROW_EPOCH
from test_predictor_pipeline import _discover, _run

from chimera_local.asl import ExecutionFailedError
from chimera_local.cli import EXIT_SKIPPED, main
from chimera_local.workflows import LambdaContext, handler_for, local_executor, state_machine_arn
from functions.api import handler as api

AGENT = "cartpole-linear"
RUN_ID = f"predictor:{AGENT}"
MACHINE = state_machine_arn("predictor-training")
QUICK = {"epochs": "60", "hidden": "16"}
ROWS = 6 * 5 * 16
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
EVENTS = HERE.parent / "events"


@pytest.fixture
def history(home: Path, only_cartpole: Path) -> Path:
    """Six short CartPole runs (seeded): 480 evaluated candidates."""
    runtime.deps.cache_clear()
    _discover()
    for i in range(6):
        _run(f"h{i}", generations=5, population=16, seed=1000 + i)
    return home


def _budget() -> tuple[float, float]:
    ports = deps()
    state = ports.store.budget_state(f"{ports.clock.now():%Y-%m}", ports.budget_usd)
    return state.held_usd, state.spent_usd


def _price() -> dict[str, float]:
    """The table's figures the job is priced from, read off the JSON by hand."""
    table = json.loads((ROOT / "layers_shared/chimera/domain/prices_2026_11.json").read_text())
    (spot,) = [i for i in table["instances"] if i["name"] == "sagemaker-spot"]
    lam = table["lambda"]
    # 8 transitions and 4 Lambdas (ExportHistory, ReserveTraining, CommitTraining,
    # InstallPredictor) of 0.1 s at 1,769 MB, 14 write units, 4 PUTs and 2 GETs.
    orchestration = (
        8 * table["step_functions"]["usd_per_standard_transition"]
        + 4 * lam["usd_per_request"]
        + 4 * lam["orchestration_task_s"] * 1769 / 1024 * lam["usd_per_gb_second"]["x86_64"]
        + 14 * table["dynamodb"]["usd_per_write_request_unit"]
        + 4 * table["s3"]["usd_per_put"]
        + 2 * table["s3"]["usd_per_get"]
    )
    return {
        "usd_s": spot["usd_per_hour"] / 3600,
        "startup_s": spot["startup_s"],
        "interruptions_per_s": spot["interruptions_per_hour"] / 3600,
        "orchestration": orchestration,
    }


def _estimate(rows: int, epochs: int) -> float:
    p = _price()
    train_s = rows * epochs * TRAINING_S_PER_ROW_EPOCH
    run_s = p["startup_s"] + train_s
    rework_s = p["interruptions_per_s"] * run_s * (p["startup_s"] + train_s / 2)
    return (run_s + rework_s) * p["usd_s"] + p["orchestration"]


def _described(home: Path) -> dict[str, Any]:
    (job,) = [p for p in (home / "training").iterdir() if p.name.startswith("predictor-")]
    return dict(json.loads((job / "describe.json").read_text()))


def _keys(execution: str) -> list[str]:
    return [d.key or "" for d in deps().store.list_decisions(execution)]


def _costs_api(query: dict[str, str]) -> dict[str, Any]:
    event = json.loads((EVENTS / "api_get_costs.json").read_text())
    event["queryStringParameters"] = query
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
    context = LambdaContext("chimera-api", "arn:aws:lambda:us-east-1:1:function:chimera-api")
    response = api.lambda_handler(event, context)
    assert response["statusCode"] == 200, response["body"]
    return dict(json.loads(response["body"]))


def test_a_training_job_is_reserved_then_committed_at_its_billable_time(history, capsys):
    out = local_executor().start(MACHINE, {"agent_id": AGENT, "hyperparameters": QUICK}, "costed")
    reservation, cost = out["reservation"], out["cost"]
    assert out["install"]["agent_id"] == AGENT  # trained and judged as before
    assert reservation["reserved"] and reservation["entry_id"] == "training:costed"
    assert reservation["run_id"] == RUN_ID
    assert f"{ROWS} rows x 60 epochs" in reservation["reason"]
    assert reservation["estimated_usd"] == pytest.approx(_estimate(ROWS, 60), rel=1e-9)
    assert reservation["reserved_usd"] == pytest.approx(2 * reservation["estimated_usd"])

    # The actual: what SageMaker (here its stand-in) says it billed, at the table's price.
    described = _described(history)
    billable = described["BillableTimeInSeconds"]
    assert billable >= 1 and out["training"]["billable_seconds"] == billable
    p = _price()
    actual = billable * p["usd_s"] + p["orchestration"]
    assert cost["actual_usd"] == pytest.approx(actual, abs=1e-6)
    assert cost["billable_s"] == billable and cost["measured"] == "billable time"
    (entry,) = deps().store.list_ledger(run_id=RUN_ID)
    assert entry.status == "committed" and entry.note == "committed"
    assert entry.detail["training_s"] == described["TrainingTimeInSeconds"]
    assert entry.detail["instance_type"] == "ml.g5.xlarge" and entry.detail["job_status"] == (
        "Completed"
    )
    held, spent = _budget()
    assert spent == pytest.approx(actual, abs=1e-6) and held == pytest.approx(spent, abs=1e-6)
    keys = _keys("costed")
    assert {"resources:training:costed", "resources:training:costed:commit"} <= set(keys)

    # The retried tasks, as Step Functions would send them again after a lost answer.
    resources = handler_for("resources")
    again = resources(
        {
            "action": "reserve_training",
            "execution_id": "costed",
            "agent_id": AGENT,
            "rows": ROWS,
            "hyperparameters": {**QUICK, "job": "predictor"},
            "instance_type": "ml.g5.xlarge",
            "max_runtime_s": 3600,
            "max_wait_s": 7200,
        }
    )
    assert again == reservation
    commit = {
        "action": "commit_training",
        "execution_id": "costed",
        "agent_id": AGENT,
        "entry_id": "training:costed",
        "job_name": described["TrainingJobName"],
        "billable_seconds": billable + 100,  # a different figure changes nothing now
        "training_seconds": billable,
    }
    assert resources(commit) == cost
    assert _budget() == (held, spent)
    assert _keys("costed").count("resources:training:costed:commit") == 1
    assert len(deps().store.list_ledger(run_id=RUN_ID)) == 1

    # Layer 8's surfaces list it: GET /costs by run and by period, and chimera cost.
    by_run = _costs_api({"run_id": RUN_ID})
    (view,) = by_run["entries"]
    assert view["kind"] == "training" and view["actual_usd"] == entry.actual_usd
    assert view["counts"]["billable_s"] == billable
    assert by_run["by_run"][RUN_ID]["actual_usd"] == entry.actual_usd
    period = _costs_api({"period": entry.period})
    assert [e["entry_id"] for e in period["entries"]] == ["training:costed"]
    assert main(["cost", "--run", RUN_ID]) == 0
    (row,) = [line.split() for line in capsys.readouterr().out.splitlines() if "training" in line]
    assert row[:5] == [RUN_ID, "training", "job", "sagemaker-spot", "committed"], row


def test_a_failing_training_job_is_committed_on_the_failure_path(history):
    with pytest.raises(ExecutionFailedError) as failed:
        local_executor().start(
            MACHINE, {"agent_id": AGENT, "hyperparameters": {"epochs": "many"}}, "bad-epochs"
        )
    assert failed.value.error == "PredictorTrainingFailed"
    described = _described(history)
    assert described["TrainingJobStatus"] == "Failed"
    (entry,) = deps().store.list_ledger(run_id=RUN_ID)
    assert entry.status == "committed" and entry.note == "committed: the job failed"
    assert "epochs 'many' unreadable: the trainer's default" in entry.detail["reason"]
    assert entry.estimated_usd == pytest.approx(_estimate(ROWS, 300), rel=1e-9)
    assert entry.detail["billable_s"] == described["BillableTimeInSeconds"]
    assert entry.detail["job_status"] == "Failed"
    p = _price()
    actual = described["BillableTimeInSeconds"] * p["usd_s"] + p["orchestration"]
    assert entry.actual_usd == pytest.approx(actual, abs=1e-6)
    held, spent = _budget()
    assert spent == pytest.approx(actual, abs=1e-6) and held == pytest.approx(spent, abs=1e-6)
    keys = _keys("bad-epochs")
    commit = keys.index("resources:training:bad-epochs:commit")
    assert commit < keys.index("predictor-failure:bad-epochs")  # settled, then recorded

    # The API refused the job (it was never created): nothing billed, the orchestration kept.
    resources = handler_for("resources")
    reserve = {
        "action": "reserve_training",
        "execution_id": "refused-create",
        "agent_id": AGENT,
        "rows": ROWS,
        "instance_type": "ml.g5.xlarge",
        "max_runtime_s": 3600,
        "max_wait_s": 7200,
    }
    placed = resources(reserve)
    error = {"Error": "SageMaker.AmazonSageMakerException", "Cause": "1 validation error"}
    base = {"execution_id": "refused-create", "agent_id": AGENT, "entry_id": placed["entry_id"]}
    settled = resources({"action": "commit_training", **base, "error": error})
    assert settled["billable_s"] == 0 and settled["actual_usd"] == pytest.approx(
        p["orchestration"], abs=1e-6
    )
    assert settled["measured"].startswith("the job was not created")
    # Bad input names the field; another execution's entry is not this one's to commit.
    with pytest.raises(ValidationFailedError) as wrong:
        resources({"action": "commit_training", **base, "execution_id": "other", "error": error})
    assert wrong.value.field == "entry_id"
    with pytest.raises(ValidationFailedError) as priced:
        resources({**reserve, "execution_id": "x", "instance_type": "ml.p4d.24xlarge"})
    assert priced.value.field == "instance_type"
    with pytest.raises(NotFoundError) as unknown:
        resources({**reserve, "execution_id": "y", "agent_id": "nobody"})
    assert unknown.value.field == "agent_id"


def test_a_budget_too_small_for_the_job_refuses_it(history, monkeypatch, capsys):
    monkeypatch.setenv("CHIMERA_BUDGET_USD", "0.05")  # the job alone reserves about $0.097
    runtime.deps.cache_clear()
    assert main(
        ["train-predictor", AGENT, "--json", *(f"--set={k}={v}" for k, v in QUICK.items())]
    ) == (EXIT_SKIPPED)
    out = json.loads(capsys.readouterr().out)
    execution = out["execution"]
    assert out["export"]["exported"] is True and out["install"] is None
    reservation = out["reservation"]
    assert reservation["reserved"] is False and reservation["reserved_usd"] == 0
    assert reservation["reason"].startswith(
        "predictor training refused, no job started: budget_usd: "
    )
    refused = next(
        d
        for d in deps().store.list_decisions(execution)
        if d.key == f"resources:training:{execution}:refused"
    )
    assert refused.summary.startswith(f"{RUN_ID}: predictor training refused")
    assert not (history / "training").exists()  # no training job was started
    with pytest.raises(NotFoundError):
        deps().store.blobs.get(blob_key(AGENT))
    assert deps().store.list_ledger(run_id=RUN_ID) == []
    assert _budget() == (0.0, 0.0)

    assert main(["train-predictor", AGENT, *(f"--set={k}={v}" for k, v in QUICK.items())]) == (
        EXIT_SKIPPED
    )
    assert "refused: predictor training refused, no job started" in capsys.readouterr().out


KILLED_AT_TRAIN = """
import os, signal, sys
from chimera_local.workflows import local_executor, state_machine_arn

def on_state(execution, state, data):
    if state == "Train":  # reserved; the job never starts, CommitTraining never comes
        os.kill(os.getpid(), signal.SIGKILL)

local_executor(on_state=on_state).start(
    state_machine_arn("predictor-training"),
    {"agent_id": "cartpole-linear", "hyperparameters": {"epochs": "60"}},
    "killed",
)
"""


def test_a_training_reservation_whose_process_died_is_swept_at_its_reservation(history):
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "layers_shared"), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", KILLED_AT_TRAIN], env=env, cwd=ROOT)
    assert done.returncode == -signal.SIGKILL
    runtime.deps.cache_clear()
    ports = deps()
    (entry,) = ports.store.list_ledger(run_id=RUN_ID)
    assert entry.status == "reserved" and entry.entry_id == "training:killed"
    assert _budget() == (pytest.approx(entry.reserved_usd, abs=1e-6), 0.0)
    assert not (history / "training").exists()

    resources = handler_for("resources")
    reserve = {
        "action": "reserve_training",
        "agent_id": AGENT,
        "rows": ROWS,
        "instance_type": "ml.g5.xlarge",
        "max_runtime_s": 3600,
        "max_wait_s": 7200,
    }
    # Before its expiry (past MaxWaitTimeInSeconds) the next reservation leaves it alone.
    nxt = resources({**reserve, "execution_id": "next"})
    still = ports.store.get_ledger_entry(RUN_ID, entry.entry_id)
    assert still is not None and still.status == "reserved"
    commit = {"action": "commit_training", "agent_id": AGENT, "training_seconds": 9}
    committed = resources(
        {**commit, "execution_id": "next", "entry_id": nxt["entry_id"], "billable_seconds": 9}
    )
    ports.clock.advance((entry.expires_at - ports.clock.now()).total_seconds() + 1)
    later = resources({**reserve, "execution_id": "later"})
    swept = ports.store.get_ledger_entry(RUN_ID, entry.entry_id)
    assert swept is not None and swept.status == "committed"
    assert swept.note == "expired: never committed"
    assert swept.actual_usd == pytest.approx(entry.reserved_usd, abs=1e-6)
    assert swept.detail["measured"] == "none"
    assert "nothing measured, charged as held" in swept.detail["why"]
    held, spent = _budget()
    assert spent == pytest.approx(entry.reserved_usd + committed["actual_usd"], abs=2e-6)
    assert held == pytest.approx(spent + later["reserved_usd"], abs=3e-6)

    # The killed execution's CommitTraining, arriving late, charges nothing again.
    late = resources(
        {**commit, "execution_id": "killed", "entry_id": entry.entry_id, "billable_seconds": 5}
    )
    assert late["actual_usd"] == swept.actual_usd and late["measured"] == "none"
    assert _budget() == (held, spent)
