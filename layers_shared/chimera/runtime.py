"""Composition root: builds the ports from Settings and serves handler events.

The only place that chooses adapters. Handlers call `handle`; the local CLI calls `local_deps`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from chimera.domain.errors import ValidationFailedError
from chimera.domain.sandbox import SandboxPolicy
from chimera.services.deps import Deps
from chimera.settings import Settings

M = TypeVar("M", bound=BaseModel)
Route = tuple[type[Any], Callable[[Any, Deps], Any]]


def build_deps(settings: Settings) -> Deps:
    from chimera.adapters.sandbox import Sandbox

    policy = SandboxPolicy(allow_wasi=settings.allow_wasi)
    if settings.backend == "aws":
        import boto3

        from chimera.adapters.aws.dynamodb_store import DynamoDbStore
        from chimera.adapters.aws.eventbridge_bus import EventBridgeBus
        from chimera.adapters.aws.s3_artifacts import S3Artifacts

        if not settings.table_name:
            raise ValidationFailedError("CHIMERA_TABLE_NAME", "required when backend is aws")
        return Deps(
            store=DynamoDbStore(settings.table_name, boto3.client("dynamodb")),
            artifacts=S3Artifacts(
                settings.bundle_bucket, settings.bundle_prefix, boto3.client("s3")
            ),
            bus=EventBridgeBus(settings.bus_name, boto3.client("events")),
            sandbox=Sandbox(cache_dir=None),
            policy=policy,
            budget_usd=settings.budget_usd,
            deadline_s=settings.deadline_s,
            shard_size=settings.shard_size,
        )
    from chimera.adapters.local.artifacts import LocalArtifacts
    from chimera.adapters.local.bus import LocalBus
    from chimera.adapters.local.sqlite_store import SqliteStore

    bus = LocalBus(settings.home / "events.jsonl")
    deps = Deps(
        store=SqliteStore(settings.home / "state.db"),
        artifacts=LocalArtifacts(settings.agents_dir),
        bus=bus,
        sandbox=Sandbox(cache_dir=settings.home / "modules"),
        policy=policy,
        budget_usd=settings.budget_usd,
        deadline_s=settings.deadline_s,
        shard_size=settings.shard_size,
    )
    _wire_local_routes(bus, deps)
    return deps


def _wire_local_routes(bus: Any, deps: Deps) -> None:
    from chimera.domain.events import Event, KpiRecorded
    from chimera.services import refinement
    from chimera.services.contracts import IngestRequest

    def ingest(event: Event) -> None:
        if isinstance(event, KpiRecorded):
            refinement.ingest(IngestRequest(records=[event.record]), deps)

    bus.subscribe("refinement-ingest", ingest)


@functools.cache
def deps() -> Deps:
    """The process-wide ports, built on first use (a Lambda container reuses them)."""
    return build_deps(Settings())


def parse(model: type[M], event: Any) -> M:
    """Parse at the edge; the error names the first bad field."""
    try:
        return model.model_validate(event)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or model.__name__
        raise ValidationFailedError(field, err["msg"]) from exc


def handle(event: Any, routes: dict[str, Route], ports: Deps | None = None) -> Any:
    if not isinstance(event, dict):
        raise ValidationFailedError("event", "must be a JSON object")
    action = event.get("action")
    if action not in routes:
        raise ValidationFailedError("action", f"{action!r} is not one of {sorted(routes)}")
    model, fn = routes[action]
    result = fn(parse(model, event), ports or deps())
    return result.model_dump(mode="json") if isinstance(result, BaseModel) else result
