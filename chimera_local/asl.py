"""A compact executor for the subset of Amazon States Language that statemachines/ uses.

It runs the deployed ASL files as they are: Task states whose resource is a Lambda ARN call
the handler in process; `states:startExecution.sync:2` runs the nested machine; `batch:
submitJob.sync` goes to a local job runner. Pass, Choice, Map, Succeed, Fail; InputPath,
Parameters, ResultSelector, ResultPath, OutputPath; Retry and Catch. tests/functional runs
the same files through moto's interpreter and checks both agree.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chimera.domain.errors import ChimeraError

Handler = Callable[[Any], Any]
_MISSING = object()


class ExecutionFailedError(ChimeraError):
    def __init__(self, error: str, cause: str) -> None:
        super().__init__(f"{error}: {cause}")
        self.error = error
        self.cause = cause


class _StatesError(Exception):
    def __init__(self, error: str, cause: str) -> None:
        super().__init__(error)
        self.error = error
        self.cause = cause


@dataclass
class Machine:
    name: str
    arn: str
    definition: dict[str, Any]


@dataclass
class AslExecutor:
    """`functions` maps Lambda ARNs to handlers; `jobs` maps job-definition ARNs to runners."""

    functions: dict[str, Handler]
    jobs: dict[str, Handler] = field(default_factory=dict)
    machines: dict[str, Machine] = field(default_factory=dict)
    on_state: Callable[[str, str, Any], None] | None = None  # (execution, state, its input)
    retry_interval_scale: float = 1.0

    def register(self, name: str, arn: str, definition_text: str) -> Machine:
        machine = Machine(name, arn, json.loads(definition_text))
        self.machines[arn] = machine
        return machine

    # -- executions ----------------------------------------------------------------------
    def start(self, arn: str, input_: dict[str, Any], name: str | None = None) -> Any:
        machine = self.machines[arn]
        name = name or uuid.uuid4().hex
        ctx = {
            "Execution": {
                "Id": f"{arn.replace(':stateMachine:', ':execution:')}:{name}",
                "Name": name,
                "Input": copy.deepcopy(input_),
                "StartTime": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            "StateMachine": {"Id": arn, "Name": machine.name},
        }
        try:
            return self._run(machine.definition, input_, ctx)
        except _StatesError as err:
            raise ExecutionFailedError(err.error, err.cause) from None

    def _run(self, definition: dict[str, Any], data: Any, ctx: dict[str, Any]) -> Any:
        states = definition["States"]
        name = definition["StartAt"]
        while True:
            state = states[name]
            ctx = {**ctx, "State": {"Name": name}}
            if self.on_state:
                self.on_state(ctx["Execution"]["Name"], name, data)
            kind = state["Type"]
            if kind == "Fail":
                raise _StatesError(state.get("Error", "States.Fail"), state.get("Cause", ""))
            if kind == "Succeed":
                return _select(
                    state.get("OutputPath", "$"),
                    _select(state.get("InputPath", "$"), data, ctx),
                    ctx,
                )
            if kind == "Choice":
                data = _select(state.get("InputPath", "$"), data, ctx)
                name = next(
                    (c["Next"] for c in state.get("Choices", []) if _rule(c, data, ctx)),
                    state.get("Default"),
                )
                if name is None:
                    raise _StatesError(
                        "States.NoChoiceMatched", f"no choice matched in {ctx['State']['Name']}"
                    )
                data = _select(state.get("OutputPath", "$"), data, ctx)
                continue
            try:
                data = self._step(state, data, ctx)
            except _StatesError as err:
                handler = next(
                    (c for c in state.get("Catch", []) if _matches(c["ErrorEquals"], err.error)),
                    None,
                )
                if handler is None:
                    raise
                data = _place(
                    handler.get("ResultPath", "$"), data, {"Error": err.error, "Cause": err.cause}
                )
                name = handler["Next"]
                continue
            if state.get("End"):
                return data
            name = state["Next"]

    def _step(self, state: dict[str, Any], data: Any, ctx: dict[str, Any]) -> Any:
        effective = _select(state.get("InputPath", "$"), data, ctx)
        kind = state["Type"]
        if kind == "Pass":
            result = (
                _render(state["Parameters"], effective, ctx)
                if "Parameters" in state
                else state.get("Result", effective)
            )
        elif kind == "Task":
            params = (
                _render(state["Parameters"], effective, ctx) if "Parameters" in state else effective
            )
            result = self._with_retry(state, lambda: self._task(state["Resource"], params, ctx))
            if "ResultSelector" in state:
                result = _render(state["ResultSelector"], result, ctx)
        elif kind == "Map":
            items = _select(state.get("ItemsPath", "$"), effective, ctx)
            if not isinstance(items, list):
                raise _StatesError("States.Runtime", "ItemsPath did not select an array")
            processor = state.get("ItemProcessor") or state["Iterator"]
            result = []
            for index, item in enumerate(items):
                item_ctx = {**ctx, "Map": {"Item": {"Index": index, "Value": item}}}
                selector = state.get("ItemSelector", state.get("Parameters"))
                item_input = _render(selector, effective, item_ctx) if selector else item
                result.append(self._run(processor, item_input, item_ctx))
            if "ResultSelector" in state:
                result = _render(state["ResultSelector"], result, ctx)
        elif kind == "Wait":
            time.sleep(min(float(state.get("Seconds", 0)), 1.0) * self.retry_interval_scale)
            result = effective
        else:
            raise _StatesError("States.Runtime", f"state type {kind} is not supported locally")
        data = _place(state.get("ResultPath", "$"), data, result)
        return _select(state.get("OutputPath", "$"), data, ctx)

    def _with_retry(self, state: dict[str, Any], call: Callable[[], Any]) -> Any:
        attempts: dict[int, int] = {}
        while True:
            try:
                return call()
            except _StatesError as err:
                for i, rule in enumerate(state.get("Retry", [])):
                    if _matches(rule["ErrorEquals"], err.error):
                        attempts[i] = attempts.get(i, 0) + 1
                        if attempts[i] > rule.get("MaxAttempts", 3):
                            raise
                        delay = rule.get("IntervalSeconds", 1) * rule.get("BackoffRate", 2.0) ** (
                            attempts[i] - 1
                        )
                        time.sleep(delay * self.retry_interval_scale)
                        break
                else:
                    raise

    def _task(self, resource: str, params: Any, ctx: dict[str, Any]) -> Any:
        if resource.startswith("arn:aws:states:::states:startExecution.sync"):
            machine_arn = params["StateMachineArn"]
            child_name = params.get("Name") or uuid.uuid4().hex
            try:
                output = self._run(
                    self.machines[machine_arn].definition,
                    params.get("Input", {}),
                    {
                        **ctx,
                        "Execution": {
                            **ctx["Execution"],
                            "Id": f"{machine_arn}:{child_name}",
                            "Name": child_name,
                            "Input": params.get("Input", {}),
                        },
                    },
                )
            except _StatesError as err:
                raise _StatesError(
                    "States.TaskFailed", json.dumps({"Error": err.error, "Cause": err.cause})
                ) from None
            parsed = resource.endswith(":2")
            return {
                "Output": output if parsed else json.dumps(output),
                "Status": "SUCCEEDED",
                "StateMachineArn": machine_arn,
            }
        if resource.startswith("arn:aws:states:::batch:submitJob"):
            runner = self.jobs.get(params["JobDefinition"])
            if runner is None:
                raise _StatesError(
                    "States.TaskFailed", f"no local runner for {params['JobDefinition']}"
                )
            return _call(runner, params)
        handler = self.functions.get(resource)
        if handler is None:
            raise _StatesError("States.TaskFailed", f"no local handler for resource {resource}")
        return _call(handler, params)


def _call(handler: Handler, params: Any) -> Any:
    try:
        # A JSON round trip, as over the wire: handlers get and return plain JSON.
        return json.loads(json.dumps(handler(json.loads(json.dumps(params)))))
    except Exception as exc:  # noqa: BLE001 - every task failure becomes a States error
        error = type(exc).__name__
        raise _StatesError(
            error, json.dumps({"errorMessage": str(exc), "errorType": error})
        ) from exc


def _matches(names: list[str], error: str) -> bool:
    return (
        "States.ALL" in names
        or error in names
        or ("States.TaskFailed" in names and not error.startswith("States.Timeout"))
    )


# -- JSONPath subset and payload templates ------------------------------------------------
def _select(path: str | None, data: Any, ctx: dict[str, Any]) -> Any:
    if path is None:
        return {}
    root, rest = (ctx, path[2:]) if path.startswith("$$") else (data, path[1:])
    value = root
    for part in _split(rest):
        if isinstance(part, int):
            if not isinstance(value, list) or part >= len(value):
                raise _StatesError("States.Runtime", f"path {path} not found")
            value = value[part]
        else:
            if not isinstance(value, dict) or part not in value:
                raise _StatesError("States.Runtime", f"path {path} not found in the input")
            value = value[part]
    return value


def _split(rest: str) -> list[str | int]:
    parts: list[str | int] = []
    for chunk in rest.replace("[", ".[").split("."):
        if not chunk:
            continue
        if chunk.startswith("[") and chunk.endswith("]"):
            parts.append(int(chunk[1:-1]))
        else:
            parts.append(chunk)
    return parts


def _render(template: Any, data: Any, ctx: dict[str, Any]) -> Any:
    if isinstance(template, dict):
        out = {}
        for key, value in template.items():
            if key.endswith(".$"):
                if not isinstance(value, str) or not value.startswith("$"):
                    raise _StatesError(
                        "States.Runtime", f"{key}: intrinsic functions are not supported locally"
                    )
                out[key[:-2]] = copy.deepcopy(_select(value, data, ctx))
            else:
                out[key] = _render(value, data, ctx)
        return out
    if isinstance(template, list):
        return [_render(v, data, ctx) for v in template]
    if template == "$":
        return copy.deepcopy(data)
    return template


def _place(path: str | None, data: Any, result: Any) -> Any:
    if path is None:
        return data
    if path == "$":
        return result
    out = copy.deepcopy(data) if isinstance(data, dict) else {}
    cursor = out
    parts = [p for p in _split(path[1:]) if isinstance(p, str)]
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = result
    return out


def _rule(rule: dict[str, Any], data: Any, ctx: dict[str, Any]) -> bool:
    if "And" in rule:
        return all(_rule(r, data, ctx) for r in rule["And"])
    if "Or" in rule:
        return any(_rule(r, data, ctx) for r in rule["Or"])
    if "Not" in rule:
        return not _rule(rule["Not"], data, ctx)
    try:
        value = _select(rule["Variable"], data, ctx)
    except _StatesError:
        value = _MISSING
    if "IsPresent" in rule:
        return (value is not _MISSING) == rule["IsPresent"]
    if value is _MISSING:
        raise _StatesError("States.Runtime", f"Choice variable {rule['Variable']} not found")
    tests: dict[str, Callable[[Any, Any], bool]] = {
        "BooleanEquals": lambda v, x: isinstance(v, bool) and v == x,
        "StringEquals": lambda v, x: isinstance(v, str) and v == x,
        "NumericEquals": lambda v, x: _num(v) and v == x,
        "NumericGreaterThan": lambda v, x: _num(v) and v > x,
        "NumericGreaterThanEquals": lambda v, x: _num(v) and v >= x,
        "NumericLessThan": lambda v, x: _num(v) and v < x,
        "NumericLessThanEquals": lambda v, x: _num(v) and v <= x,
        "IsNull": lambda v, x: (v is None) == x,
    }
    for op, test in tests.items():
        if op in rule:
            return test(value, rule[op])
    raise _StatesError("States.Runtime", f"unsupported Choice rule {sorted(rule)}")


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
