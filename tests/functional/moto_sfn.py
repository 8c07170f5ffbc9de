"""The deployed ASL files in moto's Step Functions interpreter, Lambda tasks called in process.

moto 5.2.5 runs `states:startExecution.sync:2` but sends the task's parameters to its own
StartExecution as written in the ASL (`StateMachineArn`, `Input`, `Name`), which boto3 rejects
(KeyError 'StateMachineArn' inside the interpreter, reported as States.Runtime), and hands
back DescribeExecution's camelCase keys (`output`) where AWS gives the task `Output`, `Status`.
LocalStack, which moto's interpreter comes from, converts both ways; moto's port left
`_normalise_parameters`/`_normalise_response` empty. `nested_executions_patched` fills exactly
that gap (the casing of the top-level keys) and nothing else, so nested executions run in
moto with their own histories as they do in AWS.
"""

from __future__ import annotations

import io
import json
import random
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

import boto3
from chimera.catalog import LAYERS, STATE_MACHINES, asl_path, logical_state_machine_name, substitute
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn import (  # noqa: E501
    StateTaskServiceSfn,
)

PACKAGES = {f"chimera-{pkg.replace('_', '-')}": pkg for _, pkg, _ in LAYERS}
Dispatch = Callable[[str], Callable[[Any], Any]]  # package under functions/ -> handler


def _normalise_parameters(self, parameters, boto_service_name=None, service_action_name=None):
    _original_parameters(self, parameters, boto_service_name, service_action_name)
    for key in list(parameters):
        parameters[key[0].lower() + key[1:]] = parameters.pop(key)


def _normalise_response(self, response, boto_service_name=None, service_action_name=None):
    _original_response(self, response, boto_service_name, service_action_name)
    if isinstance(response, dict):
        for key in list(response):
            response[key[0].upper() + key[1:]] = response.pop(key)


_original_parameters = StateTaskServiceSfn._normalise_parameters
_original_response = StateTaskServiceSfn._normalise_response


@contextmanager
def nested_executions_patched() -> Iterator[None]:
    with (
        mock.patch.object(StateTaskServiceSfn, "_normalise_parameters", _normalise_parameters),
        mock.patch.object(StateTaskServiceSfn, "_normalise_response", _normalise_response),
    ):
        yield


