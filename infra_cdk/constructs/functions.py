"""The shared layer and one Lambda per Chimera layer."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from chimera.catalog import LAYERS
from constructs import Construct

REPO = Path(__file__).resolve().parents[2]
RUNTIME = lambda_.Runtime.PYTHON_3_13


class Functions(Construct):
    def __init__(
        self, scope: Construct, id: str, *, layer_dir: Path, environment: dict[str, str]
    ) -> None:
        super().__init__(scope, id)
        self.layer = lambda_.LayerVersion(
            self,
            "Shared",
            code=lambda_.Code.from_asset(str(layer_dir)),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[lambda_.Architecture.X86_64],
            description="chimera package and its runtime dependencies",
        )
        self.by_name: dict[str, lambda_.Function] = {}
        for name, package, what in LAYERS:
            log_group = logs.LogGroup(
                self,
                f"{name}Logs",
                retention=logs.RetentionDays.ONE_MONTH,
                removal_policy=RemovalPolicy.DESTROY,
            )
            heavy = name in ("Execution", "Evolution", "Validation")
            self.by_name[name] = lambda_.Function(
                self,
                name,
                description=f"Chimera layer: {what}",
                runtime=RUNTIME,
                architecture=lambda_.Architecture.X86_64,
                handler="handler.lambda_handler",
                code=lambda_.Code.from_asset(
                    str(REPO / "functions" / package), exclude=["__pycache__", "*.pyc"]
                ),
                layers=[self.layer],
                memory_size=1769 if heavy else 512,
                timeout=Duration.minutes(5 if heavy else 1),
                tracing=lambda_.Tracing.ACTIVE,
                log_group=log_group,
                environment={**environment, "POWERTOOLS_SERVICE_NAME": f"chimera-{package}"},
            )
