"""ChimeraStack: composes one construct per capability. Environment-agnostic (no lookups)."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Acknowledgment, CfnOutput, Stack, Validations
from constructs import Construct

from infra_cdk.constructs.api import Api
from infra_cdk.constructs.eventing import Eventing
from infra_cdk.constructs.functions import Functions
from infra_cdk.constructs.gpu import GpuJobs
from infra_cdk.constructs.observability import Observability
from infra_cdk.constructs.storage import Storage
from infra_cdk.constructs.workflows import Workflows

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
    "AwsSolutions-IAM5[Action::s3:Abort*]": "CDK's read/write grant on our bundle bucket only.",
    "AwsSolutions-IAM5[Action::s3:DeleteObject*]": "SageMaker writes results to our bucket only.",
    "AwsSolutions-IAM5[Action::s3:GetBucket*]": "CDK's read grant on our bundle bucket only.",
    "AwsSolutions-IAM5[Action::s3:GetObject*]": "CDK's read grant on our bundle bucket only.",
    "AwsSolutions-IAM5[Action::s3:List*]": "CDK's read grant on our bundle bucket only.",
    "AwsSolutions-IAM5[Resource::*]": "X-Ray tracing (PutTraceSegments) has no resource-level "
    "permissions.",
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:batch:<AWS::Region>:<AWS::AccountId>:"
    "job/*]": "Batch job ids are not known before submission (describe/terminate our jobs).",
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:"
    "log-group:/aws/batch/job:*]": "Batch's own log group for job output.",
    "AwsSolutions-L1": "Python 3.13 is the newest runtime whose wheels (pydantic-core, numpy, "
    "wasmtime, deap) the layer build can install for Lambda.",
    "AwsSolutions-APIG2": "The predict method validates its body against a model; /health "
    "takes no input.",
    "AwsSolutions-APIG3": "WAF is left to the deploying account (its web ACLs are "
    "account-wide); throttling is set by the usage plan.",
    "AwsSolutions-APIG4": "/health uses IAM; predict uses API keys with a usage plan, as the "
    "SPEC asks for client programs.",
    "AwsSolutions-COG4": "No Cognito: operators sign with IAM, clients use API keys.",
    "AwsSolutions-S1": "The access-log bucket itself is not logged (logging it would recurse).",
    "AwsSolutions-SQS3": "The dead-letter queue is the end of the line; it has its own alarm.",
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
        }
        gpu = GpuJobs(self, "Gpu", table=storage.table, bundles=storage.bundles, environment=env)
        functions = Functions(self, "Functions", layer_dir=layer_dir, environment=env)
        fns = functions.by_name
        workflows = Workflows(
            self,
            "Workflows",
            functions=fns,
            job_queue_arn=gpu.queue.job_queue_arn,
            job_definition_arn=gpu.job_definition.job_definition_arn,
        )
        eventing = Eventing(
            self,
            "Events",
            key=storage.key,
            refinement=fns["Refinement"],
            cycle=workflows.optimization_cycle,
        )
        for fn in fns.values():
            fn.add_environment("CHIMERA_BUS_NAME", eventing.bus.event_bus_name)
            storage.table.grant_read_write_data(fn)
            storage.bundles.grant_read(fn)
            eventing.bus.grant_put_events_to(fn)
        api = Api(self, "Api", execution=fns["Execution"])
        Observability(
            self,
            "Observability",
            functions=fns,
            machines={
                "optimization-cycle": workflows.optimization_cycle,
                "evolution-run": workflows.evolution_run,
            },
            dead_letters=eventing.dead_letters,
            kpi_queue=eventing.kpi_queue,
        )
        CfnOutput(self, "ApiUrl", value=api.rest_api.url)
        CfnOutput(self, "BundleBucket", value=storage.bundles.bucket_name)
        CfnOutput(
            self, "OptimizationCycleArn", value=workflows.optimization_cycle.state_machine_arn
        )
        scoped = {
            f"AwsSolutions-IAM5[Resource::<{self.get_logical_id(fn.node.default_child)}.Arn>:*]": "Step Functions invokes any version of our own layer function."
            for fn in fns.values()
        }
        scoped[
            f"AwsSolutions-IAM5[Resource::<{self.get_logical_id(storage.bundles.node.default_child)}"
            ".Arn>/*]"
        ] = "Objects under our own bundle bucket."
        scoped[
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:<AWS::Region>:"
            "<AWS::AccountId>:execution:<"
            f"{self.get_logical_id(workflows.evolution_run.node.default_child)}.Name>:*]"
        ] = "The cycle describes/stops the evolution-run executions it started."
        Validations.of(self).acknowledge(
            *(
                Acknowledgment(id=f"AwsSolutions::{rule}", reason=reason)
                for rule, reason in (ACKNOWLEDGED | scoped).items()
            )
        )
