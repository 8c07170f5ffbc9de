"""The HTTP API: one Powertools resolver, served by the API Lambda and by `chimera serve`.

Requests and responses are the pydantic contracts (validated here, documented in the OpenAPI
document generated from this resolver: docs/openapi.json). Each error class of the domain's
taxonomy has one exception handler, with the HTTP status from that taxonomy. Operator routes
are signed with IAM, client routes carry an API key (API Gateway enforces both; the OpenAPI
document declares them and infra_cdk builds the methods from it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from chimera.domain.errors import (
    TAXONOMY,
    ChimeraError,
    ConflictError,
    CorruptStateError,
    ErrorKind,
    GuestError,
    NotFoundError,
    UnavailableError,
    ValidationFailedError,
)
from chimera.domain.models import MAX_VERSION, ExperimentStatus, KpiRecord
from chimera.runtime import deps
from chimera.services import costs, execution, jobs, operator, queries
from chimera.services.contracts import (
    IngestResult,
    JobLabel,
    JobRequest,
    JobResult,
    LabelRequest,
    PredictRequest,
    PredictResult,
)
from chimera.services.cycles import StartCycleRequest, start_cycle
from chimera.services.views import (
    AgentView,
    CycleStarted,
    ExperimentDetailView,
    ExperimentView,
    GenomeView,
    Health,
    RollbackView,
    RunView,
)

API_TITLE = "Chimera API"
API_VERSION = "1.0.0"
OPERATOR: list[dict[str, list[str]]] = [{"iam": []}]  # SigV4-signed by an IAM principal
CLIENT: list[dict[str, list[str]]] = [{"apiKey": []}]  # x-api-key of a usage plan
SECURITY_SCHEMES = {
    "iam": APIKey(
        name="Authorization",
        in_=APIKeyIn.header,
        description="AWS Signature Version 4 (IAM)",
        **{"x-amazon-apigateway-authtype": "awsSigv4"},
    ),
    "apiKey": APIKey(name="x-api-key", in_=APIKeyIn.header, description="API Gateway API key"),
}


class ErrorBody(BaseModel):
    error: str = Field(description="the error class: also its name in Step Functions")
    title: str
    message: str
    field: str | None = Field(default=None, description="the offending field, when one is")


def _media_type_error(media: str) -> ErrorBody:
    return ErrorBody(
        error="ValidationFailedError",
        title="unsupported media type",
        message=f"Content-Type: {media!r} is not application/json",
        field="Content-Type",
    )


class JsonApiResolver(APIGatewayRestResolver):
    """Bodies are JSON: another declared media type is refused (415) before anything parses
    it (Powertools' validation would otherwise try, e.g. multipart without a boundary)."""

    def resolve(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
        media = str(headers.get("content-type") or "").split(";")[0].strip().lower()
        if event.get("body") and media not in ("", "application/json"):
            body = _media_type_error(media)
            return {
                "statusCode": 415,
                "headers": {"Content-Type": content_types.APPLICATION_JSON},
                "body": body.model_dump_json(exclude_none=True),
                "isBase64Encoded": False,
            }
        return super().resolve(event, context)


def _json_body(text: str) -> Any:
    """json.loads, with a body nested past the parser's recursion limit as invalid JSON
    (a 400 naming the body) rather than a RecursionError (a 500)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None


logger = Logger(service="chimera-api")
app = JsonApiResolver(enable_validation=True, json_body_deserializer=_json_body)

AgentIdPath = Annotated[
    str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="agent id", alias="id")
]
RunIdPath = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,128}$", description="evolution run id", alias="id")
]

ExperimentIdPath = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,160}$", description="experiment id", alias="id")
]


class PredictBody(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)  # JSON's 1e999 arrives as infinity

    job_id: str = Field(min_length=1, max_length=256)
    observation: list[float] = Field(min_length=1, max_length=4096)


class JobBody(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")

    job_id: str = Field(min_length=1, max_length=256, description="the job key: sticky routing")
    observation: list[float] | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="the client's own input, where the suite takes one (absent: live data)",
    )


class KpiBatch(BaseModel):
    records: list[KpiRecord] = Field(default=[], max_length=1000)
    labels: list[JobLabel] = Field(
        default=[],
        max_length=1000,
        description="true classes of live jobs, joined to their predictions by job id",
    )


class StopBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=1, max_length=1000, description="why: kept on the experiment and its events"
    )


class RollbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to_version: int | None = Field(
        default=None,
        ge=1,
        le=MAX_VERSION,
        description="the version to serve (absent: the one the live version evolved from, "
        "or a running canary's incumbent)",
    )
    reason: str = Field(min_length=1, max_length=1000, description="why: kept on the event")


def responses(ok: int, what: str, *classes: type[ChimeraError]) -> dict[int, OpenAPIResponse]:
    """OpenAPI responses: success (the route's return model) and the errors it can raise."""
    out: dict[int, OpenAPIResponse] = {ok: {"description": what}}
    every: tuple[type[ChimeraError], ...] = (ValidationFailedError, *classes)
    for cls in every:
        kind = TAXONOMY[cls]
        out[kind.http_status] = {
            "description": f"{kind.title} ({cls.__name__})",
            "content": {"application/json": {"model": ErrorBody}},
        }
    return out


@contextmanager
def _path_id(value: str) -> Iterator[None]:
    """A route's unknown {id} is a 404 naming the path parameter `id`."""
    try:
        yield
    except NotFoundError as exc:
        if exc.key != value:
            raise  # something else it names is missing (a live alias, a genome version)
        raise NotFoundError(exc.kind, exc.key, field="id") from exc


def _error(status: int, body: ErrorBody) -> Response[ErrorBody]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=body,
    )


def _handler(kind: ErrorKind) -> Callable[[ChimeraError], Response[ErrorBody]]:
    def handle(exc: ChimeraError) -> Response[ErrorBody]:
        return _error(
            kind.http_status,
            ErrorBody(
                error=type(exc).__name__,
                title=kind.title,
                message=str(exc),
                field=getattr(exc, "field", None),
            ),
        )

    return handle


for _cls, _kind in TAXONOMY.items():  # one handler per error class, from the one mapping
    app.exception_handler(_cls)(_handler(_kind))


@app.exception_handler(RequestValidationError)
def _bad_request(exc: RequestValidationError) -> Response[ErrorBody]:
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "path", "query")]
    field, message = ".".join(loc) or "body", str(err.get("msg", "invalid"))
    if err.get("type") == "json_invalid":  # loc holds the character position
        why = (err.get("ctx") or {}).get("error") or "not valid JSON"
        field, message = "body", f"not valid JSON: {why} (at character {loc[0] if loc else '?'})"
    return _error(
        400,
        ErrorBody(
            error="ValidationFailedError",
            title="validation failed",
            message=f"{field}: {message}",
            field=field,
        ),
    )


