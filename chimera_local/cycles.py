"""Local adapter of the WorkflowStarter port: the cycle's ASL in a background thread.

Executions are named like Step Functions': the same name with the same input finds the
execution already started; the same name with another input is a conflict. Each execution's
input and status are kept in a file under <home>/executions/ so a restarted server knows them.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from chimera.domain.errors import ConflictError

from chimera_local.asl import ExecutionFailedError


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
            self._write(name, {"input": input_, "status": "RUNNING"})
            thread = threading.Thread(
                target=self._run, args=(name, input_), name=f"cycle-{name}", daemon=True
            )
            self._threads[name] = thread
            thread.start()
        return self._arn(name), "RUNNING"

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
