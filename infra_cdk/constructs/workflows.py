"""The state machines, deployed from statemachines/*.asl.json as written (substitutions only)."""

from __future__ import annotations

from aws_cdk import Acknowledgment, ArnFormat, RemovalPolicy, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from chimera.catalog import asl_path
from constructs import Construct


class Workflows(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        functions: dict[str, lambda_.Function],
        job_queue_arn: str,
        job_definition_arn: str,
        training_image_uri: str,
        sagemaker_role: iam.IRole,
        artifacts: s3.IBucket,
        environment: dict[str, str],
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        fn_arns = {f"{name}FunctionArn": fn.function_arn for name, fn in functions.items()}
        # At most segment_generations generations per child execution: no execution's
        # history nears the 25,000-event quota however long the run.
        self.evolution_segment = self._machine(
            "EvolutionSegment", "evolution-segment", fn_arns, functions
        )
        _allow_distributed_map(self, self.evolution_segment, artifacts)
        # One canary per champion: it bakes for hours, so evolution-run starts it and ends.
        self.canary_rollout = self._machine("CanaryRollout", "canary-rollout", fn_arns, functions)
        # What a SageMaker training job of ours is started with (evolution-run's SageMaker
        # placement, predictor-training's Train): the GPU image, the SageMaker role and the
        # functions' CHIMERA_* environment.
        training_job = {
            "TrainingImageUri": training_image_uri,
            "SageMakerRoleArn": sagemaker_role.role_arn,
            "ChimeraBackend": environment["CHIMERA_BACKEND"],
            "ChimeraTableName": environment["CHIMERA_TABLE_NAME"],
            "ChimeraBundleBucket": environment["CHIMERA_BUNDLE_BUCKET"],
            "ChimeraArtifactBucket": environment["CHIMERA_ARTIFACT_BUCKET"],
        }
        self.evolution_run = self._machine(
            "EvolutionRun",
            "evolution-run",
            {
                **fn_arns,
                "EvolutionSegmentStateMachineArn": self.evolution_segment.state_machine_arn,
                "CanaryRolloutStateMachineArn": self.canary_rollout.state_machine_arn,
                # A segment placed on Batch: one job on the GPU spot queue.
                "GpuJobQueueArn": job_queue_arn,
                "GpuJobDefinitionArn": job_definition_arn,
                # A segment placed on SageMaker: one managed-spot training job.
                **training_job,
            },
            functions,
        )
        _allow_nested(self.evolution_run, self.evolution_segment)
        self.evolution_run.add_to_role_policy(
            iam.PolicyStatement(
                actions=["batch:SubmitJob", "batch:DescribeJobs", "batch:TerminateJob"],
                resources=[
                    job_queue_arn,
                    job_definition_arn,
                    stack.format_arn(service="batch", resource="job", resource_name="*"),
                ],
            )
        )
        _allow_sync_rule(self.evolution_run, "StepFunctionsGetEventsForBatchJobsRule")
        _allow_training_jobs(self.evolution_run, sagemaker_role)
        self.canary_rollout.grant_start_execution(self.evolution_run)
        self.optimization_cycle = self._machine(
            "OptimizationCycle",
            "optimization-cycle",
            {**fn_arns, "EvolutionRunStateMachineArn": self.evolution_run.state_machine_arn},
            functions,
        )
        _allow_nested(self.optimization_cycle, self.evolution_run)
        # The performance predictor's training (statemachines/predictor-training.asl.json): its
        # Lambda steps are Refinement's, its Train state a managed-spot SageMaker training job
        # of the same image and role as evolution-run's SageMaker placement, named
        # predictor-<hash of the execution>. Started by the rule on EvolutionRunCompleted
        # (infra_cdk/constructs/predictor_training.py). Layer 8 (Resources) reserves the job's
        # cost before Train and commits it after: `_machine` lets it invoke exactly the two.
        self.predictor_training = self._machine(
            "PredictorTraining",
            "predictor-training",
            {
                "RefinementFunctionArn": functions["Refinement"].function_arn,
                "ResourcesFunctionArn": functions["Resources"].function_arn,
                **training_job,
            },
            functions,
        )
        _allow_training_jobs(self.predictor_training, sagemaker_role, names="predictor-*")

    def _machine(
        self,
        id: str,
        name: str,
        substitutions: dict[str, str],
        functions: dict[str, lambda_.Function],
    ) -> sfn.StateMachine:
        logs_group = logs.LogGroup(
            self,
            f"{id}Logs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=RemovalPolicy.DESTROY,
        )
        text = asl_path(name).read_text()
        machine = sfn.StateMachine(
            self,
            id,
            definition_body=sfn.DefinitionBody.from_string(text),
            definition_substitutions=substitutions,
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=logs_group, level=sfn.LogLevel.ALL),
        )
        for logical, fn in functions.items():
            if "${" + logical + "FunctionArn}" in text:
                fn.grant_invoke(machine)
        return machine


