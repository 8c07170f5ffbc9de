"""Set-up shared by the experiment surfaces' tests: real canaries on the live CartPole agent.

A canary is started and analysed the way `canary-rollout` does it (the refinement handler's
tasks, the local executor's Wait driving live jobs through the alias), never written by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chimera.domain.models import Alias, Genome
from chimera.runtime import deps
from live_agents import start_live_cartpole

AGENT = "cartpole-linear"
GOOD = (0.0, 0.5, 10.0, 2.0, 0.0)  # pushes towards the pole's lean: balances for long


def canary_config() -> dict[str, Any]:
    """The deployment's canary, with CartPole's latency guardrail loosened: a job is a whole
    episode, so a policy that balances longer takes longer."""
    config = deps().settings.canary().model_dump(mode="json")
    config["guardrails"]["latency_p95_margin"] = 100.0
    return config


def live_with_candidate(setup: str = "setup") -> None:
    """cartpole-linear live on v1, and a better v2 evolved from it (not yet serving)."""
    start_live_cartpole(setup)
    deps().store.add_genome(Genome(agent_id=AGENT, version=2, genes=GOOD, parent_version=1))


def serve_only(version: int) -> None:
    """The alias all on `version` (as a promotion leaves it)."""
    store = deps().store
    alias = store.get_alias(AGENT)
    assert alias is not None
    store.set_alias(Alias(agent_id=AGENT, weights={version: 1.0}, revision=alias.revision + 1))


def run_canary(name: str, candidate: int = 2, incumbent: int = 1) -> dict[str, Any]:
    """The whole canary-rollout state machine, run by the local executor."""
    from chimera_local.workflows import local_executor, state_machine_arn

    return local_executor().start(
        state_machine_arn("canary-rollout"),
        {
            "agent_id": AGENT,
            "run_id": f"{name}-run",
            "candidate_version": candidate,
            "incumbent_version": incumbent,
            "config": canary_config(),
        },
        name=name,
    )


def start_canary(name: str, candidate: int = 2, incumbent: int = 1) -> dict[str, Any]:
    """A canary started and baked once, analysed once: running, with one point."""
    from chimera_local.workflows import bake, handler_for

    refinement = handler_for("refinement")
    step: dict[str, Any] = refinement(
        {
            "action": "start_experiment",
            "execution_id": name,
            "agent_id": AGENT,
            "run_id": f"{name}-run",
            "candidate_version": candidate,
            "incumbent_version": incumbent,
            "config": canary_config(),
        }
    )
    bake(step["bake_s"])
    return analyze(name, step)


def analyze(name: str, step: dict[str, Any]) -> dict[str, Any]:
    """The canary's Analyze task, as its execution would send it next."""
    from chimera_local.workflows import handler_for

    answer: dict[str, Any] = handler_for("refinement")(
        {
            "action": "analyze",
            "execution_id": name,
            "experiment_id": name,
            "step": step["step"],
            "bake": step["bake"],
        }
    )
    return answer


def events(home: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """What the local bus published (through the outbox), oldest first."""
    path = home / "events.jsonl"
    found = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [e for e in found if kind is None or e["detail-type"] == kind]
