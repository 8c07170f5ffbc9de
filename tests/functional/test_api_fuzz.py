"""schemathesis against `chimera serve`: generated requests from docs/openapi.json, no 5xx.

The server is the real one (the same proxy events into the same resolver, SQLite underneath,
the bundled cartpole agent discovered and live). Only the cycle starter is a recording double,
so that fuzzing POST /cycles does not start hundreds of real cycles; test_api.py starts one.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import schemathesis
from chimera import runtime
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from chimera_local.serve import make_server
from chimera_local.workflows import handler_for

SCHEMA = schemathesis.openapi.from_path(
    str(Path(__file__).resolve().parents[2] / "docs" / "openapi.json")
)


class RecordingStarter:
    def __init__(self) -> None:
        self.started: dict[str, dict[str, object]] = {}

    def start_cycle(self, name: str, input_: dict[str, object]) -> tuple[str, str]:
        self.started.setdefault(name, input_)
        return f"arn:aws:states:local:000000000000:execution:chimera-optimization-cycle:{name}", (
            "RUNNING"
        )


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory):
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("fuzz")
    mp.setenv("CHIMERA_HOME", str(home / "home"))
    mp.setenv("POWERTOOLS_LOG_LEVEL", "CRITICAL")
    runtime.deps.cache_clear()
    handler_for("discovery")({"action": "discover", "execution_id": "fuzz"})
    for agent_id in ("breast-cancer-linear", "cartpole-linear"):  # layer 3: modules go live
        handler_for("validation")(
            {"action": "validate", "execution_id": "fuzz", "agent_id": agent_id}
        )
    runtime.deps().workflows = RecordingStarter()
    server = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    runtime.deps.cache_clear()
    mp.undo()


@pytest.mark.slow
@SCHEMA.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case, base_url):
    case.call_and_validate(base_url=base_url, checks=[not_a_server_error])
