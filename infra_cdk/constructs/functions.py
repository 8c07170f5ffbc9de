"""The shared layer, one Lambda per Chimera layer, the API function and the optimizer image.

Sizes come from one table (SIZES). The Execution function evaluates agents; its memory and
architecture are also handed to every function as CHIMERA_EVALUATOR_MEMORY_MB and
CHIMERA_EVALUATOR_ARCHITECTURE, from which layer 8 prices the Lambda placement.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Duration, IgnoreMode, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from chimera.catalog import LAYERS
from constructs import Construct

REPO = Path(__file__).resolve().parents[2]
RUNTIME = lambda_.Runtime.PYTHON_3_13
ARCHITECTURE = lambda_.Architecture.X86_64
EVALUATOR = "Execution"  # the function that runs evaluations (the Lambda placement)
OPTIMIZER_DOCKERFILE = "images/optimizer/Dockerfile"


@dataclass(frozen=True)
class Size:
    memory_mb: int
    timeout: Duration


FULL_VCPU = Size(1769, Duration.minutes(5))  # one whole vCPU: the evaluating layers
SMALL = Size(512, Duration.minutes(1))
SIZES: dict[str, Size] = {
    "Discovery": SMALL,
    "Planning": SMALL,
    "Validation": FULL_VCPU,
    "Execution": FULL_VCPU,
    "Refinement": SMALL,
    "MetaEvolution": SMALL,
    "Evolution": FULL_VCPU,
    "Resources": SMALL,
    # API Gateway answers 504 after 29 s; predict instantiates one agent.
    "Api": Size(1024, Duration.seconds(29)),
    "Optimizer": Size(3008, Duration.minutes(15)),
}


def evaluator_environment() -> dict[str, str]:
    """What layer 8 needs to price the Lambda placement, from the Execution function's size."""
    return {
        "CHIMERA_EVALUATOR_MEMORY_MB": str(SIZES[EVALUATOR].memory_mb),
        "CHIMERA_EVALUATOR_ARCHITECTURE": ARCHITECTURE.name,
    }


class Functions(Construct):
    def __init__(
        self, scope: Construct, id: str, *, layer_dir: Path, environment: dict[str, str]
    ) -> None:
        super().__init__(scope, id)
        environment = {**environment, **evaluator_environment()}
        self.layer = lambda_.LayerVersion(
            self,
            "Shared",
            code=lambda_.Code.from_asset(str(layer_dir)),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description="chimera package and its runtime dependencies",
        )
        # The eight layers (their ARNs are the state machines' substitutions).
        self.by_name: dict[str, lambda_.Function] = {
            name: self._zip_function(name, package, f"Chimera layer: {what}", environment)
            for name, package, what in LAYERS
        }
        # The HTTP API: the Powertools resolver in chimera.api behind API Gateway's proxy.
        self.api = self._zip_function("Api", "api", "Chimera HTTP API", environment)
        self.optimizer = self._optimizer_image(environment)

    @property
    def every(self) -> dict[str, lambda_.Function]:
        """Every function by its name in SIZES and infra_cdk.grants.GRANTS."""
        return {**self.by_name, "Api": self.api, "Optimizer": self.optimizer}

    def _log_group(self, name: str) -> logs.LogGroup:
        return logs.LogGroup(
            self,
            f"{name}Logs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=RemovalPolicy.DESTROY,
        )

    def _zip_function(
        self, name: str, package: str, description: str, environment: dict[str, str]
    ) -> lambda_.Function:
        size = SIZES[name]
        return lambda_.Function(
            self,
            name,
            description=description,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler="handler.lambda_handler",
            code=lambda_.Code.from_asset(
                str(REPO / "functions" / package), exclude=["__pycache__", "*.pyc"]
            ),
            layers=[self.layer],
            memory_size=size.memory_mb,
            timeout=size.timeout,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self._log_group(name),
            environment={**environment, "POWERTOOLS_SERVICE_NAME": f"chimera-{package}"},
        )

    def _optimizer_image(self, environment: dict[str, str]) -> lambda_.DockerImageFunction:
        """The heavy-dependency route: a container image (10 GB) instead of a zip (250 MB).

        The evolution layer's handler with hyperopt and scipy installed, which cannot fit a
        zip package beside the layer (tests/infra/test_image_size.py measures it). It is not
        yet wired into a state machine: the Layer 6/5 search plug-ins that need these
        libraries (TPE through hyperopt, torch models later) will run here.
        """
        size = SIZES["Optimizer"]
        return lambda_.DockerImageFunction(
            self,
            "Optimizer",
            description="Chimera evolution with the heavy search libraries (container image)",
            code=lambda_.DockerImageCode.from_image_asset(
                str(REPO),
                file=OPTIMIZER_DOCKERFILE,
                # Only what the Dockerfile copies: the build context stays small.
                ignore_mode=IgnoreMode.DOCKER,
                exclude=[
                    "*",
                    "!images/optimizer",
                    "!layers_shared/chimera",
                    "!functions/evolution",
                    "**/__pycache__",
                ],
            ),
            architecture=ARCHITECTURE,
            memory_size=size.memory_mb,
            timeout=size.timeout,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self._log_group("Optimizer"),
            environment={**environment, "POWERTOOLS_SERVICE_NAME": "chimera-optimizer"},
        )
