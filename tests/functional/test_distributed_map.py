"""The Lambda placement's scale-out: a generation of more shards than the deployment's
`distributed_map_threshold` is staged in the artifact store and evaluated by evolution-segment's
Distributed Map (ItemReader, one child execution per shard, ToleratedFailurePercentage 10,
ResultWriter), then CollectShards scores every shard the map run did not complete as failed
for its candidates, with its error. All through the deployed ASL, run by the local executor,
with the real handlers.

CartPole's population is 24; with CHIMERA_SHARD_SIZE=2 a generation is 12 shards, so one
failed shard (8 %) is tolerated and two (17 %) are not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from chimera import runtime
from chimera.domain.errors import UnavailableError

from chimera_local.asl import ExecutionFailedError
from chimera_local.workflows import function_arn, handler_for, local_executor, state_machine_arn

AGENT = "cartpole-linear"
EVENT: dict[str, Any] = {"execution_id": "scale", "agent_id": AGENT, "segment_generations": 2}
DISTRIBUTED = "evolution-segment/EvaluateShardsDistributed"
SHARDS = 12  # 24 candidates, 2 per shard


class Killed(BaseException):
    """The process dies here (not an error any handler or engine catches)."""


@pytest.fixture
def small_shards(home: Path, only_cartpole: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CHIMERA_SHARD_SIZE", "2")
    monkeypatch.setenv("CHIMERA_DISTRIBUTED_MAP_THRESHOLD", "4")
    runtime.deps.cache_clear()
    return home


def evolve(wrap=None, max_generations: int | None = None, tolerate: float | None = None):
    """evolution-run with the real handlers (the execution function wrapped by `wrap`, the
    run's generations capped, the Distributed Map's tolerated failure percentage changed);
    returns the executor and the output (or the ExecutionFailedError)."""
    handler_for("discovery")({"action": "discover", "execution_id": EVENT["execution_id"]})
    validated = handler_for("validation")(
        {"action": "validate", "execution_id": EVENT["execution_id"], "agent_id": EVENT["agent_id"]}
    )
    assert validated["ok"], validated
    executor = local_executor()
    if tolerate is not None:
        segment = executor.machines[state_machine_arn("evolution-segment")].definition
        segment["States"]["EvaluateShardsDistributed"]["ToleratedFailurePercentage"] = tolerate
    execution = function_arn("execution")
    if wrap is not None:
        executor.functions[execution] = wrap(executor.functions[execution])
    if max_generations is not None:
        meta = function_arn("meta_evolution")
        choose = executor.functions[meta]

        def fewer(event: dict[str, Any]) -> Any:
            out = choose(event)
            if event["action"] == "choose":
                out["max_generations"] = max_generations
            return out

        executor.functions[meta] = fewer
    try:
        out = executor.start(state_machine_arn("evolution-run"), EVENT, "scale-run")
    except ExecutionFailedError as exc:
        out = exc
    return executor, out


def run_state() -> dict[str, Any]:
    store = runtime.deps().store
    (run,) = store.list_runs(AGENT)
    champion = store.get_genome(AGENT, run.champion_version).genes if run.champion_version else None
    return {
        "status": run.status.value,
        "generation": run.generation,
        "history": json.dumps(
            [(p.generation, p.best, p.mean) for p in store.fitness_history(run.run_id)]
        ),
        "champion": champion,
    }


def children(executor) -> list[Any]:
    return [h for h in executor.executions.values() if h.machine == DISTRIBUTED]


@pytest.mark.slow
def test_above_the_threshold_the_distributed_map_gives_the_inline_maps_champion(
    small_shards, tmp_path, monkeypatch
):
    executor, out = evolve(max_generations=3)
    assert not isinstance(out, ExecutionFailedError), out
    distributed = run_state()
    generations = distributed["generation"]
    assert generations == 3 and distributed["status"] == "succeeded"
    # One child execution per shard per generation, each of them succeeded; the segments'
    # own histories hold no map iteration (the children have their own).
    assert len(children(executor)) == SHARDS * generations
    assert all(h.status == "SUCCEEDED" for h in children(executor))
    segments = [h for h in executor.executions.values() if h.machine == "evolution-segment"]
    assert segments and all("MapIterationStarted" not in h.events for h in segments)
    assert sum(h.events.count("MapRunSucceeded") for h in segments) == generations
    manifests = sorted((small_shards / "blobs" / "distributed-map").rglob("manifest.json"))
    assert len(manifests) == generations

    monkeypatch.setenv("CHIMERA_HOME", str(tmp_path / "inline-home"))
    monkeypatch.setenv("CHIMERA_DISTRIBUTED_MAP_THRESHOLD", str(SHARDS))  # 12 shards: inline
    runtime.deps.cache_clear()
    executor, out = evolve(max_generations=3)
    assert not isinstance(out, ExecutionFailedError), out
    assert children(executor) == []
    assert not (tmp_path / "inline-home" / "blobs" / "distributed-map").exists()
    assert run_state() == distributed


def breaking(broken: set[tuple[int, int]], calls: list[tuple[int, int]]):
    """The execution function, with the shards in `broken` ((generation, shard)) failing on
    every attempt as a throttled dependency would: the task's Retry tries them 4 times."""

    def wrap(handler):
        def execution(event: dict[str, Any]) -> Any:
            if event["action"] == "evaluate":
                key = (event["generation"], event["shard"])
                calls.append(key)
                if key in broken:
                    raise UnavailableError(f"shard {key} cannot reach its sandbox host")
            return handler(event)

        return execution

    return wrap


