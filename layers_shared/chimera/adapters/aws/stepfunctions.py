"""Step Functions adapter of the WorkflowStarter port."""

from __future__ import annotations

import json
from typing import Any

from chimera.adapters.aws.errors import translate
from chimera.domain.errors import ConflictError


class StepFunctionsWorkflows:
    def __init__(self, cycle_arn: str, client: Any) -> None:
        self.cycle_arn = cycle_arn
        self.client = client

    def _execution_arn(self, name: str) -> str:
        return self.cycle_arn.replace(":stateMachine:", ":execution:") + f":{name}"

    def is_running(self, execution_id: str) -> bool | None:
        with translate(f"execution {execution_id}"):
            try:
                described = self.client.describe_execution(
                    executionArn=self._execution_arn(execution_id)
                )
            except self.client.exceptions.ExecutionDoesNotExist:
                return None  # not a cycle of this state machine: the lease's expiry decides
        return str(described["status"]) == "RUNNING"

    def start_cycle(self, name: str, input_: dict[str, object]) -> tuple[str, str]:
        text = json.dumps(input_, sort_keys=True)
        with translate(f"execution {name}"):
            try:
                arn = self.client.start_execution(
                    stateMachineArn=self.cycle_arn, name=name, input=text
                )["executionArn"]
            except self.client.exceptions.ExecutionAlreadyExists:
                arn = self._execution_arn(name)
                described = self.client.describe_execution(executionArn=arn)
                if json.loads(described["input"]) != input_:
                    raise ConflictError(
                        f"name: execution {name!r} already ran with another input"
                    ) from None
                return arn, str(described["status"])
        return arn, "RUNNING"
