"""The operator CLI as scripts use it: `chimera status --json`, `chimera genomes A --json`."""

from __future__ import annotations

import json

import pytest

from chimera_local.cli import main


@pytest.mark.slow
def test_status_and_genomes_json_after_a_run(home, only_cartpole, capsys):
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["run", "--quiet"]) == 0
    capsys.readouterr()

    assert main(["status", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["agent_id"] == "cartpole-linear"
    live = row["live_version"]
    assert row["weights"] == {str(live): 1.0}
    assert set(row["genes"]) == {"w_x", "w_x_dot", "w_theta", "w_theta_dot", "bias"}
    assert all(isinstance(v, float) for v in row["genes"].values())

    assert main(["genomes", "cartpole-linear", "--json"]) == 0
    versions = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in versions] == list(range(1, len(versions) + 1))
    live_row = next(v for v in versions if v["version"] == live)
    assert live_row["genes"] == row["genes"] and live_row["live_weight"] == 1.0
    assert any(v["holdout_score"] is not None for v in versions)


def test_genomes_of_an_unknown_agent_is_a_clear_error(home, capsys):
    assert main(["genomes", "nobody", "--json"]) == 2
    assert "agent 'nobody' not found" in capsys.readouterr().err
