"""`chimera traffic` as an operator runs it: on a local home after `chimera run`, through the
same job path as `POST /agents/{id}/jobs`, with fault injection; bad arguments named."""

from __future__ import annotations

import json

import pytest
from chimera import runtime

from chimera_local.cli import main


@pytest.mark.slow
def test_traffic_after_a_run_drives_jobs_on_the_live_genome(home, only_cartpole, capsys):
    assert main(["run", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    live = row["live_version"]
    store = runtime.deps().store
    before = runtime.deps().clock.now()

    args = ["traffic", "--agent", "cartpole-linear", "--jobs", "12", "--rate", "4", "--json"]
    assert main(args) == 0
    clean = json.loads(capsys.readouterr().out)
    assert clean["jobs"] == 12 and clean["failures"] == 0 and clean["labels_posted"] == 0
    assert clean["simulated_s"] == pytest.approx(3.0)  # 12 jobs at 4 per second
    assert list(clean["versions"]) == [str(live)]
    assert clean["versions"][str(live)]["scored"] == 12
    # Numbered on from the jobs the run's canary drove (its bakes use the same generator).
    first = int(clean["first_job_id"].rsplit("-", 1)[1])
    assert clean["last_job_id"] == f"traffic-0-{first + 11}"
    ids = {f"traffic-0-{i}" for i in range(first, first + 12)}
    kpis = [k for k in store.list_kpis("cartpole-linear") if k.job_id in ids]
    assert len(kpis) == 12
    assert {k.genome_version for k in kpis} == {live}
    mean = sum(k.score for k in kpis) / 12
    assert mean == pytest.approx(clean["versions"][str(live)]["mean_score"])
    assert max(k.recorded_at for k in kpis) >= before.replace(microsecond=0)

    # The live version degraded to random actions and slowed: the same path, a worse outcome.
    degraded = [*args[:3], "--jobs", "8", "--degrade", f"{live}:0", "--slow", f"{live}:500"]
    assert main([*degraded, "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert f"v{live}: 8 job(s), 0 failed" in text and "traffic-3-0 .. traffic-3-7" in text
    bad = [store.find_job("cartpole-linear", f"traffic-3-{i}") for i in range(8)]
    assert all(j is not None and j.latency_ms >= 500 for j in bad)
    assert sum(j.output for j in bad) / 8 < 0.5 * mean

    # Run again: fresh job ids, numbered on.
    assert main([*args[:3], "--jobs", "2", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    want = (f"traffic-0-{first + 12}", f"traffic-0-{first + 13}")
    assert (again["first_job_id"], again["last_job_id"]) == want


def test_traffic_for_an_unknown_agent_exits_1_naming_it(home, capsys):
    assert main(["traffic", "--agent", "nobody", "--jobs", "1"]) == 1
    assert "agent 'nobody' not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (["--jobs", "0"], "--jobs"),
        (["--jobs", "many"], "--jobs"),
        (["--jobs", "1", "--rate", "-2"], "--rate"),
        (["--jobs", "1", "--rate", "inf"], "--rate"),
        (["--jobs", "1", "--degrade", "2"], "--degrade"),
        (["--jobs", "1", "--degrade", "2:1.5"], "--degrade"),
        (["--jobs", "1", "--degrade", "0:0.5"], "--degrade"),
        (["--jobs", "1", "--slow", "2:-1"], "--slow"),
        (["--jobs", "1", "--drift", "x:1"], "--drift"),
        (["--jobs", "1", "--drift", "5:nan"], "--drift"),
        (["--jobs", "1", "--seed", "-1"], "--seed"),
        (["--jobs", "1", "--label-delay", "soon"], "--label-delay"),
        ([], "--jobs"),
    ],
)
def test_bad_traffic_arguments_exit_2_naming_the_option(home, capsys, extra, option):
    with pytest.raises(SystemExit) as exit_:
        main(["traffic", "--agent", "cartpole-linear", *extra])
    assert exit_.value.code == 2
    assert option in capsys.readouterr().err
