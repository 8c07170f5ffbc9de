"""The GPU placements of a segment: AWS Batch on spot GPU instances, and SageMaker managed-spot
training jobs, both running the one image built from gpu_jobs/ (the segment job)."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import ArnFormat, Size, Stack
from aws_cdk import aws_batch as batch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from gpu_jobs.evaluate_population import definition

REPO = Path(__file__).resolve().parents[2]


class GpuJobs(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        table: dynamodb.ITable,
        bundles: s3.IBucket,
        artifacts: s3.IBucket,
        environment: dict[str, str],
    ) -> None:
        super().__init__(scope, id)
        self.vpc = ec2.Vpc(
            self, "Vpc", max_azs=2, nat_gateways=1, flow_logs={"All": ec2.FlowLogOptions()}
        )
        self.compute = batch.ManagedEc2EcsComputeEnvironment(
            self,
            "GpuSpot",
            vpc=self.vpc,
            spot=True,
            minv_cpus=0,
            maxv_cpus=64,
            instance_types=[ec2.InstanceType("g5.xlarge"), ec2.InstanceType("g5.2xlarge")],
            use_optimal_instance_classes=False,
            allocation_strategy=batch.AllocationStrategy.SPOT_PRICE_CAPACITY_OPTIMIZED,
        )
        self.queue = batch.JobQueue(
            self,
            "GpuQueue",
            compute_environments=[
                batch.OrderedComputeEnvironment(compute_environment=self.compute, order=1)
            ],
        )
        job_role = iam.Role(
            self, "JobRole", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com")
        )
        table.grant_read_write_data(job_role)
        artifacts.grant_read(job_role)  # module versions by digest, large generations
        self.image = ecr_assets.DockerImageAsset(
            self,
            "Image",
            directory=str(REPO),
            file="gpu_jobs/evaluate_population/Dockerfile",
            exclude=[
                ".venv",
                "node_modules",
                "cdk.out",
                "build",
                ".chimera",
                ".git",
                ".mypy_cache",
                ".ruff_cache",
                ".pytest_cache",
                ".hypothesis",
                "tests",
                "bench",
                "**/__pycache__",
            ],
        )
        image = ecs.ContainerImage.from_docker_image_asset(self.image)
        self.job_definition = batch.EcsJobDefinition(
            self,
            "SegmentJob",
            container=batch.EcsEc2ContainerDefinition(
                self,
                "Container",
                image=image,
                cpu=4,
                memory=Size.gibibytes(14),
                gpu=1,
                job_role=job_role,
                command=list(definition.COMMAND),
                environment=environment,
            ),
            # A failed segment is deterministic: retry only when the spot host went away (or
            # the job stopped on its SIGTERM); every told generation is its checkpoint.
            retry_attempts=definition.ATTEMPTS,
            retry_strategies=[
                batch.RetryStrategy.of(
                    batch.Action.RETRY if rule["Action"] == "RETRY" else batch.Action.EXIT,
                    batch.Reason.custom(
                        on_status_reason=rule.get("OnStatusReason"),
                        on_reason=rule.get("OnReason"),
                        on_exit_code=rule.get("OnExitCode"),
                    ),
                )
                for rule in definition.EVALUATE_ON_EXIT
            ],
        )
        self.sagemaker_role = iam.Role(
            self,
            "SageMakerExecution",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="SageMaker training jobs: segments of a run, the performance predictor",
        )
        # The segment job reads and writes the run in the table like the Batch job, reads
        # modules, and keeps its checkpoints and model output in the artifact bucket.
        table.grant_read_write_data(self.sagemaker_role)
        bundles.grant_read_write(self.sagemaker_role)
        artifacts.grant_read_write(self.sagemaker_role)
        self.image.repository.grant_pull(self.sagemaker_role)
        self.sagemaker_role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[
                    Stack.of(self).format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name="/aws/sagemaker/TrainingJobs:*",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