@app.exception_handler(RequestUnsupportedContentType)
def _unsupported_media_type(exc: RequestUnsupportedContentType) -> Response[ErrorBody]:
    return _error(415, _media_type_error(str(exc)))


@app.exception_handler(ServiceError)
def _service_error(exc: ServiceError) -> Response[ErrorBody]:
    return _error(
        exc.status_code, ErrorBody(error=type(exc).__name__, title="error", message=str(exc.msg))
    )


@app.not_found
def _no_route(exc: Exception) -> Response[ErrorBody]:
    event = app.current_event
    return _error(
        404,
        ErrorBody(
            error="NotFoundError",
            title="not found",
            message=f"no route {event.http_method} {event.path}",
        ),
    )


@app.exception_handler(Exception)
def _unexpected(exc: Exception) -> Response[ErrorBody]:
    logger.exception("unhandled error")
    return _error(
        500,
        ErrorBody(error="InternalError", title="internal error", message=type(exc).__name__),
    )


# -- routes --------------------------------------------------------------------------------
@app.get(
    "/health",
    summary="Per-layer health: store, bus, sandbox",
    security=OPERATOR,
    responses={200: {"description": "every check passes"}, 503: {"description": "a check fails"}},
)
def get_health() -> Response[Health]:
    health = queries.health(deps())
    return Response(
        status_code=200 if health.status == "ok" else 503,
        content_type=content_types.APPLICATION_JSON,
        body=health,
    )


