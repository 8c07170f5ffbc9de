"""Layer 8's CommitCost is safe to run twice and survives the death of the process that
reserved: evolution-run's task retried after a lost answer charges nothing twice, and a
reservation whose segment's process was killed before CommitCost is settled, at what the
store shows ran, by the next placement once it expires; a late CommitCost then changes
nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from chimera import runtime
from chimera.services.resources import sweep_expired
from ledger_segments import EX, RUN, segment
from live_agents import start_live_cartpole

from chimera_local.workflows import handler_for

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def budget() -> tuple[float, float]:
    ports = runtime.deps()
    state = ports.store.budget_state(f"{ports.clock.now():%Y-%m}", ports.budget_usd)
    return state.held_usd, state.spent_usd


def test_commit_cost_run_twice_commits_once(home, only_cartpole):
    start_live_cartpole("cycle-1")
    placed = segment(1, commit=False)
    held_before, spent_before = budget()
    assert spent_before == 0 and held_before == pytest.approx(placed["reserved_usd"], abs=1e-6)
    commit = {"action": "commit_cost", **EX, "entry_id": placed["entry_id"]}
    first = handler_for("resources")(commit)
    second = handler_for("resources")(commit)  # the task again, after a lost answer
    assert first == second
    assert first["generations"] == 2 and first["actual_usd"] > 0
    held, spent = budget()
    assert spent == pytest.approx(first["actual_usd"], abs=1e-6)
    assert held == pytest.approx(spent, abs=1e-6)  # the rest of the reservation released
    (entry,) = runtime.deps().store.list_ledger(run_id=RUN)
    assert entry.status == "committed"
    commits = [d for d in runtime.deps().store.list_decisions(EX["execution_id"]) if d.key]
    assert [d.key for d in commits].count(f"resources:{placed['entry_id']}:commit") == 1


def test_commit_cost_killed_between_its_settle_and_its_decision(home, only_cartpole, monkeypatch):
    """The entry settled, the process dies before the decision: the retry commits nothing
    again and records the decision the kill lost, from the settled entry."""
    start_live_cartpole("cycle-1")
    placed = segment(1, commit=False)
    store = runtime.deps().store
    add_decision = type(store).add_decision

    def killed(self, decision):  # type: ignore[no-untyped-def]
        if decision.key and decision.key.endswith(":commit"):
            raise SystemExit("killed between the settle and the decision")
        return add_decision(self, decision)

    commit = {"action": "commit_cost", **EX, "entry_id": placed["entry_id"]}
    monkeypatch.setattr(type(store), "add_decision", killed)
    with pytest.raises(SystemExit):
        handler_for("resources")(commit)
    monkeypatch.setattr(type(store), "add_decision", add_decision)
    (entry,) = store.list_ledger(run_id=RUN)
    assert entry.status == "committed"
    _, spent = budget()
    retried = handler_for("resources")(commit)
    assert retried["actual_usd"] == entry.actual_usd and budget()[1] == spent  # charged once
    key = f"resources:{placed['entry_id']}:commit"
    (decided,) = [d for d in store.list_decisions(EX["execution_id"]) if d.key == key]
    assert decided.detail["generations"] == 2 and decided.detail["measured"] == "all"
    assert f"actual ${entry.actual_usd:.6f}" in decided.summary


KILLED_BEFORE_COMMIT = """
import os, signal
from live_agents import start_live_cartpole
from ledger_segments import segment
start_live_cartpole("cycle-1")
segment(1, commit=False)  # reserved, both generations told: CommitCost never comes
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_process_killed_between_reserve_and_commit_is_settled_once_it_expires(
    home, only_cartpole
):
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT / "layers_shared"), str(ROOT)])
    }
    done = subprocess.run([sys.executable, "-c", KILLED_BEFORE_COMMIT], env=env, cwd=ROOT)
    assert done.returncode == -9
    runtime.deps.cache_clear()
    ports = runtime.deps()
    (entry,) = ports.store.list_ledger(run_id=RUN)
    assert entry.status == "reserved" and entry.actual_usd is None
    held, spent = budget()
    assert spent == 0 and held == pytest.approx(entry.reserved_usd, abs=1e-6)

    # Before its expiry a sweep leaves it alone; after, it is settled at what ran.
    assert sweep_expired(ports, entry.period, ports.clock.now()) == []
    ports.clock.advance((entry.expires_at - ports.clock.now()).total_seconds() + 1)
    (settled,) = sweep_expired(ports, entry.period, ports.clock.now())
    assert settled.entry_id == entry.entry_id and settled.status != "reserved"
    assert settled.detail["generations"] == 2 and (settled.actual_usd or 0) > 0
    held, spent = budget()
    assert spent == pytest.approx(settled.actual_usd, abs=1e-6) and held == pytest.approx(spent)

    # The killed segment's CommitCost, arriving late, charges nothing again.
    late = handler_for("resources")({"action": "commit_cost", **EX, "entry_id": entry.entry_id})
    assert late["actual_usd"] == pytest.approx(settled.actual_usd)
    assert budget() == (held, spent)
