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
from chimera.settings import AwsSettings, Settings, load_settings

M = TypeVar("M", bound=BaseModel)
Route = tuple[type[Any], Callable[[Any, Deps], Any]]


def build_deps(settings: Settings) -> Deps:
    if isinstance(settings, AwsSettings):
        return _aws_deps(settings)
    try:
        from chimera_local.composition import local_deps
    except ImportError as exc:  # the Lambda layer ships without the local backend
        raise ValidationFailedError(
            "CHIMERA_BACKEND", "'local' needs the chimera_local package (not shipped to Lambda)"
        ) from exc
    return local_deps(settings)


def _aws_deps(settings: AwsSettings) -> Deps:
    import boto3

    from chimera.adapters.aws.dynamodb_store import DynamoDbStore
    from chimera.adapters.aws.eventbridge_bus import EventBridgeBus
    from chimera.adapters.aws.s3_artifacts import S3Artifacts
    from chimera.adapters.aws.s3_blobs import S3Blobs
    from chimera.adapters.aws.stepfunctions import StepFunctionsWorkflows
    from chimera.adapters.sandbox import Sandbox

    workflows = None
    if settings.cycle_state_machine_arn:
        workflows = StepFunctionsWorkflows(
            settings.cycle_state_machine_arn, boto3.client("stepfunctions")
        )
    policy = SandboxPolicy(allow_wasi=settings.allow_wasi)  # layer 3 and the sandbox share it
    return Deps(
        store=DynamoDbStore(
            settings.table_name,
            boto3.client("dynamodb"),
            S3Blobs(settings.artifact_bucket, settings.artifact_prefix, boto3.client("s3")),
        ),
        artifacts=S3Artifacts(settings.bundle_bucket, settings.bundle_prefix, boto3.client("s3")),
        bus=EventBridgeBus(settings.bus_name, boto3.client("events")),
        sandbox=Sandbox(cache_dir=None, policy=policy),
        policy=policy,
        settings=settings,
        workflows=workflows,
    )


@functools.cache
def deps() -> Deps:
    """The process-wide ports, built on first use (a Lambda container reuses them)."""
    return build_deps(load_settings())


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
