"""A compact executor for the subset of Amazon States Language that statemachines/ uses.

It runs the deployed ASL files as they are: Task states whose resource is a Lambda ARN call
the handler in process; `states:startExecution.sync(:2)` runs the nested machine as a child
execution with its own history, and `states:startExecution` queues it to run once the
execution that started it has ended; `batch:submitJob.sync` and
`sagemaker:createTrainingJob.sync` go to local runners (`jobs`, by job definition and by the
SageMaker resource). Pass,
Choice (with `...Path` comparisons), Map, Wait (Seconds, SecondsPath: through `sleep`),
Succeed, Fail; InputPath, Parameters,
ResultSelector, ResultPath, OutputPath; Retry and Catch; the intrinsic functions
States.Format, States.MathAdd and States.Hash. tests/functional runs the same files, and
purpose-written machines for every failure path, through moto's interpreter and checks both
agree.

Failures behave as AWS documents them:

* Retry: each retrier counts its own attempts (`MaxAttempts`, default 3, 0 = never); the
  n-th retry waits `IntervalSeconds × BackoffRate^(n-1)` (defaults 1 s and 2.0), capped at
  `MaxDelaySeconds`, and with `JitterStrategy: FULL` a uniform draw in [0, that]. The wait
  goes through `sleep` (a simulated clock in tests) and is recorded in the history's
  `retries`. A retrier that matches but is exhausted ends the retrying; later retriers are
  not consulted. `$$.State.RetryCount` counts the retries of the current state.
* Catch: the first catcher whose ErrorEquals matches; its ResultPath places
  `{"Error", "Cause"}` into the state's raw input (default `$`: replaces it).
  `States.TaskFailed` matches every error but `States.Timeout`.
* Map: items run concurrently, at most `MaxConcurrency` at a time (0: no limit), each in a
  worker thread; results keep item order. The first iteration to fail fails the Map: no
  further item starts, the ones in flight finish and are recorded MapIterationAborted, and
  the Map's Retry/Catch see that first error. In an inline Map the Distributed-Map fields
  (ToleratedFailure*, ItemReader, ResultWriter, ItemBatcher) are refused with States.Runtime.
* Distributed Map (`ItemProcessor.ProcessorConfig.Mode: DISTRIBUTED`): each item runs as a
  child execution with its own history (STANDARD or EXPRESS alike), at most MaxConcurrency
  at a time (0: up to `map_workers` threads here; AWS allows 10,000). The parent records
  MapStateEntered, MapStateStarted, MapRunStarted, MapRunSucceeded|Failed,
  MapStateSucceeded|Failed, MapStateExited, whatever the item count. `ItemReader`
  (`s3:getObject`, ReaderConfig InputType JSON or JSONL, MaxItems) reads the items from a
  bucket of `buckets` (locally the blob store); a child that fails does not stop the others
  until the failures exceed ToleratedFailureCount or ToleratedFailurePercentage (each
  default 0, or their ...Path), when no further child starts and the map fails with
  States.ExceedToleratedFailureThreshold. `ResultWriter` (`s3:putObject`, Bucket, Prefix,
  WriterConfig OutputType JSON|JSONL, Transformation NONE) writes what AWS writes:
  `<Prefix>/<map run id>/manifest.json` ({DestinationBucket, MapRunArn, ResultFiles:
  {FAILED, PENDING, SUCCEEDED: [{Key, Size}]}}) and SUCCEEDED_0.json / FAILED_0.json /
  PENDING_0.json, each an array of the children's {ExecutionArn, Name, StateMachineArn,
  Status, StartDate, StopDate, Input, InputDetails, Output, OutputDetails | Error, Cause}
  (PENDING: the items never started); results are written when the map fails too. The Map's
  result is then {MapRunArn, ResultWriterDetails: {Bucket, Key of the manifest}}; without a
  ResultWriter, the children's outputs in item order (a failed child's entry as above).

Standard-workflow quotas are enforced as AWS enforces them, so a design that would break
them in the cloud breaks here first:

* history: each execution records the events AWS records (see `ExecutionHistory`); an
  execution whose event number 25,000 is not ExecutionSucceeded fails with States.Runtime.
* payloads: an execution's input, a state's input after Parameters, a task's result and a
  state's output must each be under 256 KiB as UTF-8 JSON, or the state fails with
  States.DataLimitExceeded.

Both are terminal: like States.Runtime errors (a path that selects nothing, a Choice variable
that is missing), no Retry or Catch handles them, `States.ALL` included; the execution
fails. A parent waiting on it with `.sync` sees States.TaskFailed, which it can catch.
(moto's interpreter lets `States.ALL` catch States.Runtime; AWS documents that it does not,
and this executor follows AWS.)
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from chimera.domain.errors import ChimeraError

Handler = Callable[[Any], Any]


class Bucket(Protocol):
    """What the S3 integrations of a Distributed Map use: objects by key."""

    def get(self, key: str) -> bytes: ...
    def put(self, key: str, data: bytes) -> None: ...


_MISSING = object()
_MAX_DELAY_SECONDS = 31_622_401  # the largest MaxDelaySeconds ASL accepts
_DISTRIBUTED_MAP_FIELDS = (
    "ToleratedFailureCount",
    "ToleratedFailurePercentage",
    "ToleratedFailureCountPath",
    "ToleratedFailurePercentagePath",
    "ItemReader",
    "ResultWriter",
    "ItemBatcher",
)

HISTORY_EVENT_LIMIT = 25_000
PAYLOAD_LIMIT_BYTES = 256 * 1024
_HISTORY_LIMIT_CAUSE = "The execution reached the maximum number of history events (25000)."
# StartExecution's name rule: 1-80 characters, none of these, no whitespace or control codes.
_BAD_NAME = re.compile(r"[\s<>{}\[\]?*\"#%\\^|~`$&,;:/\x00-\x1f\x7f-\x9f]")


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


class _TerminalError(_StatesError):
    """States.Runtime and States.DataLimitExceeded: no Retry or Catch applies."""


class TaskFailedError(Exception):
    """Raised by a local job runner or integration to fail its task with a given Error and
    Cause, as the AWS integration would (e.g. States.TaskFailed with DescribeJobs' JSON)."""

    def __init__(self, error: str, cause: str) -> None:
        super().__init__(f"{error}: {cause}")
        self.error = error
        self.cause = cause


@dataclass
class Machine:
    name: str
    arn: str
    definition: dict[str, Any]


@dataclass
class ExecutionHistory:
    """What AWS's GetExecutionHistory would list for one execution, by event type.

    Events per state, as AWS (and moto's interpreter) record them:
    the execution: ExecutionStarted, then ExecutionSucceeded or ExecutionFailed (2);
    Pass, Choice, Wait, Succeed: <Type>StateEntered, <Type>StateExited (2);
    Fail: FailStateEntered (1);
    Lambda Task: TaskStateEntered, per attempt LambdaFunctionScheduled, LambdaFunctionStarted,
    LambdaFunctionSucceeded|Failed, then TaskStateExited (5 without retries; +3 per retry);
    `.sync` Task (Step Functions, Batch): TaskStateEntered, TaskScheduled, TaskStarted,
    TaskSubmitted, TaskSucceeded|TaskFailed, TaskStateExited (6);
    Map: MapStateEntered, MapStateStarted, per item MapIterationStarted + the item's states +
    MapIterationSucceeded|Failed, then MapStateSucceeded|Failed, MapStateExited (4 + 2 per item).
    A state whose error a Catch handles still records its <Type>StateExited.
    """

    arn: str
    name: str
    machine: str
    events: list[str] = field(default_factory=list)
    status: str = "RUNNING"
    largest_payload: int = 0
    retries: list[tuple[str, float]] = field(default_factory=list)  # (state, delay in s)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, event: str) -> None:
        with self._lock:  # Map iterations record from several threads
            if len(self.events) >= HISTORY_EVENT_LIMIT - 1 and event != "ExecutionSucceeded":
                if self.status == "RUNNING":
                    self.events.append("ExecutionFailed")
                    self.status = "FAILED"
                raise _TerminalError("States.Runtime", _HISTORY_LIMIT_CAUSE)
            self.events.append(event)

    def measure(self, value: Any, what: str) -> None:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
        with self._lock:
            self.largest_payload = max(self.largest_payload, size)
        if size >= PAYLOAD_LIMIT_BYTES:
            raise _TerminalError(
                "States.DataLimitExceeded",
                f"{what}: {size} bytes exceed the {PAYLOAD_LIMIT_BYTES}-byte payload quota",
            )


@dataclass
class AslExecutor:
    """`functions` maps Lambda ARNs to handlers; `jobs` maps job-definition ARNs to runners.

    `executions` holds every execution's history, children included, by execution ARN.
    `sleep` is the clock retries and Wait states wait on (a no-op in tests: the delays are
    still computed and recorded in each history's `retries`); `rng` draws the FULL jitter.
    """

    functions: dict[str, Handler]
    jobs: dict[str, Handler] = field(default_factory=dict)
    machines: dict[str, Machine] = field(default_factory=dict)
    on_state: Callable[[str, str, Any], None] | None = None  # (execution, state, its input)
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    executions: dict[str, ExecutionHistory] = field(default_factory=dict)
    # S3 buckets by name, for ItemReader and ResultWriter (None: no such bucket).
    buckets: Callable[[str], Bucket | None] = lambda name: None
    map_workers: int = 32  # threads of a Distributed Map with no MaxConcurrency
    # Executions started without waiting (`states:startExecution`): each runs after the one
    # that started it has finished, in the order started (AWS runs them at once, independently).
    started: list[tuple[str, Any, str]] = field(default_factory=list)

    def register(self, name: str, arn: str, definition_text: str) -> Machine:
        machine = Machine(name, arn, json.loads(definition_text))
        self.machines[arn] = machine
        return machine

    # -- executions ----------------------------------------------------------------------
    def start(self, arn: str, input_: dict[str, Any], name: str | None = None) -> Any:
        """Run the execution to its end, then every execution it started without waiting
        (their failures are in their own histories). Returns the first one's output."""
        try:
            output = self._execute(arn, input_, name or uuid.uuid4().hex)
        except _StatesError as err:
            self.drain()
            raise ExecutionFailedError(err.error, err.cause) from None
        self.drain()
        return output

    def drain(self) -> None:
        """Run the executions started without waiting, each to its end, oldest first."""
        while self.started:
            machine_arn, input_, name = self.started.pop(0)
            with contextlib.suppress(_StatesError):
                self._execute(machine_arn, input_, name)

    def history(self, name: str) -> ExecutionHistory:
        """An execution's history by its name (or ARN)."""
        return self.executions.get(name) or next(
            h for h in self.executions.values() if h.name == name
        )

    def _admit(self, machine_arn: str, name: Any) -> tuple[Machine, str]:
        """StartExecution's checks: the machine exists, the name is valid and not yet used."""
        machine = self.machines.get(machine_arn)
        if machine is None:
            raise _StatesError(
                "StepFunctions.StateMachineDoesNotExistException", f"no machine {machine_arn}"
            )
        if not isinstance(name, str) or not 1 <= len(name) <= 80 or _BAD_NAME.search(name):
            raise _StatesError("StepFunctions.InvalidNameException", f"invalid name {name!r}")
        arn = f"{machine_arn.replace(':stateMachine:', ':execution:')}:{name}"
        if arn in self.executions:
            raise _StatesError(
                "StepFunctions.ExecutionAlreadyExistsException", f"execution {arn} already ran"
            )
        return machine, arn

    def _execute(self, machine_arn: str, input_: Any, name: str) -> Any:
        machine, arn = self._admit(machine_arn, name)
        history = ExecutionHistory(arn, name, machine.name)
        return self._execution(machine.definition, machine_arn, history, input_)

    def _execution(
        self, definition: dict[str, Any], machine_arn: str, history: ExecutionHistory, input_: Any
    ) -> Any:
        """Run `definition` as one execution recorded in `history`, to its end."""
        self.executions[history.arn] = history
        ctx = {
            "Execution": {
                "Id": history.arn,
                "Name": history.name,
                "Input": copy.deepcopy(input_),
                "StartTime": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            "StateMachine": {"Id": machine_arn, "Name": history.machine},
        }
        try:
            history.add("ExecutionStarted")
            history.measure(input_, "execution input")
            output = self._run(definition, input_, ctx, history)
        except _StatesError:
            if history.status == "RUNNING":
                history.events.append("ExecutionFailed")
                history.status = "FAILED"
            raise
        history.add("ExecutionSucceeded")
        history.status = "SUCCEEDED"
        return output

    def _run(
        self, definition: dict[str, Any], data: Any, ctx: dict[str, Any], history: ExecutionHistory
    ) -> Any:
        states = definition["States"]
        name = definition["StartAt"]
        while True:
            state = states[name]
            kind = state["Type"]
            ctx = {**ctx, "State": {"Name": name}}
            history.add(f"{kind}StateEntered")
            if self.on_state:
                self.on_state(ctx["Execution"]["Name"], name, data)
            if kind == "Fail":
                raise _StatesError(state.get("Error", "States.Fail"), state.get("Cause", ""))
            if kind == "Succeed":
                data = _select(
                    state.get("OutputPath", "$"),
                    _select(state.get("InputPath", "$"), data, ctx),
                    ctx,
                )
                history.measure(data, f"{name} output")
                history.add("SucceedStateExited")
                return data
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
                history.add("ChoiceStateExited")
                continue
            try:
                data = self._step(state, data, ctx, history)
            except _TerminalError:
                raise
            except _StatesError as err:
                handler = self._catcher(state, err)
                if handler is None:
                    raise
                history.add(f"{kind}StateExited")
                data = self._caught(handler, data, err)
                history.measure(data, f"{name} output")
                name = handler["Next"]
                continue
            history.add(f"{kind}StateExited")
            if state.get("End"):
                return data
            name = state["Next"]

    # -- the pieces of error handling and Map (each one a method, so a test can break it) --
    def _catcher(self, state: dict[str, Any], err: _StatesError) -> dict[str, Any] | None:
        """The first catcher whose ErrorEquals matches the error."""
        return next(
            (c for c in state.get("Catch", []) if _matches(c["ErrorEquals"], err.error)), None
        )

    def _caught(self, handler: dict[str, Any], data: Any, err: _StatesError) -> Any:
        """The state's output when `handler` caught `err`: the error at its ResultPath."""
        return _place(
            handler.get("ResultPath", "$"), data, {"Error": err.error, "Cause": err.cause}
        )

    def _selected(self, state: dict[str, Any], result: Any, ctx: dict[str, Any]) -> Any:
        """A Task's or Map's result after its ResultSelector."""
        if "ResultSelector" in state:
            return _render(state["ResultSelector"], result, ctx)
        return result

    def _retry_delay(self, rule: dict[str, Any], retry: int) -> float:
        """Seconds before the `retry`-th retry (1-based) under `rule`, as AWS computes them."""
        delay = float(rule.get("IntervalSeconds", 1)) * float(rule.get("BackoffRate", 2.0)) ** (
            retry - 1
        )
        delay = min(delay, float(rule.get("MaxDelaySeconds", _MAX_DELAY_SECONDS)))
        if rule.get("JitterStrategy", "NONE") == "FULL":
            delay = self.rng.uniform(0, delay)
        return delay

    def _with_retry(
        self,
        state: dict[str, Any],
        ctx: dict[str, Any],
        history: ExecutionHistory,
        call: Callable[[dict[str, Any]], Any],
    ) -> Any:
        """`call(ctx)` until it succeeds or no retrier allows another attempt."""
        attempts: dict[int, int] = {}
        retry_count = 0
        while True:
            attempt_ctx = {**ctx, "State": {**ctx["State"], "RetryCount": retry_count}}
            try:
                return call(attempt_ctx)
            except _TerminalError:
                raise
            except _StatesError as err:
                for i, rule in enumerate(state.get("Retry", [])):
                    if _matches(rule["ErrorEquals"], err.error):
                        attempts[i] = attempts.get(i, 0) + 1
                        if attempts[i] > rule.get("MaxAttempts", 3):
                            raise
                        delay = self._retry_delay(rule, attempts[i])
                        with history._lock:
                            history.retries.append((ctx["State"]["Name"], delay))
                        self.sleep(delay)
                        retry_count += 1
                        break
                else:
                    raise

    def _map_items(self, items: list[Any]) -> list[Any]:
        """The items a Map iterates over: all of them."""
        return items

    def _step(
        self, state: dict[str, Any], data: Any, ctx: dict[str, Any], history: ExecutionHistory
    ) -> Any:
        effective = _select(state.get("InputPath", "$"), data, ctx)
        kind = state["Type"]
        state_name = ctx["State"]["Name"]
        if kind == "Pass":
            result = (
                _render(state["Parameters"], effective, ctx)
                if "Parameters" in state
                else state.get("Result", effective)
            )
        elif kind == "Task":

            def attempt(actx: dict[str, Any]) -> Any:
                params = (
                    _render(state["Parameters"], effective, actx)
                    if "Parameters" in state
                    else effective
                )
                history.measure(params, f"{state_name} input")
                return self._task(state["Resource"], params, actx, history)

            result = self._selected(state, self._with_retry(state, ctx, history, attempt), ctx)
        elif kind == "Map":
            try:
                result = self._with_retry(
                    state, ctx, history, lambda actx: self._map(state, effective, actx, history)
                )
            except _TerminalError:
                raise
            except _StatesError:
                history.add("MapStateFailed")  # once, when the Map's retries are spent
                raise
            result = self._selected(state, result, ctx)
        elif kind == "Wait":
            seconds = state.get("Seconds")
            if "SecondsPath" in state:
                seconds = _select(state["SecondsPath"], effective, ctx)
                if not _num(seconds) or seconds < 0:
                    raise _StatesError(
                        "States.Runtime", f"SecondsPath {state['SecondsPath']} is {seconds!r}"
                    )
            self.sleep(float(seconds or 0))
            result = effective
        else:
            raise _TerminalError("States.Runtime", f"state type {kind} is not supported locally")
        data = _place(state.get("ResultPath", "$"), data, result)
        data = _select(state.get("OutputPath", "$"), data, ctx)
        history.measure(data, f"{state_name} output")
        return data

    def _map(
        self, state: dict[str, Any], effective: Any, ctx: dict[str, Any], history: ExecutionHistory
    ) -> list[Any]:
        state_name = ctx["State"]["Name"]
        processor = state.get("ItemProcessor") or state["Iterator"]
        if processor.get("ProcessorConfig", {}).get("Mode") == "DISTRIBUTED":
            return self._distributed_map(state, effective, ctx, history)
        for unsupported in _DISTRIBUTED_MAP_FIELDS:
            if unsupported in state:
                raise _TerminalError(
                    "States.Runtime", f"{state_name}: {unsupported} is not supported locally"
                )
        items = _select(state.get("ItemsPath", "$"), effective, ctx)
        if not isinstance(items, list):
            raise _TerminalError("States.Runtime", "ItemsPath did not select an array")
        items = self._map_items(items)
        limit = (
            _select(state["MaxConcurrencyPath"], effective, ctx)
            if "MaxConcurrencyPath" in state
            else state.get("MaxConcurrency", 0)
        )
        if not _num(limit) or limit < 0:
            raise _TerminalError("States.Runtime", f"{state_name}: MaxConcurrency {limit!r}")
        selector = state.get("ItemSelector", state.get("Parameters"))
        history.add("MapStateStarted")
        failures: list[_StatesError] = []
        stop = threading.Event()

        def iteration(index: int, item: Any) -> Any:
            if stop.is_set():
                return None  # never started: the Map already failed
            item_ctx = {**ctx, "Map": {"Item": {"Index": index, "Value": item}}}
            try:
                item_input = _render(selector, effective, item_ctx) if selector else item
                history.add("MapIterationStarted")
                history.measure(item_input, f"{state_name} item {index} input")
                output = self._run(processor, item_input, item_ctx, history)
            except _StatesError as err:
                with history._lock:
                    failures.append(err)
                stop.set()
                if not isinstance(err, _TerminalError):
                    history.add("MapIterationFailed")
                raise
            except BaseException:  # not a States error (the process is being stopped)
                stop.set()
                raise
            history.add("MapIterationAborted" if stop.is_set() else "MapIterationSucceeded")
            return output

        workers = len(items) if not limit else min(int(limit), len(items))
        results: list[Any] = []
        if items:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=state_name) as pool:
                futures = [pool.submit(iteration, i, item) for i, item in enumerate(items)]
                for future in futures:
                    exc = future.exception()
                    if exc is None:
                        results.append(future.result())
                    elif not isinstance(exc, _StatesError):
                        raise exc
        if failures:
            raise failures[0]
        history.add("MapStateSucceeded")
        return results

    # -- the Distributed Map ------------------------------------------------------------
    def _distributed_map(
        self, state: dict[str, Any], effective: Any, ctx: dict[str, Any], history: ExecutionHistory
    ) -> Any:
        state_name = ctx["State"]["Name"]
        if "ItemBatcher" in state:
            raise _TerminalError("States.Runtime", f"{state_name}: ItemBatcher is not supported")
        limit = self._number(state, "MaxConcurrency", effective, ctx, 0)
        tolerated_count = self._number(state, "ToleratedFailureCount", effective, ctx, 0)
        tolerated_pct = self._number(state, "ToleratedFailurePercentage", effective, ctx, 0)
        if tolerated_pct > 100:
            raise _TerminalError(
                "States.Runtime", f"{state_name}: ToleratedFailurePercentage {tolerated_pct}"
            )
        processor = state["ItemProcessor"]
        selector = state.get("ItemSelector", state.get("Parameters"))
        label = state.get("Label", state_name)
        machine_arn = ctx["StateMachine"]["Id"]
        run_id = str(uuid.uuid4())
        map_run_arn = f"{machine_arn.replace(':stateMachine:', ':mapRun:')}/{label}:{run_id}"
        child_machine = f"{ctx['StateMachine']['Name']}/{label}"
        child_prefix = machine_arn.replace(":stateMachine:", ":execution:") + f"/{label}:"
        history.add("MapStateStarted")
        history.add("MapRunStarted")
        try:
            if "ItemReader" in state:
                items = self._read_items(state["ItemReader"], effective, ctx, state_name)
            else:
                items = _select(state.get("ItemsPath", "$"), effective, ctx)
                if not isinstance(items, list):
                    raise _TerminalError("States.Runtime", "ItemsPath did not select an array")
        except _StatesError:
            history.add("MapRunFailed")
            raise
        entries: list[dict[str, Any] | None] = [None] * len(items)
        lock = threading.Lock()
        failed = 0
        stop = threading.Event()

        counted = {"ToleratedFailureCount", "ToleratedFailureCountPath"} & state.keys()
        percent = {"ToleratedFailurePercentage", "ToleratedFailurePercentagePath"} & state.keys()

        def exceeded(failures: int) -> bool:
            """Over either threshold given (over none given: any failure)."""
            over_count = failures > tolerated_count
            over_pct = failures * 100 > tolerated_pct * len(items)
            if counted and percent:
                return over_count or over_pct
            return over_pct if percent else over_count

        def child(index: int, item: Any) -> None:
            nonlocal failed
            if stop.is_set():
                return  # never started: the map run already failed
            item_ctx = {**ctx, "Map": {"Item": {"Index": index, "Value": item}}}
            child_input = _render(selector, effective, item_ctx) if selector else item
            name = hashlib.sha256(f"{run_id}:{index}".encode()).hexdigest()[:32]
            child_history = ExecutionHistory(child_prefix + name, name, child_machine)
            entry: dict[str, Any] = {
                "ExecutionArn": child_history.arn,
                "Input": json.dumps(child_input, separators=(",", ":")),
                "InputDetails": {"Included": True},
                "Name": name,
                "StartDate": _now(),
                "StateMachineArn": f"{machine_arn}/{label}",
            }
            try:
                output = self._execution(processor, machine_arn, child_history, child_input)
            except _StatesError as err:
                entry |= {"Error": err.error, "Cause": err.cause, "Status": "FAILED"}
                with lock:
                    failed += 1
                    if exceeded(failed):
                        stop.set()
            except BaseException:  # not a States error (the process is being stopped)
                stop.set()
                raise
            else:
                entry |= {
                    "Output": json.dumps(output, separators=(",", ":")),
                    "OutputDetails": {"Included": True},
                    "Status": "SUCCEEDED",
                }
            entry["StopDate"] = _now()
            entries[index] = entry

        if items:
            cap = int(limit) if limit else self.map_workers
            workers = max(1, min(cap, len(items)))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=state_name) as pool:
                futures = [pool.submit(child, i, item) for i, item in enumerate(items)]
                for future in futures:
                    exc = future.exception()
                    if exc is not None:
                        raise exc
        for index, item in enumerate(items):
            if entries[index] is None:
                entries[index] = {"Input": json.dumps(item), "Status": "PENDING"}
        done = [e for e in entries if e is not None]
        breached = exceeded(failed) if failed else False
        try:
            if "ResultWriter" in state:
                result: Any = self._write_results(
                    state["ResultWriter"], effective, ctx, map_run_arn, run_id, done
                )
            else:
                result = [json.loads(e["Output"]) if "Output" in e else e for e in done]
        except _StatesError:
            history.add("MapRunFailed")
            raise
        if breached:
            history.add("MapRunFailed")
            raise _StatesError(
                "States.ExceedToleratedFailureThreshold",
                f"The specified tolerated failure threshold was exceeded: {failed} of "
                f"{len(items)} item(s) failed (tolerated: {tolerated_count} item(s), "
                f"{tolerated_pct} %)",
            )
        history.add("MapRunSucceeded")
        history.add("MapStateSucceeded")
        return result

    def _number(
        self, state: dict[str, Any], name: str, data: Any, ctx: dict[str, Any], default: float
    ) -> float:
        value = (
            _select(state[name + "Path"], data, ctx)
            if name + "Path" in state
            else state.get(name, default)
        )
        if not _num(value) or value < 0:
            raise _TerminalError("States.Runtime", f"{ctx['State']['Name']}: {name} {value!r}")
        return float(value)

    def _bucket(self, params: Any, error: str) -> tuple[Bucket, str]:
        if not isinstance(params, dict) or not isinstance(params.get("Bucket"), str):
            raise _StatesError(error, f"no Bucket in {params!r}")
        bucket = self.buckets(params["Bucket"])
        if bucket is None:
            raise _StatesError(error, f"The specified bucket does not exist: {params['Bucket']}")
        return bucket, params["Bucket"]

    def _read_items(
        self, reader: dict[str, Any], data: Any, ctx: dict[str, Any], state_name: str
    ) -> list[Any]:
        """ItemReader over `s3:getObject`: a JSON array, or JSON Lines, from a bucket."""
        if reader.get("Resource") != "arn:aws:states:::s3:getObject":
            raise _TerminalError(
                "States.Runtime", f"{state_name}: ItemReader {reader.get('Resource')} locally"
            )
        config = reader.get("ReaderConfig", {})
        kind = config.get("InputType", "JSON")
        if kind not in ("JSON", "JSONL"):
            raise _TerminalError("States.Runtime", f"{state_name}: InputType {kind} locally")
        params = _render(reader.get("Parameters", {}), data, ctx)
        bucket, name = self._bucket(params, "States.ItemReaderFailed")
        key = params.get("Key")
        try:
            body = bucket.get(str(key)).decode()
            if kind == "JSON":
                items = json.loads(body)
            else:
                items = [json.loads(line) for line in body.splitlines() if line.strip()]
        except ChimeraError as exc:  # the blob store's NotFoundError
            raise _StatesError(
                "States.ItemReaderFailed", f"s3://{name}/{key}: The specified key does not exist"
            ) from exc
        except ValueError as exc:
            raise _StatesError(
                "States.ItemReaderFailed", f"s3://{name}/{key} is not {kind}: {exc}"
            ) from exc
        if not isinstance(items, list):
            raise _StatesError("States.ItemReaderFailed", f"s3://{name}/{key} is not an array")
        most = _select(config["MaxItemsPath"], data, ctx) if "MaxItemsPath" in config else None
        most = config.get("MaxItems", most)
        return items[: int(most)] if _num(most) and most > 0 else items

    def _write_results(
        self,
        writer: dict[str, Any],
        data: Any,
        ctx: dict[str, Any],
        map_run_arn: str,
        run_id: str,
        entries: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """ResultWriter over `s3:putObject`: the files and manifest AWS writes."""
        state_name = ctx["State"]["Name"]
        if writer.get("Resource") != "arn:aws:states:::s3:putObject":
            raise _TerminalError(
                "States.Runtime", f"{state_name}: ResultWriter {writer.get('Resource')} locally"
            )
        config = writer.get("WriterConfig", {})
        output_type = config.get("OutputType", "JSON")
        if output_type not in ("JSON", "JSONL") or config.get("Transformation", "NONE") != "NONE":
            raise _TerminalError("States.Runtime", f"{state_name}: WriterConfig {config} locally")
        params = _render(writer.get("Parameters", {}), data, ctx)
        bucket, name = self._bucket(params, "States.ResultWriterFailed")
        prefix = str(params.get("Prefix", ""))
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        files: dict[str, list[dict[str, Any]]] = {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
        try:
            for status in files:
                chosen = [e for e in entries if e["Status"] == status]
                if not chosen:
                    continue
                if output_type == "JSON":
                    body = json.dumps(chosen, separators=(",", ":")).encode()
                else:
                    body = "".join(json.dumps(e) + "\n" for e in chosen).encode()
                key = f"{prefix}{run_id}/{status}_0.json"
                bucket.put(key, body)
                files[status].append({"Key": key, "Size": len(body)})
            manifest = {"DestinationBucket": name, "MapRunArn": map_run_arn, "ResultFiles": files}
            key = f"{prefix}{run_id}/manifest.json"
            bucket.put(key, json.dumps(manifest, indent=2).encode())
        except ChimeraError as exc:
            raise _StatesError("States.ResultWriterFailed", f"s3://{name}/{prefix}: {exc}") from exc
        return {"MapRunArn": map_run_arn, "ResultWriterDetails": {"Bucket": name, "Key": key}}

    def _task(
        self, resource: str, params: Any, ctx: dict[str, Any], history: ExecutionHistory
    ) -> Any:
        if resource.startswith("arn:aws:states:::"):
            return self._integration(resource, params, history)
        history.add("LambdaFunctionScheduled")
        history.add("LambdaFunctionStarted")
        handler = self.functions.get(resource)
        try:
            if handler is None:
                raise _StatesError("States.TaskFailed", f"no local handler for resource {resource}")
            result = _call(handler, params)
            history.measure(result, f"{ctx['State']['Name']} result")
        except _StatesError:
            history.add("LambdaFunctionFailed")
            raise
        history.add("LambdaFunctionSucceeded")
        return result

    def _integration(self, resource: str, params: Any, history: ExecutionHistory) -> Any:
        """An optimized service integration, waited for (`.sync`)."""
        history.add("TaskScheduled")
        history.add("TaskStarted")
        try:
            if resource.startswith("arn:aws:states:::states:startExecution.sync"):
                result = self._start_execution_sync(params, resource.endswith(":2"), history)
            elif resource == "arn:aws:states:::states:startExecution":
                result = self._start_execution(params)
            elif resource.startswith("arn:aws:states:::batch:submitJob"):
                runner = self.jobs.get(params["JobDefinition"])
                if runner is None:
                    raise _StatesError(
                        "States.TaskFailed", f"no local runner for {params['JobDefinition']}"
                    )
                history.add("TaskSubmitted")
                result = _call(runner, params)
            elif resource == "arn:aws:states:::sagemaker:createTrainingJob.sync":
                trainer = self.jobs.get(resource)  # registered under the resource itself
                if trainer is None:
                    raise _StatesError("States.TaskFailed", f"no local runner for {resource}")
                history.add("TaskSubmitted")
                result = _call(trainer, params)
            else:
                raise _StatesError("States.TaskFailed", f"{resource} is not supported locally")
            history.measure(result, f"{resource} result")
        except _StatesError:
            history.add("TaskFailed")
            raise
        history.add("TaskSucceeded")
        return result

    def _start_execution(self, params: dict[str, Any]) -> Any:
        """StartExecution without waiting: admitted now (its name is taken), run later."""
        machine_arn = params["StateMachineArn"]
        child_input = params.get("Input", {})
        if isinstance(child_input, str):
            child_input = json.loads(child_input)
        name = params.get("Name") or uuid.uuid4().hex
        _, arn = self._admit(machine_arn, name)
        if any(n == name and m == machine_arn for m, _, n in self.started):
            raise _StatesError(
                "StepFunctions.ExecutionAlreadyExistsException", f"execution {arn} already started"
            )
        self.started.append((machine_arn, copy.deepcopy(child_input), name))
        return {"ExecutionArn": arn, "StartDate": time.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def _start_execution_sync(
        self, params: dict[str, Any], parsed: bool, history: ExecutionHistory
    ) -> Any:
        machine_arn = params["StateMachineArn"]
        child_input = params.get("Input", {})
        if isinstance(child_input, str):
            child_input = json.loads(child_input)
        name = params.get("Name") or uuid.uuid4().hex
        _, arn = self._admit(machine_arn, name)  # StartExecution's own errors are the task's
        history.add("TaskSubmitted")
        try:
            output = self._execute(machine_arn, child_input, name)
        except _StatesError as err:
            cause = {
                "ExecutionArn": arn,
                "Status": "FAILED",
                "Error": err.error,
                "Cause": err.cause,
            }
            raise _StatesError("States.TaskFailed", json.dumps(cause)) from None
        return {
            "ExecutionArn": arn,
            "Name": name,
            "StateMachineArn": machine_arn,
            "Input": child_input if parsed else json.dumps(child_input),
            "Output": output if parsed else json.dumps(output),
            "Status": "SUCCEEDED",
        }


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ")


def _call(handler: Handler, params: Any) -> Any:
    try:
        # A JSON round trip, as over the wire: handlers get and return plain JSON.
        return json.loads(json.dumps(handler(json.loads(json.dumps(params)))))
    except TaskFailedError as exc:
        raise _StatesError(exc.error, exc.cause) from exc
    except Exception as exc:  # noqa: BLE001 - every task failure becomes a States error
        error = type(exc).__name__
        # Lambda's Python runtime reports {"errorMessage", "errorType", ...} as compact JSON.
        cause = json.dumps({"errorMessage": str(exc), "errorType": error}, separators=(",", ":"))
        raise _StatesError(error, cause) from exc


def _matches(names: list[str], error: str) -> bool:
    return (
        "States.ALL" in names
        or error in names
        or ("States.TaskFailed" in names and not error.startswith("States.Timeout"))
    )


# -- JSONPath subset, intrinsic functions and payload templates --------------------------
def _select(path: str | None, data: Any, ctx: dict[str, Any]) -> Any:
    if path is None:
        return {}
    root, rest = (ctx, path[2:]) if path.startswith("$$") else (data, path[1:])
    value = root
    for part in _split(rest):
        if isinstance(part, int):
            if not isinstance(value, list) or part >= len(value):
                raise _TerminalError("States.Runtime", f"path {path} not found")
            value = value[part]
        else:
            if not isinstance(value, dict) or part not in value:
                raise _TerminalError("States.Runtime", f"path {path} not found in the input")
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
                if isinstance(value, str) and value.startswith("States."):
                    out[key[:-2]] = _intrinsic(value, data, ctx)
                elif isinstance(value, str) and value.startswith("$"):
                    out[key[:-2]] = copy.deepcopy(_select(value, data, ctx))
                else:
                    raise _TerminalError("States.Runtime", f"{key}: not a path or a function")
            else:
                out[key] = _render(value, data, ctx)
        return out
    if isinstance(template, list):
        return [_render(v, data, ctx) for v in template]
    if template == "$":
        return copy.deepcopy(data)
    return template


_TOKEN = re.compile(
    r"\s*(?:(?P<fn>States\.[A-Za-z]+)\s*\(|(?P<close>\))|(?P<comma>,)"
    r"|'(?P<str>(?:[^'\\]|\\.)*)'|(?P<num>-?\d+(?:\.\d+)?)|(?P<path>\$[^,)\s]*)"
    r"|(?P<lit>true|false|null))"
)


def _intrinsic(text: str, data: Any, ctx: dict[str, Any]) -> Any:
    """States.Format, States.MathAdd and States.Hash, nested, with paths and literals."""
    tokens = []
    pos = 0
    while pos < len(text.rstrip()):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise _TerminalError("States.Runtime", f"cannot parse {text!r} at {pos}")
        tokens.append(match)
        pos = match.end()

    def value(i: int) -> tuple[Any, int]:
        tok = tokens[i]
        if tok["fn"]:
            args: list[Any] = []
            i += 1
            while not tokens[i]["close"]:
                arg, i = value(i)
                args.append(arg)
                if tokens[i]["comma"]:
                    i += 1
            return _call_intrinsic(tok["fn"], args), i + 1
        if tok["str"] is not None:
            return re.sub(r"\\(.)", r"\1", tok["str"]), i + 1
        if tok["num"]:
            number = float(tok["num"])
            return (int(number) if number.is_integer() else number), i + 1
        if tok["path"]:
            return copy.deepcopy(_select(tok["path"], data, ctx)), i + 1
        if tok["lit"]:
            return json.loads(tok["lit"]), i + 1
        raise _TerminalError("States.Runtime", f"unexpected {tok.group(0)!r} in {text!r}")

    try:
        result, end = value(0)
    except IndexError:
        raise _TerminalError("States.Runtime", f"unbalanced {text!r}") from None
    if end != len(tokens):
        raise _TerminalError("States.Runtime", f"trailing text in {text!r}")
    return result


def _call_intrinsic(name: str, args: list[Any]) -> Any:
    if name == "States.MathAdd":
        if len(args) != 2 or not all(_num(a) for a in args):
            raise _TerminalError("States.IntrinsicFailure", f"{name} takes two numbers: {args}")
        return args[0] + args[1]
    if name == "States.Format":
        template, *values = args
        pieces = str(template).split("{}")
        if len(pieces) != len(values) + 1:
            raise _TerminalError("States.IntrinsicFailure", f"{name}: {len(values)} values")
        out = pieces[0]
        for v, piece in zip(values, pieces[1:], strict=True):
            out += (v if isinstance(v, str) else json.dumps(v)) + piece
        return out
    if name == "States.Hash":
        algorithms = {
            "MD5": "md5",
            "SHA-1": "sha1",
            "SHA-256": "sha256",
            "SHA-384": "sha384",
            "SHA-512": "sha512",
        }
        if len(args) != 2 or not isinstance(args[0], str) or args[1] not in algorithms:
            raise _TerminalError("States.IntrinsicFailure", f"{name}({args})")
        return hashlib.new(algorithms[args[1]], args[0].encode()).hexdigest()
    raise _TerminalError("States.Runtime", f"{name} is not supported locally")


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


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "BooleanEquals": lambda v, x: isinstance(v, bool) and v == x,
    "StringEquals": lambda v, x: isinstance(v, str) and v == x,
    "StringLessThan": lambda v, x: isinstance(v, str) and isinstance(x, str) and v < x,
    "StringGreaterThan": lambda v, x: isinstance(v, str) and isinstance(x, str) and v > x,
    "NumericEquals": lambda v, x: _num(v) and _num(x) and v == x,
    "NumericGreaterThan": lambda v, x: _num(v) and _num(x) and v > x,
    "NumericGreaterThanEquals": lambda v, x: _num(v) and _num(x) and v >= x,
    "NumericLessThan": lambda v, x: _num(v) and _num(x) and v < x,
    "NumericLessThanEquals": lambda v, x: _num(v) and _num(x) and v <= x,
}


_TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "IsNull": lambda v: v is None,
    "IsNumeric": lambda v: _num(v),
    "IsString": lambda v: isinstance(v, str),
    "IsBoolean": lambda v: isinstance(v, bool),
}


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
        raise _TerminalError("States.Runtime", f"Choice variable {rule['Variable']} not found")
    for op, is_type in _TYPE_TESTS.items():
        if op in rule:
            return is_type(value) == rule[op]
    for op, test in _COMPARISONS.items():
        if op in rule:
            return test(value, rule[op])
        if op + "Path" in rule:
            return test(value, _select(rule[op + "Path"], data, ctx))
    raise _TerminalError("States.Runtime", f"unsupported Choice rule {sorted(rule)}")


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