def twice(handler):
    """Stage and Collect each run twice, as a retry after a lost answer would: the second
    answer must be the first."""

    def execution(event: dict[str, Any]) -> Any:
        if event["action"] not in ("stage", "collect"):
            return handler(event)
        first, second = handler(event), handler(event)
        assert second == first, event["action"]
        return second

    return execution


def test_a_shard_failing_past_its_retries_is_failed_fitness_for_exactly_its_candidates(
    small_shards,
):
    calls: list[tuple[int, int]] = []
    inject = breaking({(0, 5)}, calls)
    executor, out = evolve(wrap=lambda h: twice(inject(h)), max_generations=2)
    assert not isinstance(out, ExecutionFailedError), out  # 1 of 12 shards: tolerated
    assert calls.count((0, 5)) == 4  # the first attempt and 3 retries
    store = runtime.deps().store
    (run,) = store.list_runs(AGENT)
    assert run.status.value == "succeeded" and run.generation == 2
    generation = store.get_generation(run.run_id, 0)
    failed = {i.index for i in generation.individuals if i.fitness is None}  # told: failed
    assert failed == {10, 11}  # shard 5 of 2 candidates each, and no other
    assert len(generation.individuals) == 24
    stored = store.get_shard_fitness(run.run_id, 0)
    for index in (10, 11):
        assert stored[index]["error"].startswith("UnavailableError: ")
        assert "shard (0, 5) cannot reach its sandbox host" in stored[index]["error"]
    assert not any("error" in stored[i] for i in range(24) if i not in (10, 11))
    (decision,) = [d for d in store.list_decisions(EVENT["execution_id"]) if d.layer == "execution"]
    assert decision.detail["failed_shards"] == [5] and decision.detail["generation"] == 0
    assert "1 of 12 shard(s) failed past their retries" in decision.summary
    # The failed child is in the ResultWriter's FAILED file, with its error.
    (failed_file,) = (small_shards / "blobs").rglob("FAILED_0.json")
    (entry,) = json.loads(failed_file.read_text())
    assert entry["Status"] == "FAILED" and entry["Error"] == "UnavailableError"
    assert json.loads(entry["Input"])["shard"] == 5


def test_failures_above_the_tolerance_fail_the_map_and_the_run_records_why(small_shards):
    calls: list[tuple[int, int]] = []
    executor, out = evolve(wrap=breaking({(0, 2), (0, 7)}, calls), max_generations=2)
    assert isinstance(out, ExecutionFailedError) and out.error == "EvolutionRunFailed"
    store = runtime.deps().store
    (run,) = store.list_runs(AGENT)
    assert run.status.value == "failed" and run.generation == 0  # never told
    assert run.decision.startswith("failed: States.ExceedToleratedFailureThreshold: ")
    assert "2 of 12 item(s) failed" in run.decision
    (segment,) = (h for h in executor.executions.values() if h.machine == "evolution-segment")
    assert "MapRunFailed" in segment.events and "MapStateFailed" in segment.events
    assert segment.status == "FAILED"


def test_collect_killed_between_its_writes_completes_when_run_again(small_shards, monkeypatch):
    """Two failed shards; the first Collect dies after writing the first one's fitness. The
    state machine's retry runs it again: both shards are recorded, the decision once."""
    calls: list[tuple[int, int]] = []
    inject = breaking({(0, 1), (0, 9)}, calls)
    killed: list[str] = []

    def dying(handler):
        inner = inject(handler)

        def execution(event: dict[str, Any]) -> Any:
            if event["action"] != "collect" or killed:
                return inner(event)
            store = runtime.deps().store
            put = store.put_shard_fitness

            def put_then_die(*args: Any) -> None:
                put(*args)
                raise Killed("SIGKILL after the first shard's write")

            monkeypatch.setattr(store, "put_shard_fitness", put_then_die)
            try:
                inner(event)
            except Killed as exc:
                killed.append(str(exc))
            finally:
                monkeypatch.setattr(store, "put_shard_fitness", put)
            return inner(event)  # the retry, in a fresh process

        return execution

    # 2 of 12 shards exceed 10 %: tolerate them for this test (ToleratedFailurePercentage 20).
    executor, out = evolve(wrap=dying, max_generations=1, tolerate=20)
    assert killed, "collect was never killed"
    assert not isinstance(out, ExecutionFailedError), out
    store = runtime.deps().store
    (run,) = store.list_runs(AGENT)
    stored = store.get_shard_fitness(run.run_id, 0)
    assert sorted(i for i in stored if "error" in stored[i]) == [2, 3, 18, 19]
    decisions = [d for d in store.list_decisions(EVENT["execution_id"]) if d.layer == "execution"]
    assert [d.detail["failed_shards"] for d in decisions] == [[1, 9]]
