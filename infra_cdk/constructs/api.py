"""API Gateway: /health (IAM, operators) and POST /agents/{id}/predict (API key + usage plan)."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct


class Api(Construct):
    def __init__(self, scope: Construct, id: str, *, execution: lambda_.Function) -> None:
        super().__init__(scope, id)
        access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.rest_api = apigw.RestApi(
            self,
            "Rest",
            description="Chimera API",
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
        validator = self.rest_api.add_request_validator(
            "Validator", validate_request_body=True, validate_request_parameters=True
        )
        integration = apigw.LambdaIntegration(execution)
        health = self.rest_api.root.add_resource("health")
        health.add_method(
            "GET",
            integration,
            authorization_type=apigw.AuthorizationType.IAM,
            request_validator=validator,
        )
        predict = (
            self.rest_api.root.add_resource("agents").add_resource("{id}").add_resource("predict")
        )
        body = self.rest_api.add_model(
            "PredictBody",
            content_type="application/json",
            schema=apigw.JsonSchema(
                type=apigw.JsonSchemaType.OBJECT,
                required=["job_id", "observation"],
                properties={
                    "job_id": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, min_length=1),
                    "observation": apigw.JsonSchema(
                        type=apigw.JsonSchemaType.ARRAY,
                        min_items=1,
                        items=apigw.JsonSchema(type=apigw.JsonSchemaType.NUMBER),
                    ),
                },
            ),
        )
        predict.add_method(
            "POST",
            integration,
            api_key_required=True,
            request_validator=validator,
            request_models={"application/json": body},
        )
        plan = self.rest_api.add_usage_plan(
            "Clients",
            throttle=apigw.ThrottleSettings(rate_limit=50, burst_limit=100),
            api_stages=[
                apigw.UsagePlanPerApiStage(api=self.rest_api, stage=self.rest_api.deployment_stage)
            ],
        )
        plan.add_api_key(self.rest_api.add_api_key("ClientKey"))
