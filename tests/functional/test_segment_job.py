"""The Batch segment job, driven as Batch drives it: `python -m gpu_jobs.segment.entrypoint`
with the job definition's command (its `Ref::` parameters substituted) in a subprocess, on a
local deployment; the run created by the evolution handler's `start` as evolution-run does.

The reference is the Lambda placement, driven in-process through the handlers exactly as
evolution-segment calls them (ask, one `evaluate` per shard, tell, adapt, and on while adapt
proceeds and the segment has generations left), segment after segment.

* A run segmented through the job (the torch twin on the CPU) ends where the Lambda
  placement ends: the same champion, optimizer state, fitness history and every candidate's
  fitness, generation for generation; so does an agent without a twin (the WASM sandbox).
* SIGTERM after generation k is told: the job finishes its generation, exits 143 between
  generations (nothing asked after the last tell), and Batch's reading of the job definition
  retries 143; the retry ends where an uninterrupted run ends. SIGKILL at a generation's ask
  or tell (its writes not all done): the next attempt ends there too.
* A twin that disagrees with the module refuses the job (exit 3, the agent named), before
  anything is asked or evaluated.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chimera import runtime
from chimera.settings import BUNDLED_AGENTS

from chimera_local.workflows import handler_for
from gpu_jobs.evaluate_population import definition
from gpu_jobs.segment import entrypoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hostile"))
from linear_wat import linear_agent  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
AGENT = "cartpole-linear"
EXECUTION = "segment-job"
SEED = 20_261_108
POPULATION = 24
SHARD_SIZE = "10"  # shards of 10, 10 and 4: the job must keep the Lambda path's layout
SEGMENT = 4  # generations per segment


def bundle(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    wasm: bytes | None = None,
    twin: bool = True,
) -> None:
    """A deployment with cartpole-linear only (its module replaced, or its twin removed)."""
    folder = tmp_path / "agents" / AGENT
    shutil.copytree(BUNDLED_AGENTS / AGENT, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    if wasm is not None:
        (folder / manifest["module"]).write_bytes(wasm)
    if not twin:
        assert manifest.pop("twin") == "linear-step"
        (folder / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("CHIMERA_AGENTS_DIR", str(folder.parent))
    monkeypatch.setenv("CHIMERA_SHARD_SIZE", SHARD_SIZE)
    runtime.deps.cache_clear()


def start_run(max_generations: int) -> str:
    """Discovery, validation, layer 6's choice and layer 7's start, as evolution-run calls them
    (the choice's population and generation budget made test-sized)."""
    handler_for("discovery")({"action": "discover", "execution_id": EXECUTION})
    ok = handler_for("validation")(
        {"action": "validate", "execution_id": EXECUTION, "agent_id": AGENT}
    )
    assert ok["ok"], ok
    choice = handler_for("meta_evolution")(
        {"action": "choose", "execution_id": EXECUTION, "agent_id": AGENT}
    )
    choice |= {"population_size": POPULATION, "max_generations": max_generations}
    started = handler_for("evolution")(
        {
            "action": "start",
            "execution_id": EXECUTION,
            "agent_id": AGENT,
            "choice": choice,
            "seed": SEED,
        }
    )
    return str(started["run_id"])


def lambda_segments(run_id: str) -> None:
    """The Lambda placement: evolution-segment's calls, segment after segment."""
    evolution, execution = handler_for("evolution"), handler_for("execution")
    meta = handler_for("meta_evolution")
    ref = {"execution_id": EXECUTION, "run_id": run_id}
    last = SEGMENT - 1
    while True:
        while True:
            ask = evolution({"action": "ask", **ref})
            for shard in ask["shards"]:
                execution({"action": "evaluate", **shard})
            tell = evolution({"action": "tell", **ref, "generation": ask["generation"]})
            adapt = meta({"action": "adapt", **ref})
            if not (adapt["proceed"] and tell["generation"] < last):
                break
        if not adapt["proceed"]:
            return
        last += SEGMENT


def job(run_id: str, last_generation: int, **popen: Any) -> subprocess.Popen[str]:
    """The job definition's command with Batch's parameter substitution, as a container."""
    command = definition.command(
        {"run_id": run_id, "execution_id": EXECUTION, "last_generation": str(last_generation)}
    )
    return subprocess.Popen(
        [sys.executable, *command[1:], "--device", "cpu"],
        cwd=REPO,
        env=os.environ | {"AWS_BATCH_JOB_ID": "local-test"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, dict[str, Any] | None, str]:
    out, err = proc.communicate(timeout=600)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return proc.returncode, (json.loads(lines[-1]) if lines else None), err


def job_segments(run_id: str, first_last: int = SEGMENT - 1) -> list[dict[str, Any]]:
    """evolution-run's segments, each one job run to its end: on while the job says proceed."""
    summaries, last = [], first_last
    while True:
        code, summary, err = finish(job(run_id, last))
        assert code == 0, err
        assert summary is not None
        summaries.append(summary)
        if not summary["proceed"]:
            return summaries
        last += SEGMENT


def outcome(run_id: str) -> dict[str, Any]:
    """Everything a run's result is: state, champion, history, every candidate's fitness."""
    store = runtime.deps().store
    run = store.get_run(run_id)
    generations = [store.get_generation(run_id, g) for g in range(run.generation)]
    return json.loads(
        json.dumps(
            {
                "generation": run.generation,
                "asked": run.asked_generation,
                "stop_reason": run.stop_reason,
                "best_fitness": run.best_fitness,
                "best_genes": run.best_genes,
                "optimizer": run.optimizer_state,
                "history": [
                    (p.generation, p.best, p.mean, p.std, p.evaluations)
                    for p in store.fitness_history(run_id)
                ],
                "fitness": [[i.fitness for i in g.individuals] for g in generations],
            }
        )
    )


@pytest.fixture
def in_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Path]]:
    """Switch CHIMERA_HOME (the handlers' and the job's deployment) to tmp_path/<name>."""

    def switch(name: str) -> Path:
        monkeypatch.setenv("CHIMERA_HOME", str(tmp_path / name))
        monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
        runtime.deps.cache_clear()
        return tmp_path / name

    yield switch
    runtime.deps.cache_clear()


