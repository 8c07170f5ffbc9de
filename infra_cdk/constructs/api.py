"""API Gateway REST API built from the resolver's OpenAPI document (chimera.api).

Every operation of the document becomes a method on its path, a Lambda proxy integration to
the API function, which validates requests and responses against the pydantic contracts: no
schema is written a second time here. Each operation's `security` decides its authorization:
`iam` (operators) is SigV4 with IAM; `apiKey` (client programs) needs an API key of the usage
plan.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from aws_cdk import RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def openapi() -> dict[str, Any]:
    """The resolver's OpenAPI document (docs/openapi.json is generated from the same call)."""
    from chimera.api import openapi_document

    return dict(json.loads(openapi_document()))


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path, HTTP method in capitals, operation) for every operation of the document."""
    for path, item in sorted(document["paths"].items()):
        for method, operation in sorted(item.items()):
            if method in HTTP_METHODS:
                yield path, method.upper(), operation


def authorization(operation: dict[str, Any]) -> str:
    """`iam` or `apiKey`: the one security requirement each operation must declare."""
    schemes = {name for requirement in operation.get("security", []) for name in requirement}
    if len(schemes) != 1 or not schemes <= {"iam", "apiKey"}:
        raise ValueError(
            f"{operation.get('operationId')}: security must be exactly one of iam, apiKey "
            f"(got {sorted(schemes)})"
        )
    return schemes.pop()


class Api(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        handler: lambda_.IFunction,
        document: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(scope, id)
        document = document or openapi()
        access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.rest_api = apigw.RestApi(
            self,
            "Rest",
            description=document["info"]["title"],
            cloud_watch_role=True,
            deploy_options=apigw.StageOptions(
                stage_name="v1",
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                logging_level=apigw.MethodLoggingLevel.INFO,
                tracing_enabled=True,
            ),
        )
        # One permission for the whole API instead of one per method (the policy stays small).
        integration = apigw.LambdaIntegration(
            handler, allow_test_invoke=False, scope_permission_to_method=False
        )
        for path, method, operation in operations(document):
            resource = self.rest_api.root.resource_for_path(path)
            if authorization(operation) == "iam":
                resource.add_method(
                    method,
                    integration,
                    operation_name=operation.get("operationId"),
                    authorization_type=apigw.AuthorizationType.IAM,
                )
            else:
                resource.add_method(
                    method,
                    integration,
                    operation_name=operation.get("operationId"),
                    api_key_required=True,
                )
        plan = self.rest_api.add_usage_plan(
            "Clients",
            throttle=apigw.ThrottleSettings(rate_limit=50, burst_limit=100),
            api_stages=[
                apigw.UsagePlanPerApiStage(api=self.rest_api, stage=self.rest_api.deployment_stage)
            ],
        )
        plan.add_api_key(self.rest_api.add_api_key("ClientKey"))
