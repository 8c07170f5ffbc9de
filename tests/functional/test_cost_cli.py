"""`chimera cost` as an operator runs it, over a ledger written by Place / the segment /
CommitCost; `chimera run --placement`."""

from __future__ import annotations

import json
import os

import pytest
from chimera import runtime
from chimera.services import costs
from ledger_segments import RUN, two_segments

from chimera_local.cli import main


@pytest.fixture
def ledger(home, only_cartpole):
    return two_segments()


def test_cost_json_is_the_budget_and_every_entry(ledger, capsys):
    first, second = ledger
    assert main(["cost", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ports = runtime.deps()
    assert out["budget"] == costs.budget(ports).model_dump(mode="json")
    assert [e["entry_id"] for e in out["entries"]] == [first["entry_id"], second["entry_id"]]
    committed, open_ = out["entries"]
    assert committed["status"] == "committed" and committed["actual_usd"] > 0
    assert open_["status"] == "reserved" and open_["actual_usd"] is None
    assert out["totals"]["actual_usd"] == pytest.approx(out["budget"]["spent_usd"], abs=1e-6)
    assert out["by_run"][RUN] == out["totals"] and set(out["by_placement"]) == {"lambda"}
    assert main(["cost", "--json", "--run", RUN, "--period", out["budget"]["period"]]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["entries"] == out["entries"] and again["run_id"] == RUN
    assert main(["cost", "--json", "--period", "1999-01"]) == 0
    old = json.loads(capsys.readouterr().out)
    assert old["entries"] == [] and old["budget"]["period"] == "1999-01"


def test_cost_text_shows_estimated_against_actual_per_run_and_placement(ledger, capsys):
    first, _ = ledger
    assert main(["cost"]) == 0
    out = capsys.readouterr().out
    view = costs.list_costs(runtime.deps(), run_id=RUN)
    done = view.entries[0]
    assert out.startswith(f"Budget {costs.current_period(runtime.deps())}:")
    assert "Ledger of the period" in out and "(2 segments)" in out
    line = next(row for row in out.splitlines() if row.strip().startswith(RUN + "  0-0"))
    assert f"${done.estimated_usd:.6f}" in line and f"${done.actual_usd:.6f}" in line
    assert "By run" in out and "By placement" in out
    totals = next(row for row in out.splitlines() if row.strip().startswith("lambda  "))
    assert f"${view.totals.actual_usd:.6f}" in totals


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cost", "--period", "2026-13"], "argument --period: '2026-13' is not a month"),
        (["cost", "--run", "no run!"], "argument --run: 'no run!' is not an evolution run id"),
        (["run", "--placement", "gpu"], "argument --placement: invalid choice: 'gpu'"),
    ],
)
def test_bad_arguments_name_the_option(home, capsys, args, message):
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_an_unknown_run_is_a_clear_error(home, capsys):
    assert main(["cost", "--run", "cycle-9.nobody"]) == 2
    assert "evolution run 'cycle-9.nobody' not found" in capsys.readouterr().err


def test_an_empty_ledger_says_so(home, capsys):
    assert main(["cost"]) == 0
    out = capsys.readouterr().out
    assert "spent $0.000000" in out and "No ledger entries for the period" in out


@pytest.mark.slow
def test_run_placement_is_the_runs_setting(home, only_cartpole, monkeypatch, capsys):
    monkeypatch.setenv("CHIMERA_PLACEMENT", "auto")  # restored after: main sets it in-process
    assert main(["run", "--quiet", "--placement", "lambda"]) == 0
    assert os.environ["CHIMERA_PLACEMENT"] == "lambda"
    capsys.readouterr()
    assert main(["cost", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["entries"] and {e["placement"] for e in out["entries"]} == {"lambda"}
    assert all(e["status"] == "committed" for e in out["entries"])


def test_the_sagemaker_launcher_is_a_command_where_present(capsys):
    # chimera_local/sagemaker_launch.py registers its own subcommand through add_parser.
    with pytest.raises(SystemExit) as exited:
        main(["train-segment", "--help"])
    assert exited.value.code == 0 and "--last-generation" in capsys.readouterr().out