@app.post(
    "/agents/<id>/predict",
    summary="Run one job on the agent's live genome (routed by alias weights)",
    security=CLIENT,
    responses=responses(
        200,
        "the agent's answer",
        NotFoundError,
        GuestError,
        UnavailableError,
        CorruptStateError,
    ),
)
def post_predict(agent_id: AgentIdPath, body: Annotated[PredictBody, Body()]) -> PredictResult:
    request = PredictRequest(agent_id=agent_id, job_id=body.job_id, observation=body.observation)
    with _path_id(agent_id):
        return execution.predict(request, deps())


@app.post(
    "/agents/<id>/jobs",
    summary="Run one live job (routed by alias weights, sticky by job id) and record its KPI",
    security=CLIENT,
    responses=responses(
        200,
        "the job: its version, answer and outcome (a repeated job id answers the stored job)",
        NotFoundError,
        GuestError,
        UnavailableError,
        CorruptStateError,
    ),
)
def post_job(agent_id: AgentIdPath, body: Annotated[JobBody, Body()]) -> JobResult:
    request = JobRequest(agent_id=agent_id, job_id=body.job_id, observation=body.observation)
    with _path_id(agent_id):
        return jobs.run_job(request, deps())


@app.get(
    "/agents",
    summary="Every discovered agent (one whose stored state does not read lists its problems)",
    security=OPERATOR,
)
def get_agents() -> list[AgentView]:
    return queries.list_agents(deps())


@app.get(
    "/agents/<id>",
    summary="One agent",
    security=OPERATOR,
    responses=responses(200, "the agent", NotFoundError, CorruptStateError),
)
def get_agent(agent_id: AgentIdPath) -> AgentView:
    with _path_id(agent_id):
        return queries.get_agent(agent_id, deps())


@app.get(
    "/agents/<id>/genomes",
    summary="An agent's genome versions",
    security=OPERATOR,
    responses=responses(200, "versions, oldest first", NotFoundError, CorruptStateError),
)
def get_genomes(agent_id: AgentIdPath) -> list[GenomeView]:
    with _path_id(agent_id):
        return queries.list_genomes(agent_id, deps())


@app.get(
    "/runs/<id>",
    summary="An evolution run and its fitness history",
    security=OPERATOR,
    responses=responses(200, "the run", NotFoundError, CorruptStateError),
)
def get_run(run_id: RunIdPath) -> RunView:
    with _path_id(run_id):
        return queries.get_run(run_id, deps())


@app.get(
    "/experiments",
    summary="Experiments (canaries), newest first",
    security=OPERATOR,
    responses=responses(200, "the experiments", NotFoundError, CorruptStateError),
)
def get_experiments(
    agent_id: Annotated[
        str | None,
        Query(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="only this agent's"),
    ] = None,
    status: Annotated[
        ExperimentStatus | None, Query(description="only those in this status")
    ] = None,
) -> list[ExperimentView]:
    return queries.list_experiments(deps(), agent_id, status)


@app.get(
    "/experiments/<id>",
    summary="An experiment and its statistic over time (every analysis)",
    security=OPERATOR,
    responses=responses(200, "the experiment", NotFoundError, CorruptStateError),
)
def get_experiment(experiment_id: ExperimentIdPath) -> ExperimentDetailView:
    with _path_id(experiment_id):
        return queries.get_experiment(experiment_id, deps())


@app.post(
    "/experiments/<id>/stop",
    summary="Stop a running experiment and roll its candidate back (the same reason again: "
    "the same answer)",
    security=OPERATOR,
    responses=responses(
        200,
        "the stopped experiment",
        NotFoundError,
        ConflictError,
        UnavailableError,
        CorruptStateError,
    ),
)
def post_stop_experiment(
    experiment_id: ExperimentIdPath, body: Annotated[StopBody, Body()]
) -> ExperimentView:
    with _path_id(experiment_id):
        return operator.stop_experiment(experiment_id, body.reason, deps())


