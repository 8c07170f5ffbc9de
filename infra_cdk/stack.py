"""ChimeraStack: composes one construct per capability. Environment-agnostic (no lookups)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from aws_cdk import Acknowledgment, ArnFormat, CfnElement, CfnOutput, Stack, Validations
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from chimera.settings import load_settings
from constructs import Construct, IConstruct

from infra_cdk.constructs.api import Api
from infra_cdk.constructs.eventing import Eventing
from infra_cdk.constructs.functions import Functions
from infra_cdk.constructs.gpu import GpuJobs
from infra_cdk.constructs.guardrails import GuardrailAlarms
from infra_cdk.constructs.observability import Observability
from infra_cdk.constructs.outbox import Outbox
from infra_cdk.constructs.predictor_training import PredictorTrainingTrigger
from infra_cdk.constructs.storage import Storage
from infra_cdk.constructs.workflows import Workflows
from infra_cdk.grants import GRANTS, Grants

# Each acknowledged cdk-nag rule, with the reason it does not apply or is accepted.
MANAGED_POLICY = "AWS's baseline service-role policy for this service"
ACKNOWLEDGED = {
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
    "AWSLambdaBasicExecutionRole]": f"{MANAGED_POLICY} (Lambda writing its own logs).",
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
    "AmazonAPIGatewayPushToCloudWatchLogs]": f"{MANAGED_POLICY} (API Gateway access logs).",
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
    "AmazonEC2ContainerServiceforEC2Role]": f"{MANAGED_POLICY} (Batch's ECS container instances).",
    "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]": "KMS data-key actions on our own key only.",
    "AwsSolutions-IAM5[Action::kms:ReEncrypt*]": "KMS re-encrypt actions on our own key only.",
    "AwsSolutions-IAM5[Action::s3:Abort*]": "CDK's read/write grant on our own buckets only "
    "(SageMaker on bundles, evolution on artifacts).",
    "AwsSolutions-IAM5[Action::s3:DeleteObject*]": "CDK's read/write grant on our own buckets "
    "only (SageMaker on bundles, evolution on artifacts).",
    "AwsSolutions-IAM5[Action::s3:GetBucket*]": "CDK's read grant on our own buckets only.",
    "AwsSolutions-IAM5[Action::s3:GetObject*]": "CDK's read grant on our own buckets only.",
    "AwsSolutions-IAM5[Action::s3:List*]": "CDK's read grant on our own buckets only.",
    "AwsSolutions-IAM5[Resource::*]": "X-Ray tracing (PutTraceSegments) and "
    "dynamodb:ListStreams (the outbox pipe) have no resource-level permissions.",
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:batch:<AWS::Region>:<AWS::AccountId>:"
    "job/*]": "Batch job ids are not known before submission (describe/terminate our jobs).",
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:"
    "log-group:/aws/batch/job:*]": "Batch's own log group for job output.",
    "AwsSolutions-L1": "Python 3.13 is the newest runtime whose wheels (pydantic-core, numpy, "
    "wasmtime, deap) the layer build can install for Lambda.",
    "AwsSolutions-APIG2": "Every request is validated in the API function against the pydantic "
    "contracts that generate the OpenAPI document (400 with one error body); a request model "
    "in API Gateway would be a second copy of that schema.",
    "AwsSolutions-APIG3": "WAF is left to the deploying account (its web ACLs are "
    "account-wide); throttling is set by the usage plan.",
    "AwsSolutions-APIG4": "Operator routes use IAM; client routes (predict, kpis) use API keys "
    "with a usage plan, as the SPEC asks for client programs.",
    "AwsSolutions-COG4": "No Cognito: operators sign with IAM, clients use API keys.",
    "AwsSolutions-S1": "The access-log bucket itself is not logged (logging it would recurse).",
    "AwsSolutions-SQS3": "The dead-letter queues (KPI ingest, outbox pipe) are the end of the "
    "line.",
    "AwsSolutions-SF1": "Both state machines log ALL events to CloudWatch Logs.",
}


class ChimeraStack(Stack):
    def __init__(self, scope: Construct, id: str, *, layer_dir: Path, **kwargs: object) -> None:
        super().__init__(scope, id, **kwargs)  # type: ignore[arg-type]
        storage = Storage(self, "Storage")
        env = {
            "CHIMERA_BACKEND": "aws",
            "CHIMERA_TABLE_NAME": storage.table.table_name,
            "CHIMERA_BUNDLE_BUCKET": storage.bundles.bucket_name,
            "CHIMERA_BUNDLE_PREFIX": "agents/",
            "CHIMERA_ARTIFACT_BUCKET": storage.artifacts.bucket_name,
        }
        gpu = GpuJobs(
            self,
            "Gpu",
            table=storage.table,
            bundles=storage.bundles,
            artifacts=storage.artifacts,
            environment=env,
        )
        functions = Functions(self, "Functions", layer_dir=layer_dir, environment=env)
        fns = functions.by_name
        workflows = Workflows(
            self,
            "Workflows",
            functions=fns,
            job_queue_arn=gpu.queue.job_queue_arn,
            job_definition_arn=gpu.job_definition.job_definition_arn,
            training_image_uri=gpu.image.image_uri,
            sagemaker_role=gpu.sagemaker_role,
            artifacts=storage.artifacts,
            environment=env,
        )
        eventing = Eventing(
            self,
            "Events",
            key=storage.key,
            refinement=fns["Refinement"],
            cycle=workflows.optimization_cycle,
        )
        outbox = Outbox(self, "Outbox", table=storage.table, bus=eventing.bus, key=storage.key)
        PredictorTrainingTrigger(
            self, "PredictorTraining", bus=eventing.bus, machine=workflows.predictor_training
        )
        functions.api.add_environment(
            "CHIMERA_CYCLE_STATE_MACHINE_ARN", workflows.optimization_cycle.state_machine_arn
        )
        every = functions.every
        if set(every) != set(GRANTS):
            raise ValueError(f"functions {sorted(every)} and GRANTS {sorted(GRANTS)} differ")
        for name, fn in every.items():
            fn.add_environment("CHIMERA_BUS_NAME", eventing.bus.event_bus_name)
            _grant(fn, GRANTS[name], storage, eventing.bus, workflows.optimization_cycle)
        consumers = {name for name, grants in GRANTS.items() if grants.kpi_queue}
        if consumers != {"Refinement"}:
            raise ValueError(f"the KPI queue's consumer is Refinement, GRANTS says {consumers}")
        api = Api(self, "Api", handler=functions.api)
        observability = Observability(
            self,
            "Observability",
            functions=every,
            machines={
                "optimization-cycle": workflows.optimization_cycle,
                "evolution-run": workflows.evolution_run,
                "evolution-segment": workflows.evolution_segment,
                "canary-rollout": workflows.canary_rollout,
                "predictor-training": workflows.predictor_training,
            },
            dead_letters=eventing.dead_letters,
            kpi_queue=eventing.kpi_queue,
        )
        # The margins the deployed functions will read: their own environment's settings.
        deployed = load_settings({**env, "CHIMERA_BUS_NAME": eventing.bus.event_bus_name})
        GuardrailAlarms(
            self,
            "Guardrails",
            refinement=fns["Refinement"],
            guardrails=deployed.canary().guardrails,
            canary=workflows.canary_rollout,
            dashboard=observability.dashboard,
        )
        CfnOutput(self, "ApiUrl", value=api.rest_api.url)
        CfnOutput(self, "BundleBucket", value=storage.bundles.bucket_name)
        CfnOutput(self, "ArtifactBucket", value=storage.artifacts.bucket_name)
        CfnOutput(
            self, "OptimizationCycleArn", value=workflows.optimization_cycle.state_machine_arn
        )
        CfnOutput(self, "OutboxDeadLetters", value=outbox.dead_letters.queue_url)
        scoped = {
            f"AwsSolutions-IAM5[Resource::<{_logical_id(self, fn)}.Arn>:*]": "Step Functions invokes any version of our own layer function."
            for fn in fns.values()
        }
        for bucket, what in ((storage.bundles, "bundle"), (storage.artifacts, "artifact")):
            scoped[f"AwsSolutions-IAM5[Resource::<{_logical_id(self, bucket)}.Arn>/*]"] = (
                f"Objects under our own {what} bucket."
            )
        scoped[f"AwsSolutions-IAM5[Resource::<{_logical_id(self, storage.table)}.Arn>/index/*]"] = (
            "Queries of our own table's indexes (gsi1)."
        )
        machines = [c for c in workflows.node.find_all() if isinstance(c, sfn.StateMachine)]
        for machine in machines:
            scoped[
                "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:<AWS::Region>:"
                "<AWS::AccountId>:execution:<"
                f"{_logical_id(self, machine)}.Name>:*]"
            ] = (
                "Executions of our own state machine, whose names are chosen at start "
                "(a parent describes/stops its child runs; the API describes a cycle it "
                "started under the same name)."
            )
        scoped[
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:"
            "<AWS::AccountId>:training-job/*]"
        ] = (
            "evolution-run's training jobs, named per (execution, run, segment) at start; "
            "Step Functions' createTrainingJob.sync needs create/describe/stop on them."
        )
        scoped[
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:"
            "<AWS::AccountId>:training-job/predictor-*]"
        ] = (
            "predictor-training's jobs, named predictor-<hash of the execution> at start; "
            "Step Functions' createTrainingJob.sync needs create/describe/stop on them."
        )
        scoped[
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:"
            "<AWS::AccountId>:log-group:/aws/sagemaker/TrainingJobs:*]"
        ] = "SageMaker training jobs write their streams, named per job, in this one group."
        Validations.of(self).acknowledge(
            *(
                Acknowledgment(id=f"AwsSolutions::{rule}", reason=reason)
                for rule, reason in (ACKNOWLEDGED | scoped).items()
            )
        )


def _grant(
    fn: lambda_.Function,
    grants: Grants,
    storage: Storage,
    bus: events.IEventBus,
    cycle: sfn.StateMachine,
) -> None:
    """Apply one row of infra_cdk.grants.GRANTS to a function's role."""
    if grants.table == "read":
        storage.table.grant_read_data(fn)
    elif grants.table == "read_write":
        storage.table.grant_read_write_data(fn)
    if grants.bundles:
        storage.bundles.grant_read(fn)
    _grant_bucket(fn, storage.artifacts, grants.artifacts)
    if grants.put_events:
        bus.grant_put_events_to(fn)
    if grants.describe_bus:
        fn.add_to_role_policy(
            iam.PolicyStatement(actions=["events:DescribeEventBus"], resources=[bus.event_bus_arn])
        )
    if grants.start_cycle:
        cycle.grant_start_execution(fn)
        # An idempotent retry (same name) describes the execution to compare its input.
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["states:DescribeExecution"],
                resources=[
                    Stack.of(fn).format_arn(
                        service="states",
                        resource="execution",
                        resource_name=f"{cycle.state_machine_name}:*",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )


def _grant_bucket(fn: lambda_.Function, bucket: s3.IBucket, access: str | None) -> None:
    if access == "read":
        bucket.grant_read(fn)
    elif access == "read_write":
        bucket.grant_read_write(fn)


def _logical_id(stack: Stack, construct: IConstruct) -> str:
    """The logical id of an L2 construct's CloudFormation resource (cdk-nag names it so)."""
    return stack.get_logical_id(cast(CfnElement, construct.node.default_child))