@dataclass
class MotoStepFunctions:
    client: Any
    machines: dict[str, str]  # our name (evolution-run) -> state machine ARN

    def run(self, machine: str, name: str, input_: dict[str, Any], timeout: float = 300) -> Any:
        arn = self.client.start_execution(
            stateMachineArn=self.machines[machine], name=name, input=json.dumps(input_)
        )["executionArn"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            described = self.client.describe_execution(executionArn=arn)
            if described["status"] != "RUNNING":
                return described
            time.sleep(0.05)
        raise TimeoutError(f"{name} still running after {timeout} s")

    def executions(self, machine: str) -> list[dict[str, Any]]:
        return self.client.list_executions(stateMachineArn=self.machines[machine])["executions"]

    def stop(self, machine: str, timeout: float = 30) -> list[str]:
        """Stop the machine's running executions (ones started without waiting, such as a
        canary, which would go on in moto's threads after the test) and wait until they have;
        returns every execution's name."""
        for execution in self.executions(machine):
            if execution["status"] == "RUNNING":
                self.client.stop_execution(executionArn=execution["executionArn"])
        deadline = time.monotonic() + timeout
        while any(e["status"] == "RUNNING" for e in self.executions(machine)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{machine} executions still running after {timeout} s")
            time.sleep(0.05)
        return sorted(e["name"] for e in self.executions(machine))

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        token = None
        while True:
            page = self.client.get_execution_history(
                executionArn=execution_arn,
                maxResults=1000,
                **({"nextToken": token} if token else {}),
            )
            events += page["events"]
            token = page.get("nextToken")
            if not token:
                return events


@contextmanager
def moto_step_functions(dispatch: Dispatch) -> Iterator[MotoStepFunctions]:
    """Every machine in statemachines/ created in moto; Lambda invokes go to `dispatch`."""

    def invoke(self, function_name, qualifier, body, headers, response_headers):
        handler = dispatch(PACKAGES[function_name.split(":")[-1]])
        try:
            return json.dumps(handler(json.loads(body))).encode()
        except Exception as exc:  # noqa: BLE001 - an unhandled error, as Lambda reports it
            response_headers["x-amz-function-error"] = "Unhandled"
            error = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
            return json.dumps(error).encode()

    config: Any = {
        "stepfunctions": {"execute_state_machine": True},
        "lambda": {"use_docker": False},
    }
    with ExitStack() as stack:
        stack.enter_context(mock_aws(config=config))
        stack.enter_context(mock.patch.object(LambdaSimpleBackend, "invoke", invoke))
        stack.enter_context(nested_executions_patched())
        iam, lam, sfn = (
            boto3.client(s, region_name="us-east-1") for s in ("iam", "lambda", "stepfunctions")
        )
        role = iam.create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as z:
            z.writestr("handler.py", "def lambda_handler(event, context):\n    return event\n")
        values = {"GpuJobQueueArn": "unused", "GpuJobDefinitionArn": "unused"}
        values |= {  # the job placements' names: moto never reaches those states here
            name: "unused"
            for name in (
                "TrainingImageUri",
                "SageMakerRoleArn",
                "ChimeraBackend",
                "ChimeraTableName",
                "ChimeraBundleBucket",
                "ChimeraArtifactBucket",
            )
        }
        for name, pkg, _ in LAYERS:
            values[f"{name}FunctionArn"] = lam.create_function(
                FunctionName=f"chimera-{pkg.replace('_', '-')}",
                Runtime="python3.12",
                Role=role,
                Handler="handler.lambda_handler",
                Code={"ZipFile": code.getvalue()},
            )["FunctionArn"]
        # A parent's file names its child's ARN, known before the child is created.
        machines: dict[str, str] = {}
        for name in STATE_MACHINES:
            values[logical_state_machine_name(name)] = (
                f"arn:aws:states:us-east-1:123456789012:stateMachine:chimera-{name}"
            )
        for name in STATE_MACHINES:
            machines[name] = sfn.create_state_machine(
                name=f"chimera-{name}",
                roleArn=role,
                definition=substitute(asl_path(name).read_text(), values),
            )["stateMachineArn"]
            assert machines[name] == values[logical_state_machine_name(name)]
        yield MotoStepFunctions(sfn, machines)


# -- purpose-written machines ------------------------------------------------------------
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:{}"
MACHINE_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:{}"


class _RecordingTime:
    """Stands in for the `time` module of moto's retrier: records each retry's wait."""

    def __init__(self, delays: list[float]) -> None:
        self.delays = delays

    def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)


@dataclass
class MotoMachines:
    client: Any
    retry_delays: list[float]  # every retry's wait, in the order moto's retriers waited

    def run(self, machine: str, name: str, input_: Any, timeout: float = 120) -> dict[str, Any]:
        arn = self.client.start_execution(
            stateMachineArn=MACHINE_ARN.format(machine), name=name, input=json.dumps(input_)
        )["executionArn"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            described = self.client.describe_execution(executionArn=arn)
            if described["status"] != "RUNNING":
                described["events"] = [
                    e["type"] for e in MotoStepFunctions(self.client, {}).history(arn)
                ]
                return described
            time.sleep(0.02)
        raise TimeoutError(f"{name} still running after {timeout} s")


@contextmanager
def moto_machines(
    definitions: dict[str, str],
    functions: dict[str, Callable[[Any], Any]],
    jitter_seed: int = 0,
) -> Iterator[MotoMachines]:
    """`definitions` (name -> ASL text) created in moto; Lambda `functions` called in process.

    Retries do not sleep: moto's retrier waits on a recorder (`retry_delays`), and its FULL
    jitter draws from `random.Random(jitter_seed)`, so an executor seeded alike must draw the
    same delays.
    """
    from moto.stepfunctions.parser.asl.component.common.retry import (
        jitter_strategy_decl,
        retrier_decl,
    )

    def invoke(self, function_name, qualifier, body, headers, response_headers):
        handler = functions[function_name.split(":")[-1]]
        try:
            return json.dumps(handler(json.loads(body))).encode()
        except Exception as exc:  # noqa: BLE001 - an unhandled error, as Lambda reports it
            response_headers["x-amz-function-error"] = "Unhandled"
            error = {"errorMessage": str(exc), "errorType": type(exc).__name__}
            return json.dumps(error, separators=(",", ":")).encode()  # as Lambda's runtime

    delays: list[float] = []
    config: Any = {
        "stepfunctions": {"execute_state_machine": True},
        "lambda": {"use_docker": False},
    }
    with ExitStack() as stack:
        stack.enter_context(mock_aws(config=config))
        stack.enter_context(mock.patch.object(LambdaSimpleBackend, "invoke", invoke))
        stack.enter_context(mock.patch.object(retrier_decl, "time", _RecordingTime(delays)))
        stack.enter_context(
            mock.patch.object(jitter_strategy_decl, "random", random.Random(jitter_seed))
        )
        iam, lam, sfn = (
            boto3.client(s, region_name="us-east-1") for s in ("iam", "lambda", "stepfunctions")
        )
        role = iam.create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as z:
            z.writestr("handler.py", "def lambda_handler(event, context):\n    return event\n")
        for name in functions:
            lam.create_function(
                FunctionName=name,
                Runtime="python3.12",
                Role=role,
                Handler="handler.lambda_handler",
                Code={"ZipFile": code.getvalue()},
            )
        for name, text in definitions.items():
            sfn.create_state_machine(name=name, roleArn=role, definition=text)
        yield MotoMachines(sfn, delays)
