"""`chimera experiments`, `chimera experiment ID` and `chimera rollback` as an operator (or a
script) uses them, over canaries run on the live CartPole agent the way canary-rollout runs
them (tests/functional/live_experiments.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chimera.domain.models import ExperimentStatus
from chimera.runtime import deps
from live_experiments import AGENT, events, live_with_candidate, serve_only, start_canary

from chimera_local.cli import main

MB = 2**20


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_no_experiments_yet(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "experiments", "--json") == (0, "[]\n", "")
    code, out, _ = run(capsys, "experiments")
    assert code == 0 and "No experiments yet" in out


def test_experiments_lists_canaries_as_a_table_and_as_json(
    home: Path, only_cartpole: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live_with_candidate()
    start_canary("canary-a")
    code, out, _ = run(capsys, "rollback", AGENT, "--reason", "pager went off")  # stops it
    assert code == 0 and "stopped the canary canary-a" in out, out
    start_canary("canary-b")

    code, out, err = run(capsys, "experiments", "--json")
    assert code == 0 and err == ""
    rows = json.loads(out)
    assert [(r["experiment_id"], r["status"], r["verdict"]) for r in rows] == [
        ("canary-b", "running", None),
        ("canary-a", "stopped", "rolled-back"),
    ]
    for r in rows:
        assert (r["agent_id"], r["candidate_version"], r["incumbent_version"]) == (AGENT, 2, 1)
    assert rows[1]["reason"] == "rolled back: pager went off"

    code, out, _ = run(capsys, "experiments", "--agent", AGENT, "--status", "running", "--json")
    assert code == 0 and [r["experiment_id"] for r in json.loads(out)] == ["canary-b"]

    code, out, _ = run(capsys, "experiments")
    assert code == 0
    header, first, second = out.splitlines()
    assert header.split() == [
        "EXPERIMENT",
        "AGENT",
        "CANDIDATE",
        "INCUMBENT",
        "STATUS",
        "VERDICT",
        "STEP",
    ]
    assert first.split() == ["canary-b", AGENT, "v2", "v1", "running", "-", "1/3:20%"]
    assert second.split()[:6] == ["canary-a", AGENT, "v2", "v1", "stopped", "rolled-back"]


def test_experiment_shows_its_statistic_over_time(
    home: Path, only_cartpole: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live_with_candidate()
    start_canary("canary-a")
    (point,) = deps().store.list_experiment_points("canary-a")

    code, out, _ = run(capsys, "experiment", "canary-a", "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["status"] == "running" and shown["config"]["steps"] == [0.2, 0.5, 1.0]
    (p,) = shown["points"]
    assert (p["n_control"], p["n_treatment"], p["decision"]) == (
        point.n_control,
        point.n_treatment,
        point.decision,
    )
    assert p["p_value"] == point.p_value and p["srm_p"] == point.srm_p

    code, out, _ = run(capsys, "experiment", "canary-a")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"canary-a: {AGENT} v2 against v1, running"
    row = lines[-1].split()
    assert row[:5] == ["0", "0", "20%", str(point.n_control), str(point.n_treatment)]
    assert row[-1] == point.decision


def test_rollback_to_a_version(
    home: Path, only_cartpole: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live_with_candidate()
    serve_only(2)
    code, out, err = run(capsys, "rollback", AGENT, "--to", "1", "--reason", "slow for a client")
    assert (code, err) == (0, "")
    assert f"{AGENT}: rolled back from v2 to v1" in out
    assert deps().store.get_alias(AGENT).weights == {1: 1.0}  # type: ignore[union-attr]
    (back,) = events(home, "GenomeRolledBack")
    assert back["detail"]["reason"] == "slow for a client"
    code, out, _ = run(capsys, "rollback", AGENT, "--to", "1", "--json")
    assert code == 0
    again = json.loads(out)
    assert again["changed"] is False and again["live_version"] == 1
    assert len(events(home, "GenomeRolledBack")) == 1


def test_rollback_during_a_canary_stops_it(
    home: Path, only_cartpole: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live_with_candidate()
    start_canary("canary-a")
    code, out, _ = run(capsys, "rollback", AGENT, "--json")
    assert code == 0
    answer = json.loads(out)
    assert answer["stopped_experiment"]["experiment_id"] == "canary-a"
    assert (answer["from_version"], answer["to_version"], answer["weights"]) == (2, 1, {"1": 1.0})
    store = deps().store
    assert store.get_experiment("canary-a").status == ExperimentStatus.STOPPED
    assert store.running_experiment(AGENT) is None


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["rollback", AGENT], "--to: to_version: v1 of cartpole-linear has no earlier version"),
        (["rollback", AGENT, "--to", "9"], "--to: genome 'cartpole-linear@9' not found"),
        (["rollback", "nobody"], "AGENT: agent 'nobody' not found"),
        (["experiments", "--agent", "nobody"], "agent 'nobody' not found"),
        (["experiment", "no-such-experiment"], "experiment 'no-such-experiment' not found"),
    ],
)
def test_unknown_agents_versions_and_experiments_exit_2_naming_them(
    home: Path,
    only_cartpole: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    needle: str,
) -> None:
    live_with_candidate()
    revision = deps().store.get_alias(AGENT).revision  # type: ignore[union-attr]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "", out
    assert needle in err and "Traceback" not in err, err
    assert deps().store.get_alias(AGENT).revision == revision  # type: ignore[union-attr]
    assert events(home, "GenomeRolledBack") == []


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["rollback", AGENT, "--to", "0"], "--to"),
        (["rollback", AGENT, "--to", "latest"], "--to"),
        (["rollback", AGENT, "--reason", ""], "--reason"),
        (["rollback", AGENT, "--reason", "r" * MB], "--reason"),
        (["rollback", "Not An Id"], "AGENT"),
        (["experiments", "--status", "finished"], "--status"),
        (["experiments", "--agent", "a" * MB], "--agent"),
        (["experiment", "not an id!"], "experiment_id"),
    ],
)
def test_bad_arguments_are_refused_naming_them(
    home: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err) < 2000, err