def lambda_reference(in_home: Callable[[str], Path], max_generations: int) -> dict[str, Any]:
    in_home("lambda")
    run_id = start_run(max_generations)
    lambda_segments(run_id)
    return outcome(run_id)


@pytest.mark.slow
@pytest.mark.parametrize("twin", [True, False], ids=["torch-twin", "wasm"])
def test_segmented_through_the_job_ends_as_the_lambda_placement(
    tmp_path, monkeypatch, in_home, twin
):
    bundle(tmp_path, monkeypatch, twin=twin)
    generations = 10 if twin else 5
    reference = lambda_reference(in_home, generations)
    assert reference["generation"] >= 5 and reference["asked"] is None

    in_home("batch")
    run_id = start_run(generations)
    summaries = job_segments(run_id)
    assert outcome(run_id) == reference
    # One job per segment, each telling its segment's generations and no more.
    assert [s["generations"] for s in summaries[:-1]] == [SEGMENT] * (len(summaries) - 1)
    assert sum(s["generations"] for s in summaries) == reference["generation"]
    assert sum(s["evaluations"] for s in summaries) == POPULATION * reference["generation"]
    assert {(s["device"], s["twin"]) for s in summaries} == {
        ("cpu", "linear-step" if twin else None)
    }


def wait_for(run_id: str, ready: Callable[[Any], bool], proc: subprocess.Popen[str]) -> None:
    store = runtime.deps().store
    while not ready(store.get_run(run_id)):
        assert proc.poll() is None, "the job ended before the point to interrupt it"
        time.sleep(0.005)


GENERATIONS = 16  # enough for a job to be interrupted mid-way


