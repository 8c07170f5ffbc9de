"""Read-side use cases for the API and the CLI: agents, genomes, runs, experiments, health."""

from __future__ import annotations

import time
from collections.abc import Callable

from chimera.domain.errors import CorruptStateError
from chimera.domain.models import Agent, Alias, Experiment, ExperimentPoint, ExperimentStatus
from chimera.services.deps import Deps
from chimera.services.views import (
    AgentView,
    Check,
    ExperimentDetailView,
    ExperimentPointView,
    ExperimentView,
    FitnessPointView,
    GenomeView,
    Health,
    RunView,
)


def _agent_view(agent: Agent, alias: Alias | None, problems: tuple[str, ...] = ()) -> AgentView:
    m = agent.manifest
    return AgentView(
        agent_id=m.agent_id,
        suite=m.suite,
        description=m.description,
        obs_len=m.obs_len,
        genome=m.genome,
        limits=m.limits,
        module_digest=agent.module_digest,
        discovered_at=agent.discovered_at,
        live_version=alias.primary_version if alias else None,
        weights=dict(alias.weights) if alias else {},
        problems=list(problems),
    )


def list_agents(deps: Deps) -> list[AgentView]:
    """Every agent that reads; one whose alias does not is listed with the problem named
    (agents that do not read are skipped by the store and noted in its quarantine)."""
    views = []
    for agent in deps.store.list_agents():
        try:
            views.append(_agent_view(agent, deps.store.get_alias(agent.agent_id)))
        except CorruptStateError as exc:
            views.append(_agent_view(agent, None, (str(exc),)))
    return views


def get_agent(agent_id: str, deps: Deps) -> AgentView:
    return _agent_view(deps.store.get_agent(agent_id), deps.store.get_alias(agent_id))


def list_genomes(agent_id: str, deps: Deps) -> list[GenomeView]:
    names = [g.name for g in deps.store.get_agent(agent_id).manifest.genome]
    alias = deps.store.get_alias(agent_id)
    return [
        GenomeView(
            agent_id=agent_id,
            version=g.version,
            genes=dict(zip(names, g.genes, strict=True)),
            training_fitness=g.fitness,
            parent_version=g.parent_version,
            source_run=g.source_run,
            live_weight=alias.weights.get(g.version, 0.0) if alias else 0.0,
            created_at=g.created_at,
        )
        for g in deps.store.list_genomes(agent_id)
    ]


def get_run(run_id: str, deps: Deps) -> RunView:
    run = deps.store.get_run(run_id)
    history = [
        FitnessPointView(
            generation=p.generation, best=p.best, mean=p.mean, std=p.std, evaluations=p.evaluations
        )
        for p in deps.store.fitness_history(run_id)
    ]
    return RunView(
        **run.model_dump(
            include={
                "run_id",
                "agent_id",
                "suite",
                "seed",
                "population_size",
                "max_generations",
                "generation",
                "best_fitness",
                "incumbent_version",
                "champion_version",
                "decision",
                "started_at",
                "finished_at",
            }
        ),
        strategy=run.strategy.value,
        status=run.status.value,
        history=history,
    )


def experiment_view(exp: Experiment) -> ExperimentView:
    return ExperimentView(
        **exp.model_dump(
            include={
                "experiment_id",
                "agent_id",
                "run_id",
                "execution_id",
                "candidate_version",
                "incumbent_version",
                "step",
                "bakes",
                "p_value",
                "guardrail_p",
                "started_at",
                "step_started_at",
                "concluded_at",
                "reason",
                "config",
                "statistics",
            }
        ),
        status=exp.status.value,
        verdict=exp.verdict.value if exp.verdict is not None else None,
        weight=exp.weight,
    )


def _point_view(point: ExperimentPoint) -> ExperimentPointView:
    return ExperimentPointView(**point.model_dump(exclude={"experiment_id"}))


def list_experiments(
    deps: Deps, agent_id: str | None = None, status: ExperimentStatus | None = None
) -> list[ExperimentView]:
    """Experiments, newest first; of one agent (NotFoundError naming `agent_id` for an
    unknown one) and in one status when asked."""
    if agent_id is not None:
        deps.store.get_agent(agent_id)
    return [experiment_view(e) for e in deps.store.list_experiments(agent_id, status)]


def get_experiment(experiment_id: str, deps: Deps) -> ExperimentDetailView:
    """One experiment with every analysis it made: the statistic over time."""
    exp = deps.store.get_experiment(experiment_id)
    points = [_point_view(p) for p in deps.store.list_experiment_points(experiment_id)]
    return ExperimentDetailView(**experiment_view(exp).model_dump(), points=points)


def _check(probe: Callable[[], None]) -> Check:
    started = time.perf_counter()
    try:
        probe()
        ok, detail = True, ""
    except Exception as exc:  # noqa: BLE001 - a health check reports, it never raises
        ok, detail = False, f"{type(exc).__name__}: {exc}"[:300]
    return Check(ok=ok, latency_ms=round((time.perf_counter() - started) * 1000, 3), detail=detail)


EMPTY_MODULE = b"\0asm\x01\0\0\0"  # the smallest valid WebAssembly module


def _sandbox_probe(deps: Deps) -> None:
    info = deps.sandbox.inspect(EMPTY_MODULE)
    if info.imports or info.exports:
        raise RuntimeError("the empty module reported imports or exports")


def health(deps: Deps) -> Health:
    """Per-layer health: the store answers a read, the bus is reachable, the sandbox runs."""
    checks = {
        "store": _check(deps.store.ping),
        "bus": _check(deps.bus.ping),
        "sandbox": _check(lambda: _sandbox_probe(deps)),
    }
    return Health(status="ok" if all(c.ok for c in checks.values()) else "degraded", checks=checks)
