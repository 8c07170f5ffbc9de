"""Live jobs and experiments over the single-table layout of `chimera.adapters.kv`.

A mixin of `KeyValueStore` (one section per aggregate, as there): it uses only that class's
primitives. Layout:

- `JOB#<agent>` / `<job id>`: a live job, put once (TTL as raw KPIs);
- `EXPERIMENTS` / `<experiment id>`: an experiment, indexed by agent (gsi1 `EXP#<agent>`,
  `<status>#<started>#<id>`); its analyses under `EXPPOINT#<id>` / `<seq>`;
- `ACTIVE#<agent>` / `EXPERIMENT`: which experiment of the agent runs (none: `null`), replaced
  conditionally with every start and conclusion, so two canaries cannot run for one agent;
- every alias move an experiment makes is in the same transaction as the experiment,
  conditional on the alias revision before it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from chimera.domain.errors import ConflictError, CorruptStateError, NotFoundError
from chimera.domain.events import Event
from chimera.domain.models import (
    Alias,
    Experiment,
    ExperimentPoint,
    ExperimentStatus,
    LiveJob,
)

if TYPE_CHECKING:
    from chimera.adapters.kv import Put, Row, Write

T = TypeVar("T")


def _iso(at: Any) -> str:
    return str(at.isoformat())


class ExperimentItems:
    """Implements chimera.ports.JobStore and ExperimentStore for a KeyValueStore."""

    # -- what KeyValueStore provides (declared for the type checker) ----------------------
    if TYPE_CHECKING:

        def _get(self, pk: str, sk: str) -> str | None: ...
        def _rows(self, pk: str, **options: Any) -> list[Row]: ...
        def _read_one(self, parse: Callable[[str], T], pk: str, sk: str) -> T | None: ...
        def _read_all(self, parse: Callable[[str], T], rows: Sequence[Row]) -> list[T]: ...
        def _write(self, writes: Sequence[Write]) -> None: ...
        def _put_if_absent(self, put: Put) -> bool: ...
        @staticmethod
        def _outbox(events: Sequence[Event]) -> list[Put]: ...

    # -- live jobs ------------------------------------------------------------------------
    def put_job(self, job: LiveJob) -> LiveJob:
        from chimera.adapters.kv import KPI_TTL_S, Put

        put = Put(
            f"JOB#{job.agent_id}",
            job.job_id,
            job.model_dump_json(),
            condition="absent",
            ttl=int(job.at.timestamp()) + KPI_TTL_S,
        )
        if self._put_if_absent(put):
            return job
        stored = self.find_job(job.agent_id, job.job_id)
        if stored is None:  # expired between the two calls: it is ours now
            return self.put_job(job)
        return stored

    def find_job(self, agent_id: str, job_id: str) -> LiveJob | None:
        return self._read_one(LiveJob.model_validate_json, f"JOB#{agent_id}", job_id)

    # -- aliases --------------------------------------------------------------------------
    @staticmethod
    def _alias_put(alias: Alias) -> Put:
        from chimera.adapters.kv import ABSENT, Put

        return Put(
            f"ALIASES#{alias.agent_id}",
            alias.name,
            alias.model_dump_json(),
            rev=alias.revision,
            condition=ABSENT if alias.revision <= 1 else alias.revision - 1,
        )

    def set_alias(self, alias: Alias, events: Sequence[Event] = ()) -> None:
        self._write([self._alias_put(alias), *self._outbox(events)])

    # -- experiments ----------------------------------------------------------------------
    @staticmethod
    def _experiment_put(experiment: Experiment, condition: str | int | None) -> Put:
        from chimera.adapters.kv import Put

        return Put(
            "EXPERIMENTS",
            experiment.experiment_id,
            experiment.model_dump_json(),
            rev=experiment.revision,
            condition=condition,
            gsi1=(
                f"EXP#{experiment.agent_id}",
                f"{experiment.status.value}#{_iso(experiment.started_at)}#"
                f"{experiment.experiment_id}",
            ),
        )

    def _active(self, agent_id: str) -> tuple[str | None, int]:
        """The running experiment the agent's ACTIVE item names, and that item's revision."""
        doc = self._get(f"ACTIVE#{agent_id}", "EXPERIMENT")
        if doc is None:
            return None, 0
        try:
            data = json.loads(doc)
            return (None if data["experiment_id"] is None else str(data["experiment_id"])), int(
                data["rev"]
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptStateError(f"ACTIVE#{agent_id}/EXPERIMENT", str(exc)) from exc

    @staticmethod
    def _active_put(agent_id: str, experiment_id: str | None, rev: int) -> Put:
        from chimera.adapters.kv import ABSENT, Put

        return Put(
            f"ACTIVE#{agent_id}",
            "EXPERIMENT",
            json.dumps({"experiment_id": experiment_id, "rev": rev + 1}),
            rev=rev + 1,
            condition=ABSENT if rev == 0 else rev,
        )

    def start_experiment(
        self, experiment: Experiment, alias: Alias, events: Sequence[Event] = ()
    ) -> Experiment:
        from chimera.adapters.kv import ABSENT

        stored = self._read_one(
            Experiment.model_validate_json, "EXPERIMENTS", experiment.experiment_id
        )
        if stored is not None:
            return stored  # a retry: this experiment started before
        running, rev = self._active(experiment.agent_id)
        if running is not None:
            other = self._read_one(Experiment.model_validate_json, "EXPERIMENTS", running)
            if other is not None and other.status == ExperimentStatus.RUNNING:
                raise ConflictError(
                    f"agent_id: {experiment.agent_id} already has the running experiment {running}"
                )
        first = experiment.model_copy(update={"revision": 1, "alias_revision": alias.revision})
        self._write(
            [
                self._experiment_put(first, ABSENT),
                self._active_put(experiment.agent_id, experiment.experiment_id, rev),
                self._alias_put(alias),
                *self._outbox(events),
            ]
        )
        return first

    def get_experiment(self, experiment_id: str) -> Experiment:
        found = self._read_one(Experiment.model_validate_json, "EXPERIMENTS", experiment_id)
        if found is None:
            raise NotFoundError("experiment", experiment_id, field="experiment_id")
        return found

    def list_experiments(
        self, agent_id: str | None = None, status: ExperimentStatus | None = None
    ) -> list[Experiment]:
        found: list[Experiment]
        if agent_id is None:
            found = self._read_all(Experiment.model_validate_json, self._rows("EXPERIMENTS"))
            found = [e for e in found if status is None or e.status == status]
        else:
            prefix = f"{status.value}#" if status is not None else None
            rows = self._rows(f"EXP#{agent_id}", index=True, prefix=prefix)
            found = self._read_all(Experiment.model_validate_json, rows)
        return sorted(found, key=lambda e: (e.started_at, e.experiment_id), reverse=True)

    def running_experiment(self, agent_id: str) -> Experiment | None:
        running, _ = self._active(agent_id)
        if running is None:
            return None
        found = self._read_one(Experiment.model_validate_json, "EXPERIMENTS", running)
        return found if found is not None and found.status == ExperimentStatus.RUNNING else None

    def save_experiment(
        self,
        experiment: Experiment,
        alias: Alias | None = None,
        events: Sequence[Event] = (),
        point: ExperimentPoint | None = None,
    ) -> Experiment:
        from chimera.adapters.kv import ABSENT, Put

        update: dict[str, Any] = {"revision": experiment.revision + 1}
        if alias is not None:
            update["alias_revision"] = alias.revision
        nxt = experiment.model_copy(update=update)
        writes: list[Write] = [self._experiment_put(nxt, experiment.revision)]
        if alias is not None:
            writes.append(self._alias_put(alias))
        if point is not None:
            writes.append(
                Put(
                    f"EXPPOINT#{point.experiment_id}",
                    f"{point.seq:08d}",
                    point.model_dump_json(),
                    condition=ABSENT,
                )
            )
        if nxt.status != ExperimentStatus.RUNNING:
            running, rev = self._active(nxt.agent_id)
            if running == nxt.experiment_id:  # it frees its agent for the next experiment
                writes.append(self._active_put(nxt.agent_id, None, rev))
        self._write([*writes, *self._outbox(events)])
        return nxt

    def list_experiment_points(self, experiment_id: str) -> list[ExperimentPoint]:
        rows = self._rows(f"EXPPOINT#{experiment_id}")
        return self._read_all(ExperimentPoint.model_validate_json, rows)


PARSERS = (
    ("JOB#", LiveJob.model_validate_json),
    ("EXPERIMENTS", Experiment.model_validate_json),
    ("EXPPOINT#", ExperimentPoint.model_validate_json),
)
