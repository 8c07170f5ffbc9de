"""An operator's commands on experiments and aliases: what the API's POST routes and the CLI
call (`POST /experiments/{id}/stop`, `POST /agents/{id}/rollback`, `chimera rollback`).

Both go through layer 5's experiment service (`services.experiments.stop` and `rollback`):
the alias moves conditionally, with `GenomeRolledBack` (and `ExperimentConcluded` for a
stopped canary) through the outbox, and the decision is recorded.
"""

from __future__ import annotations

from chimera.domain.errors import ConflictError, NotFoundError
from chimera.domain.models import ExperimentStatus
from chimera.services import experiments
from chimera.services.deps import Deps
from chimera.services.queries import experiment_view
from chimera.services.views import ExperimentView, RollbackView


def stop_experiment(experiment_id: str, reason: str, deps: Deps) -> ExperimentView:
    """Stop a running experiment: its candidate out, the alias all on the incumbent.

    Idempotent for a retried request: an experiment already stopped with the same reason
    answers its view again. One concluded by its analysis, or stopped for another reason
    (an alarm, another operator), is a ConflictError naming its status: nothing changes.
    """
    exp = deps.store.get_experiment(experiment_id)  # NotFoundError naming it
    if exp.status == ExperimentStatus.RUNNING:
        exp = experiments.stop(deps, experiment_id, reason, exp.execution_id or experiment_id)
    if exp.status == ExperimentStatus.STOPPED and exp.reason == reason:
        return experiment_view(exp)
    verdict = exp.verdict.value if exp.verdict is not None else None
    raise ConflictError(
        f"experiment_id: {experiment_id} is {exp.status.value} ({verdict}: {exp.reason}), "
        "not running"
    )


def rollback_agent(agent_id: str, to_version: int | None, reason: str, deps: Deps) -> RollbackView:
    """Point the agent's alias at `to_version` (None: the version the live one evolved from,
    or, while a canary runs, its incumbent), stopping a running canary first.

    An unknown agent is a NotFoundError naming `agent_id`, an unknown version one naming
    `to_version` (checked before anything moves); a live version with no earlier one and no
    `to_version` is a ValidationFailedError naming `to_version`.
    """
    deps.store.get_agent(agent_id)
    before = deps.store.get_alias(agent_id)
    if before is None:
        raise NotFoundError("live alias of agent", agent_id, field="agent_id")
    if to_version is not None:
        try:
            deps.store.get_genome(agent_id, to_version)
        except NotFoundError as exc:
            raise NotFoundError("genome", f"{agent_id}@{to_version}", field="to_version") from exc
    previous, target, stopped = experiments.rollback(
        deps, agent_id, to_version, reason, f"operator:{agent_id}"
    )
    alias = deps.store.get_alias(agent_id)
    if alias is None:  # rollback wrote it or found it: only a deletion since removes it
        raise NotFoundError("live alias of agent", agent_id, field="agent_id")
    return RollbackView(
        agent_id=agent_id,
        from_version=previous,
        to_version=target,
        changed=alias.revision != before.revision,
        live_version=alias.primary_version,
        weights=dict(alias.weights),
        alias_revision=alias.revision,
        stopped_experiment=experiment_view(stopped) if stopped is not None else None,
    )
