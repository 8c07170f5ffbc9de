"""Two cycles at once: a run has one owner, the other cycle skips it and says why.

Real `chimera run` processes on one CHIMERA_HOME. Where the test needs a cycle held in the
middle of its run, it runs the CLI through a driver that pauses the run's second `tell`
until the test lets it go (or kills it there).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from chimera import runtime
from chimera.domain.errors import ConflictError
from chimera.domain.models import RunStatus, Verdict, utcnow
from chimera.runtime import deps
from chimera.services import evolution, meta
from chimera.services.contracts import (
    AdaptRequest,
    AskRequest,
    FailRequest,
    StartRequest,
    StrategyChoice,
)

from chimera_local.cli import EXIT_SKIPPED

AGENT = "cartpole-linear"
DRIVER = """
import sys, time
from pathlib import Path
import chimera_local.workflows as workflows
from chimera_local.cli import main

flag, gate = Path(sys.argv[1]), Path(sys.argv[2])
real = workflows.handler_for

def handler_for(package):
    handler = real(package)
    def held(event):
        if event.get("action") == "tell" and event.get("generation") == 1:
            flag.write_text("holding")
            while not gate.exists():
                time.sleep(0.05)
        return handler(event)
    return held

workflows.handler_for = handler_for
sys.exit(main(["run", "--quiet"]))
"""


def _env(home: Path, agents: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CHIMERA_HOME": str(home),
        "CHIMERA_AGENTS_DIR": str(agents),
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }


def _chimera_run(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "chimera_local.cli", "run", "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _held_run(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], Path]:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    flag, gate = tmp_path / "holding", tmp_path / "go"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(flag), str(gate)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the held cycle never reached its second tell"
        time.sleep(0.05)
    return proc, gate


def _assert_consistent() -> None:
    """Every run closed honestly; every stored champion went to a canary or said why not."""
    runtime.deps.cache_clear()
    store = deps().store
    runs = store.list_runs(AGENT)
    assert runs and all(r.status == RunStatus.SUCCEEDED for r in runs), [
        (r.run_id, r.status, r.decision) for r in runs
    ]
    alias = store.get_alias(AGENT)
    assert alias is not None
    for genome in store.list_genomes(AGENT):
        if genome.source_run is None:
            continue
        (run,) = [r for r in runs if r.run_id == genome.source_run]
        assert run.champion_version == genome.version
        assert run.decision.startswith(("canary ", "kept")), run.decision
        if run.decision.startswith("kept"):
            continue
        # Its canary decided: promoted (then live, if no later champion was), or rolled back.
        (exp,) = [e for e in store.list_experiments(AGENT) if e.run_id == run.run_id]
        assert exp.candidate_version == genome.version and exp.verdict is not None, exp
        latest = genome.version == max(g.version for g in store.list_genomes(AGENT))
        if exp.verdict == Verdict.PROMOTED and latest:
            assert alias.primary_version == genome.version


def test_a_second_cycle_skips_the_run_another_drives(home, only_cartpole, tmp_path):
    env = _env(home, only_cartpole)
    first, gate = _held_run(tmp_path, env)
    try:
        second = _chimera_run(env)
        out, err = second.communicate(timeout=300)
        assert second.returncode == EXIT_SKIPPED, out + err
        assert "driven by execution cycle-" in err
        assert f"{AGENT}: skipped: " in out  # in the report too
    finally:
        gate.write_text("go")
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    _assert_consistent()
    (run,) = deps().store.list_runs(AGENT)
    assert run.decision.startswith(("canary ", "kept")), run.decision


def test_a_killed_cycle_is_taken_over_at_once(home, only_cartpole, tmp_path):
    env = _env(home, only_cartpole)
    first, _ = _held_run(tmp_path, env)
    first.send_signal(signal.SIGKILL)  # between two of its writes: no cleanup at all
    first.wait(timeout=60)
    second = _chimera_run(env)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, out + err
    _assert_consistent()
    (run,) = deps().store.list_runs(AGENT)
    assert run.generation >= 2
    assert any("resumed" in d.summary for d in deps().store.list_decisions(run.execution_id))


def test_two_cycles_started_together_leave_a_consistent_store(home, only_cartpole):
    env = _env(home, only_cartpole)
    procs = [_chimera_run(env), _chimera_run(env)]
    results = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert all(c in (0, EXIT_SKIPPED) for c in codes), results
    _assert_consistent()


# -- the lease, step by step ----------------------------------------------------------------
@pytest.fixture
def ports(home, only_cartpole):
    from chimera.services import discovery
    from chimera.services.contracts import DiscoverRequest

    discovery.discover(DiscoverRequest(execution_id="setup"), deps())
    return deps()


CHOICE = StrategyChoice(
    strategy="cma-es", population_size=4, max_generations=5, target_fitness=None, reason="test"
)


def _start(execution: str) -> evolution.StartResult:
    return evolution.start(
        StartRequest(execution_id=execution, agent_id=AGENT, choice=CHOICE), deps()
    )


def test_an_unknown_owner_keeps_its_lease_until_it_expires(ports):
    first = _start("external-1")  # not a tracked execution: only the lease's expiry tells
    assert first.phase == "evolve"
    skipped = _start("external-2")
    assert skipped.phase == "skip" and "external-1" in (skipped.reason or "")
    run = ports.store.get_run(first.run_id)
    ports.store.save_run(run.model_copy(update={"lease_until": utcnow() - timedelta(seconds=1)}))
    taken = _start("external-2")
    assert taken.phase == "evolve" and taken.resumed and taken.run_id == first.run_id
    assert ports.store.get_run(first.run_id).execution_id == "external-2"
    # The displaced execution can no longer drive the run, and its failure leaves it alone.
    with pytest.raises(ConflictError, match="driven by execution external-2"):
        evolution.ask(AskRequest(execution_id="external-1", run_id=first.run_id), ports)
    with pytest.raises(ConflictError):
        meta.adapt(AdaptRequest(execution_id="external-1", run_id=first.run_id), ports)
    error = {"Error": "ConflictError", "Cause": "displaced"}
    evolution.fail(FailRequest(execution_id="external-1", run_id=first.run_id, error=error), ports)
    assert ports.store.get_run(first.run_id).status == RunStatus.RUNNING


def test_a_finished_owner_gives_its_run_up_at_once(ports):
    with ports.workflows.track("tracked-1", {}):  # type: ignore[union-attr]
        first = _start("tracked-1")
    # tracked-1 has ended (SUCCEEDED) although the run's lease has not expired.
    taken = _start("tracked-2")
    assert taken.phase == "evolve" and taken.run_id == first.run_id


def test_two_starts_at_once_make_one_run(ports):
    """Both see no running run; the store's ACTIVE item lets one of them create it."""
    first = _start("racer-1")
    real, calls = ports.store.list_runs, []

    def stale_once(*args, **kwargs):  # racer-2 looked before racer-1's run existed
        calls.append(args)
        return [] if len(calls) == 1 else real(*args, **kwargs)

    ports.store.list_runs = stale_once  # type: ignore[method-assign]
    second = _start("racer-2")
    ports.store.list_runs = real  # type: ignore[method-assign]
    assert len(calls) >= 2  # it tried to create, was refused, and looked again
    assert second.phase == "skip" and second.run_id == first.run_id
    assert len(ports.store.list_runs(AGENT, status=RunStatus.RUNNING)) == 1
