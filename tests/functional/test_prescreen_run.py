"""Pre-screening inside real runs: the agent's performance predictor, installed where the
training pipeline puts it (`predictor.blob_key(agent_id)` in the blob store), screens the
optimizer's candidates in Layer 7's ask, and only the kept share is evaluated.

* evolution-run through the local executor with the real handlers, on CartPole (its suite opts
  in at one half of CMA-ES's λ 24): every generation evaluates 12 candidates, the fitness
  history (what layer 8's actual cost reads) counts 12 evaluations a generation, each screen is
  recorded once, and the run ends as an unscreened run does. The predictor here is trained by
  the training entrypoint on the exported history of a first, unscreened run.
* The ask task invoked twice (a Step Functions retry) gives the same candidates; an ask killed
  before its write gives, on retry, the candidates the lost write held.
* A stale predictor (other genes) and a corrupt one (not JSON, wrong shapes) are ignored with a
  decision, once per run: every candidate is evaluated and the run goes on.
* CHIMERA_PRESCREEN=off evaluates every candidate although a predictor is installed.
* Layer 8's Place prices a screened segment at the kept share, an unscreened one at λ.
* The batch placement (the segment job calls the same ask in its process) gives the Lambda
  placement's champion and history for the same seed, screened alike.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from chimera import runtime
from chimera.domain.models import Decision
from chimera.domain.predictor import DenseLayer, PredictorMetrics, PredictorModel, blob_key
from chimera.domain.prices import Work, load_prices, segment_cost
from chimera.domain.suites import get_suite
from chimera.services.resources import SEGMENT_SHAPES

from chimera_local.asl import ExecutionFailedError
from chimera_local.workflows import handler_for, local_executor, state_machine_arn

AGENT = "cartpole-linear"
GENES = ("w_x", "w_x_dot", "w_theta", "w_theta_dot", "bias")
LAMBDA = 24  # Layer 6's CMA-ES population for 5 genes
KEPT = math.ceil(0.5 * LAMBDA)  # CartPole's prescreen_keep


def _call(package: str, event: dict[str, Any]) -> Any:
    return handler_for(package)(json.loads(json.dumps(event)))


def _register(execution_id: str) -> None:
    _call("discovery", {"action": "discover", "execution_id": execution_id})
    validated = _call(
        "validation", {"action": "validate", "execution_id": execution_id, "agent_id": AGENT}
    )
    assert validated["ok"], validated


def _start(execution_id: str, seed: int = 11) -> str:
    ex = {"execution_id": execution_id}
    choice = _call("meta_evolution", {"action": "choose", **ex, "agent_id": AGENT})
    assert choice["population_size"] == LAMBDA
    started = _call(
        "evolution", {"action": "start", **ex, "agent_id": AGENT, "choice": choice, "seed": seed}
    )
    return str(started["run_id"])


def _generation(execution_id: str, run_id: str) -> dict[str, Any]:
    """One generation as evolution-segment drives it: ask, evaluate every shard, tell."""
    ex = {"execution_id": execution_id}
    asked = _call("evolution", {"action": "ask", **ex, "run_id": run_id})
    for shard in asked["shards"]:
        _call("execution", {"action": "evaluate", **shard})
    gen = asked["generation"]
    _call("evolution", {"action": "tell", **ex, "run_id": run_id, "generation": gen})
    return dict(asked)


def hand_model(genes: tuple[str, ...] = GENES, seed: int = 0) -> PredictorModel:
    """A predictor with numpy weights (a tanh layer of 8 units), as the training job writes."""
    rng = np.random.default_rng(seed)
    n = len(genes) + 1  # genes, then the generation
    return PredictorModel(
        agent_id=AGENT,
        suite="cartpole-v1",
        genes=genes,
        context=("generation",),
        targets=("fitness",),
        x_mean=(0.0,) * n,
        x_std=(5.0,) * n,
        y_mean=(100.0,),
        y_std=(50.0,),
        layers=(
            DenseLayer(weight=tuple(map(tuple, rng.normal(size=(8, n)))), bias=(0.0,) * 8),
            DenseLayer(weight=(tuple(rng.normal(size=8)),), bias=(0.0,)),
        ),
        metrics=PredictorMetrics(
            r2=(0.5,), within_10pct=(0.1,), n_train=100, n_test=20, split="runs"
        ),
    )


def install(data: bytes) -> None:
    runtime.deps().store.blobs.put(blob_key(AGENT), data)


def decisions(execution_id: str, marker: str) -> list[Decision]:
    found = runtime.deps().store.list_decisions(execution_id)
    return [d for d in found if d.key is not None and marker in d.key]


def evolve(execution_id: str, **event: Any) -> Any:
    """evolution-run with the real handlers; its output, or the error it failed with."""
    executor = local_executor()
    request = {"execution_id": execution_id, "agent_id": AGENT, **event}
    try:
        return executor.start(state_machine_arn("evolution-run"), request, execution_id)
    except ExecutionFailedError as exc:
        return exc


def run_state() -> dict[str, Any]:
    store = runtime.deps().store
    (run,) = store.list_runs(AGENT)
    history = store.fitness_history(run.run_id)
    return {
        "status": run.status.value,
        "generation": run.generation,
        "decision": (run.decision or "").split(";")[0],
        "champion": run.best_genes,
        "history": json.dumps([(p.generation, p.best, p.mean, p.evaluations) for p in history]),
    }


@pytest.mark.slow
def test_a_screened_evolution_run_evaluates_the_kept_share_and_ends_as_a_run_does(
    home, only_cartpole, tmp_path
):
    from gpu_jobs.predictor.dataset import export_history
    from gpu_jobs.predictor.train import MODEL_FILE, train

    runtime.deps.cache_clear()
    _register("history")
    # A first run, unscreened (no predictor yet): its history is the training set.
    plain = _start("history", seed=1)
    for _ in range(3):
        asked = _generation("history", plain)
        assert sum(s["stop"] - s["start"] for s in asked["shards"]) == LAMBDA
    _call(
        "evolution",
        {"action": "finish", "execution_id": "history", "run_id": plain, "reason": "history"},
    )
    store = runtime.deps().store
    assert export_history(store, AGENT, tmp_path / "data") == 3 * LAMBDA
    train(tmp_path / "data", tmp_path / "model", {"epochs": "30", "hidden": "16"})
    trained = (tmp_path / "model" / MODEL_FILE).read_bytes()
    install(trained)
    r2 = json.loads(trained)["metrics"]["r2"][0]

    out = evolve("screened")
    assert not isinstance(out, ExecutionFailedError), out
    (run,) = [r for r in store.list_runs(AGENT) if r.run_id != plain]
    assert run.status.value == "succeeded" and run.generation >= 1
    assert run.decision and ("canary" in run.decision or "kept v" in run.decision)
    history = store.fitness_history(run.run_id)
    assert [p.generation for p in history] == list(range(run.generation))
    # Only the kept share was stored, evaluated and counted (layer 8's actual reads this).
    for number in range(run.generation):
        generation = store.get_generation(run.run_id, number)
        assert [i.index for i in generation.individuals] == list(range(KEPT))
        assert all(i.fitness is not None for i in generation.individuals)
        assert len(store.get_shard_fitness(run.run_id, number)) == KEPT
    assert [p.evaluations for p in history] == [KEPT] * run.generation
    # The optimizer completed every generation (the rejected were told in ask, the kept in
    # tell): its own count agrees with the run's, and each generation used λ trial ids.
    assert run.optimizer_state["generation"] == run.generation
    assert run.optimizer_state["next_trial"] == LAMBDA * run.generation
    # One decision per screened generation: asked λ, kept the share, one of them at random.
    screened = decisions("screened", ":prescreen")
    assert sorted(d.detail["generation"] for d in screened) == list(range(run.generation))
    for d in screened:
        assert (d.detail["asked"], d.detail["kept"], d.detail["explored"]) == (LAMBDA, KEPT, 1)
        assert d.detail["r2"] == pytest.approx(r2)
        assert d.detail["predictor"] == f"predictors/{AGENT}/model.json"
    # The first run asked with no predictor: nothing screened, nothing recorded about it.
    assert decisions("history", "prescreen") == []


def test_a_retried_or_killed_ask_gives_the_same_screened_candidates(
    home, only_cartpole, monkeypatch
):
    runtime.deps.cache_clear()
    _register("retry")
    install(hand_model().model_dump_json().encode())
    run_id = _start("retry")
    store = runtime.deps().store

    # An ask killed just before its write: nothing is stored, the retry screens alike.
    lost: list[Any] = []
    save_asked = type(store).save_asked

    def killed(self: Any, run: Any, generation: Any) -> None:
        lost.append(generation)
        raise SystemExit("killed between the reads and the write")

    monkeypatch.setattr(type(store), "save_asked", killed)
    with pytest.raises(SystemExit):
        _call("evolution", {"action": "ask", "execution_id": "retry", "run_id": run_id})
    monkeypatch.setattr(type(store), "save_asked", save_asked)
    assert store.get_run(run_id).asked_generation is None
    assert decisions("retry", ":prescreen") == []

    ask = {"action": "ask", "execution_id": "retry", "run_id": run_id}
    first = _call("evolution", ask)
    stored = store.get_generation(run_id, 0)
    assert stored.individuals == lost[0].individuals  # the same screen, the same candidates
    assert len(stored.individuals) == KEPT
    assert sum(s["stop"] - s["start"] for s in first["shards"]) == KEPT

    # The ask task invoked twice (Step Functions retries it): the same shards, nothing new.
    state = store.get_run(run_id).optimizer_state
    again = _call("evolution", ask)
    assert again == first
    assert store.get_generation(run_id, 0) == stored
    assert store.get_run(run_id).optimizer_state == state
    (decided,) = decisions("retry", ":prescreen")
    assert (decided.detail["asked"], decided.detail["kept"]) == (LAMBDA, KEPT)
    assert decided.detail["r2"] == 0.5

    # The generation completes with the kept candidates only; the next ask screens again.
    for shard in first["shards"]:
        _call("execution", {"action": "evaluate", **shard})
    _call(
        "evolution", {"action": "tell", "execution_id": "retry", "run_id": run_id, "generation": 0}
    )
    (point,) = store.fitness_history(run_id)
    assert point.evaluations == KEPT
    nxt = _call("evolution", ask)
    assert nxt["generation"] == 1 and sum(s["stop"] - s["start"] for s in nxt["shards"]) == KEPT


def test_a_repeated_ask_records_a_decision_lost_to_a_kill_after_the_write(
    home, only_cartpole, monkeypatch
):
    """The screen's decision is written after the generation; a process killed between the
    two leaves the decision to the retried ask, which finds the candidates stored."""
    runtime.deps.cache_clear()
    _register("late")
    install(hand_model().model_dump_json().encode())
    run_id = _start("late")
    store = runtime.deps().store
    add_decision = type(store).add_decision

    def killed(self: Any, decision: Decision) -> bool:
        if decision.key and ":prescreen" in decision.key:
            raise SystemExit("killed after the write, before the decision")
        return add_decision(self, decision)

    monkeypatch.setattr(type(store), "add_decision", killed)
    with pytest.raises(SystemExit):
        _call("evolution", {"action": "ask", "execution_id": "late", "run_id": run_id})
    monkeypatch.setattr(type(store), "add_decision", add_decision)
    assert store.get_run(run_id).asked_generation == 0
    assert decisions("late", ":prescreen") == []
    _call("evolution", {"action": "ask", "execution_id": "late", "run_id": run_id})
    (decided,) = decisions("late", ":prescreen")
    assert (decided.detail["asked"], decided.detail["kept"], decided.detail["explored"]) == (
        LAMBDA,
        KEPT,
        1,
    )


@pytest.mark.parametrize(
    ("blob", "field"),
    [
        (hand_model(genes=("a", "b", "c", "d", "e")).model_dump_json().encode(), "predictor.genes"),
        (  # a data set without gene names trains positional ones: the right count is not enough
            hand_model(genes=("g0", "g1", "g2", "g3", "g4")).model_dump_json().encode(),
            "predictor.genes",
        ),
        (
            hand_model().model_copy(update={"suite": "breast-cancer"}).model_dump_json().encode(),
            "predictor.suite",
        ),
        (b"{not json", "predictor"),
        (
            json.dumps(
                {**json.loads(hand_model().model_dump_json()), "y_mean": [1.0, 2.0]}
            ).encode(),
            "y_mean",
        ),
    ],
    ids=["stale-genes", "positional", "other-suite", "not-json", "wrong-shapes"],
)
def test_a_predictor_that_does_not_fit_is_ignored_with_a_decision(home, only_cartpole, blob, field):
    runtime.deps.cache_clear()
    _register("stale")
    install(blob)
    run_id = _start("stale")
    for number in range(2):
        asked = _generation("stale", run_id)
        assert asked["generation"] == number
        assert sum(s["stop"] - s["start"] for s in asked["shards"]) == LAMBDA
    store = runtime.deps().store
    assert [p.evaluations for p in store.fitness_history(run_id)] == [LAMBDA, LAMBDA]
    assert decisions("stale", ":prescreen:") == []  # nothing screened
    (ignored,) = decisions("stale", "prescreen-ignored")  # once per run and blob
    assert field in ignored.detail["field"]
    assert ignored.detail["predictor"] == f"predictors/{AGENT}/model.json"
    assert "ignored, every candidate is evaluated" in ignored.summary
    assert store.get_run(run_id).status.value == "running"


def test_the_deployment_switch_turns_the_screen_off(home, only_cartpole, monkeypatch):
    monkeypatch.setenv("CHIMERA_PRESCREEN", "off")
    runtime.deps.cache_clear()
    _register("off")
    install(hand_model().model_dump_json().encode())
    run_id = _start("off")
    asked = _generation("off", run_id)
    assert sum(s["stop"] - s["start"] for s in asked["shards"]) == LAMBDA
    assert [p.evaluations for p in runtime.deps().store.fitness_history(run_id)] == [LAMBDA]
    assert decisions("off", "prescreen") == []

    # Switched on again, the same agent's next run is screened.
    monkeypatch.setenv("CHIMERA_PRESCREEN", "on")
    runtime.deps.cache_clear()
    asked = _generation("off", run_id)
    assert sum(s["stop"] - s["start"] for s in asked["shards"]) == KEPT


@pytest.mark.slow
def test_a_screened_run_gives_the_same_champion_on_batch_as_on_lambda(
    home, only_cartpole, tmp_path, monkeypatch
):
    results = {}
    for placement in ("batch", "lambda"):
        monkeypatch.setenv("CHIMERA_HOME", str(tmp_path / f"{placement}-home"))
        monkeypatch.setenv("CHIMERA_PLACEMENT", placement)
        runtime.deps.cache_clear()
        _register(f"run-{placement}")
        install(hand_model(seed=3).model_dump_json().encode())
        out = evolve("same-seed", segment_generations=3)
        assert not isinstance(out, ExecutionFailedError), out
        results[placement] = run_state()
        store = runtime.deps().store
        (run,) = store.list_runs(AGENT)
        assert run.generation >= 2
        assert [p.evaluations for p in store.fitness_history(run.run_id)] == [KEPT] * run.generation
        assert len(decisions("same-seed", ":prescreen")) == run.generation
        jobs = sorted((tmp_path / f"{placement}-home" / "jobs").glob("*.log"))
        assert bool(jobs) == (placement == "batch")  # the batch run's segments ran as jobs
    assert results["batch"] == results["lambda"]


def test_layer_8_prices_the_share_a_screen_evaluates(home, only_cartpole):
    """Place (evolution-run's task) prices a screened segment at the kept share of λ, and an
    unscreened one (the model ignored as corrupt) at λ: the reservation is what will run."""
    runtime.deps.cache_clear()
    _register("priced")
    settings = runtime.deps().settings

    def estimate(evaluations: int) -> float:
        work = Work(
            generations=5,
            population=evaluations,
            seconds_per_evaluation=get_suite("cartpole-v1").seconds_per_evaluation,
            shard_size=settings.shard_size,
        )
        shape = SEGMENT_SHAPES[("lambda", False)]
        cost = segment_cost(
            load_prices(),
            "lambda",
            work,
            shape,
            memory_mb=settings.evaluator_memory_mb,
            architecture=settings.evaluator_architecture,
        )
        return cost.usd

    placed = {}
    for execution, blob in (("screened", hand_model()), ("ignored", None)):
        install(b"{not json" if blob is None else blob.model_dump_json().encode())
        run_id = _start(execution)
        ex = {"execution_id": execution, "run_id": run_id}
        placed[execution] = _call("resources", {"action": "place", **ex, "last_generation": 4})
        _call("evolution", {"action": "finish", **ex, "reason": "priced"})
    assert placed["screened"]["placement"] == placed["ignored"]["placement"] == "lambda"
    assert placed["screened"]["estimated_usd"] == pytest.approx(estimate(KEPT), rel=1e-9)
    assert placed["ignored"]["estimated_usd"] == pytest.approx(estimate(LAMBDA), rel=1e-9)
    assert placed["screened"]["estimated_usd"] < placed["ignored"]["estimated_usd"]