def _allow_sync_rule(machine: sfn.StateMachine, rule: str) -> None:
    """A `.sync` integration waits through this Step Functions-managed EventBridge rule."""
    machine.add_to_role_policy(
        iam.PolicyStatement(
            actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
            resources=[
                Stack.of(machine).format_arn(service="events", resource="rule", resource_name=rule)
            ],
        )
    )


def _allow_training_jobs(machine: sfn.StateMachine, role: iam.IRole, names: str = "*") -> None:
    """`sagemaker:createTrainingJob.sync`, as AWS documents it: create, describe and stop the
    training jobs (tagged at creation; those whose names match `names`), pass their execution
    role to SageMaker only, and wait through the managed rule."""
    stack = Stack.of(machine)
    machine.add_to_role_policy(
        iam.PolicyStatement(
            actions=[
                "sagemaker:CreateTrainingJob",
                "sagemaker:DescribeTrainingJob",
                "sagemaker:StopTrainingJob",
                "sagemaker:AddTags",
            ],
            resources=[
                stack.format_arn(service="sagemaker", resource="training-job", resource_name=names)
            ],
        )
    )
    machine.add_to_role_policy(
        iam.PolicyStatement(
            actions=["iam:PassRole"],
            resources=[role.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        )
    )
    _allow_sync_rule(machine, "StepFunctionsGetEventsForSageMakerTrainingJobsRule")


def _allow_nested(parent: sfn.StateMachine, child: sfn.StateMachine) -> None:
    """`states:startExecution.sync:2` of `child`: start, then describe/stop its executions."""
    child.grant_start_execution(parent)
    parent.add_to_role_policy(
        iam.PolicyStatement(
            actions=["states:DescribeExecution", "states:StopExecution"],
            resources=[
                Stack.of(parent).format_arn(
                    service="states",
                    resource="execution",
                    resource_name=f"{child.state_machine_name}:*",
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                )
            ],
        )
    )
    _allow_sync_rule(parent, "StepFunctionsGetEventsForStepFunctionsExecutionRule")


def _allow_distributed_map(scope: Construct, machine: sfn.StateMachine, bucket: s3.IBucket) -> None:
    """What a Distributed Map needs, as AWS documents it: read its items (ItemReader JSON:
    s3:GetObject) and write its results (ResultWriter: s3:PutObject, s3:GetObject,
    s3:ListMultipartUploadParts, s3:AbortMultipartUpload) in the artifact bucket, under its
    KMS key; start its child executions (states:StartExecution on the machine itself) and
    describe or stop them (their ARNs are execution:<machine>/<map label>:<id>).

    A policy of its own, not the role's default one: the machine depends on its default
    policy, and this policy names the machine (it would be a cycle)."""
    statements = [
        iam.PolicyStatement(
            actions=[
                "s3:GetObject",
                "s3:PutObject",
                "s3:ListMultipartUploadParts",
                "s3:AbortMultipartUpload",
            ],
            resources=[bucket.arn_for_objects("*")],
        ),
        iam.PolicyStatement(
            actions=["states:StartExecution"], resources=[machine.state_machine_arn]
        ),
        iam.PolicyStatement(
            actions=["states:DescribeExecution", "states:StopExecution"],
            resources=[
                Stack.of(machine).format_arn(
                    service="states",
                    resource="execution",
                    resource_name=f"{machine.state_machine_name}/*",
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                )
            ],
        ),
    ]
    if bucket.encryption_key is not None:
        statements.append(
            iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=[bucket.encryption_key.key_arn],
            )
        )
    iam.Policy(scope, "DistributedMapPolicy", roles=[machine.role], statements=statements)
    stack = Stack.of(machine)
    machine_id = stack.get_logical_id(machine.node.default_child)  # type: ignore[arg-type]
    Validations.of(scope).acknowledge(
        Acknowledgment(
            id="AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:"
            f"<AWS::Region>:<AWS::AccountId>:execution:<{machine_id}.Name>/*]",
            reason="The child executions of our own machine's Distributed Map, named at start.",
        )
    )
