"""Local adapter of the WorkflowStarter port: the cycle's ASL in a background thread.

Executions are named like Step Functions': the same name with the same input finds the
execution already started; the same name with another input is a conflict. Each execution's
input, status and process are kept in a file under <home>/executions/, so a restarted server
knows them and a run's lease can tell a live owner from one whose process was killed: every
local execution (a `chimera run` too) is tracked here, as Step Functions tracks its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chimera.domain.errors import ConflictError

from chimera_local.asl import ExecutionFailedError


def _process_start(pid: int) -> str | None:
    """The process's start time (Linux /proc), so a reused pid is not taken for its owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return started is None or _process_start(pid) in (None, started)


class LocalCycles:
    def __init__(self, home: Path) -> None:
        self.dir = home / "executions"
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}

    def _arn(self, name: str) -> str:
        from chimera_local.workflows import state_machine_arn

        return state_machine_arn("optimization-cycle").replace(":stateMachine:", ":execution:") + (
            f":{name}"
        )

    def _record(self, name: str) -> dict[str, Any] | None:
        path = self.dir / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def _write(self, name: str, record: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text(json.dumps(record))
        tmp.replace(self.dir / f"{name}.json")

    def start_cycle(self, name: str, input_: dict[str, object]) -> tuple[str, str]:
        with self._lock:
            known = self._record(name)
            if known is not None:
                if known["input"] != input_:
                    raise ConflictError(f"name: execution {name!r} already ran with another input")
                return self._arn(name), str(known["status"])
            self._write(name, self._running(input_))
            thread = threading.Thread(
                target=self._run, args=(name, input_), name=f"cycle-{name}", daemon=True
            )
            self._threads[name] = thread
            thread.start()
        return self._arn(name), "RUNNING"

    @staticmethod
    def _running(input_: dict[str, object]) -> dict[str, Any]:
        pid = os.getpid()
        return {"input": input_, "status": "RUNNING", "pid": pid, "pid_start": _process_start(pid)}

    def is_running(self, execution_id: str) -> bool | None:
        if "/" in execution_id or execution_id.startswith("."):
            return None
        record = self._record(execution_id)
        if record is None:
            return None  # not started through here: the lease's expiry decides
        if record["status"] != "RUNNING":
            return False
        pid = record.get("pid")
        return True if pid is None else _alive(int(pid), record.get("pid_start"))

    @contextlib.contextmanager
    def track(self, name: str, input_: dict[str, object]) -> Iterator[None]:
        """Record an execution this process runs in the foreground (`chimera run`)."""
        with self._lock:
            if self._record(name) is not None:
                raise ConflictError(f"name: execution {name!r} already exists")
            self._write(name, self._running(input_))
        status, detail = "ABORTED", "interrupted"
        try:
            yield
            status, detail = "SUCCEEDED", ""
        except ExecutionFailedError as exc:
            status, detail = "FAILED", str(exc)
            raise
        finally:
            self._write(name, {"input": input_, "status": status, "error": detail})

    def _run(self, name: str, input_: dict[str, object]) -> None:
        from chimera_local.workflows import local_executor, state_machine_arn

        status, detail = "SUCCEEDED", ""
        try:
            local_executor().start(state_machine_arn("optimization-cycle"), dict(input_), name)
        except ExecutionFailedError as exc:
            status, detail = "FAILED", str(exc)
        except Exception as exc:  # noqa: BLE001 - a background execution records, never raises
            status, detail = "FAILED", f"{type(exc).__name__}: {exc}"
        self._write(name, {"input": input_, "status": status, "error": detail})

    def wait(self, name: str, timeout: float | None = None) -> str:
        """Block until the execution ends (for the CLI and tests); return its status."""
        thread = self._threads.get(name)
        if thread is not None:
            thread.join(timeout)
        record = self._record(name)
        return "UNKNOWN" if record is None else str(record["status"])