@pytest.mark.slow
def test_sigterm_stops_between_generations_and_the_retry_ends_as_an_uninterrupted_run(
    tmp_path, monkeypatch, in_home
):
    bundle(tmp_path, monkeypatch)
    reference = lambda_reference(in_home, GENERATIONS)
    in_home("batch")
    run_id = start_run(GENERATIONS)
    last = GENERATIONS - 1  # one segment: the whole run in one job, interrupted
    proc = job(run_id, last)
    wait_for(run_id, lambda run: run.generation >= 3, proc)  # generation 2 told
    proc.send_signal(signal.SIGTERM)
    code, summary, err = finish(proc)
    assert code == entrypoint.EXIT_SIGTERM == 143, err
    assert "SIGTERM" in err
    assert summary is not None and summary["interrupted"] and summary["proceed"]
    run = runtime.deps().store.get_run(run_id)
    # Stopped between generations: its last generation told, nothing asked after it.
    assert run.asked_generation is None and run.generation == summary["generation"] >= 3
    assert run.generation < reference["generation"]  # the retry has generations to run
    # Batch's reading of the job definition: the attempt is retried.
    reason = "Essential container in task exited"
    assert definition.action_on_exit(exit_code=code, status_reason=reason) == "RETRY"
    code, resumed, err = finish(job(run_id, last))
    assert code == 0, err
    assert resumed is not None and resumed["first_generation"] == run.generation
    assert outcome(run_id) == reference


@pytest.mark.slow
@pytest.mark.parametrize("at", ["asked", "told"])
def test_sigkill_mid_way_resumes_to_the_same_champion(tmp_path, monkeypatch, in_home, at):
    bundle(tmp_path, monkeypatch)
    reference = lambda_reference(in_home, GENERATIONS)
    in_home("batch")
    run_id = start_run(GENERATIONS)
    last = GENERATIONS - 1
    proc = job(run_id, last)
    if at == "asked":  # a generation from 3 on asked (its shards maybe partly stored)
        wait_for(run_id, lambda run: (run.asked_generation or 0) >= 3, proc)
    else:  # generation 3 told (its adapt maybe not asked yet), or one after it
        wait_for(run_id, lambda run: run.generation >= 4, proc)
    proc.kill()
    code, _, _ = finish(proc)
    assert code == -signal.SIGKILL
    killed_at = runtime.deps().store.get_run(run_id)
    assert killed_at.generation < reference["generation"]  # mid-way, not after the end
    code, resumed, err = finish(job(run_id, last))
    assert code == 0, err
    assert resumed is not None and resumed["first_generation"] == killed_at.generation
    assert outcome(run_id) == reference


def test_a_twin_that_disagrees_refuses_the_job_before_any_evaluation(
    tmp_path, monkeypatch, in_home
):
    # cartpole-linear's policy with its step inverted: a valid agent, not its twin.
    bundle(tmp_path, monkeypatch, wasm=linear_agent(4, step=True, twist="flip-sign"))
    in_home("batch")
    run_id = start_run(5)
    code, summary, err = finish(job(run_id, SEGMENT - 1))
    assert code == entrypoint.EXIT_TWIN_REFUSED == 3
    assert summary is None
    assert f"agent {AGENT}: twin refused" in err
    reason = "Essential container in task exited"
    assert definition.action_on_exit(exit_code=code, status_reason=reason) == "EXIT"
    store = runtime.deps().store
    run = store.get_run(run_id)
    assert (run.generation, run.asked_generation) == (0, None)  # nothing asked
    assert store.fitness_history(run_id) == []


def test_another_executions_run_and_bad_arguments_are_refused(tmp_path, monkeypatch, in_home):
    bundle(tmp_path, monkeypatch)
    in_home("batch")
    run_id = start_run(5)
    command = definition.command(
        {"run_id": run_id, "execution_id": "someone-else", "last_generation": "3"}
    )
    done = subprocess.run(
        [sys.executable, *command[1:], "--device", "cpu"],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == entrypoint.EXIT_FAILED
    assert "ConflictError" in done.stderr and "someone-else" in done.stderr
    assert runtime.deps().store.get_run(run_id).asked_generation is None
    code, _, err = finish(job(run_id, "three"))  # type: ignore[arg-type]
    assert code == entrypoint.EXIT_USAGE and "--last-generation" in err