@app.post(
    "/agents/<id>/rollback",
    summary="Point the agent's alias at an earlier version (a running canary is stopped first)",
    security=OPERATOR,
    responses=responses(
        200,
        "the live alias after the rollback",
        NotFoundError,
        ConflictError,
        UnavailableError,
        CorruptStateError,
    ),
)
def post_rollback(agent_id: AgentIdPath, body: Annotated[RollbackBody, Body()]) -> RollbackView:
    with _path_id(agent_id):
        return operator.rollback_agent(agent_id, body.to_version, body.reason, deps())


@app.post(
    "/kpis",
    summary="Record KPIs and labels of live jobs (idempotent by agent and job id; records take "
    "the same path as the SQS ingestion, a label becomes its job's KPI)",
    security=CLIENT,
    responses=responses(
        200, "how many records and labels were new", NotFoundError, ConflictError, UnavailableError
    ),
)
def post_kpis(body: Annotated[KpiBatch, Body()]) -> IngestResult:
    if not body.records and not body.labels:
        raise ValidationFailedError("records", "at least one record or label")
    return jobs.record_labels(LabelRequest(records=body.records, labels=body.labels), deps())


@app.post(
    "/cycles",
    summary="Start the optimization cycle (idempotent by name)",
    security=OPERATOR,
    responses=responses(202, "started (or already started)", ConflictError, UnavailableError),
)
def post_cycles(body: Annotated[StartCycleRequest, Body()]) -> Response[CycleStarted]:
    started = start_cycle(body, deps())
    return Response(
        status_code=202,
        content_type=content_types.APPLICATION_JSON,
        body=started,
    )


# -- layer 8: the ledger and the budget ------------------------------------------------------
PeriodQuery = Annotated[
    str | None,
    Query(pattern=costs.PERIOD_PATTERN, description="a calendar month, YYYY-MM (UTC)"),
]


@app.get(
    "/costs",
    summary="The cost ledger: each segment's placement, estimated, reserved and actual cost "
    "(a period's entries, default the current month, or a run's), with totals",
    security=OPERATOR,
    responses=responses(200, "a page of entries, oldest first", NotFoundError, CorruptStateError),
)
def get_costs(
    period: PeriodQuery = None,
    run_id: Annotated[
        str | None,
        Query(pattern=r"^[A-Za-z0-9_.:-]{1,128}$", description="only this evolution run's"),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=costs.MAX_LIMIT, description="entries per page")
    ] = costs.DEFAULT_LIMIT,
    cursor: Annotated[
        str | None,
        Query(min_length=1, max_length=1000, description="next_cursor of the previous page"),
    ] = None,
) -> costs.CostsPage:
    return costs.list_costs(deps(), period, run_id, limit, cursor)


@app.get(
    "/budget",
    summary="A period's hard budget: spent, reserved, available, the thresholds fired",
    security=OPERATOR,
    responses=responses(200, "the budget (default: the current month)", CorruptStateError),
)
def get_budget(period: PeriodQuery = None) -> costs.BudgetView:
    return costs.budget(deps(), period)


def openapi_document() -> str:
    """docs/openapi.json, generated from the routes above."""
    text = app.get_openapi_json_schema(
        title=API_TITLE,
        version=API_VERSION,
        description="Run, measure and evolve sandboxed WebAssembly agents.",
        security_schemes=SECURITY_SCHEMES,  # type: ignore[arg-type]
    )
    doc = json.loads(text)
    for operations in doc["paths"].values():
        for operation in operations.values():
            # Request validation answers 400 with ErrorBody (see _bad_request), not 422.
            if operation["responses"].get("422", {}).get("description") == "Validation Error":
                del operation["responses"]["422"]
    schemas = doc["components"]["schemas"]
    if "HTTPValidationError" not in json.dumps(doc["paths"]):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
