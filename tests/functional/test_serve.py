"""`chimera serve` over real HTTP: the API answers, foreign pages and odd framing do not get in."""

from __future__ import annotations

import http.client
import json
import threading

import pytest
from chimera import runtime

from chimera_local.serve import make_server


@pytest.fixture
def port(home):
    server = make_server("127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    runtime.deps.cache_clear()


def request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, json.loads(payload) if payload else None


def test_health_and_a_bad_body_over_http(port):
    status, body = request(port, "GET", "/health")
    assert status == 200 and body["status"] == "ok"
    status, body = request(
        port,
        "POST",
        "/agents/cartpole-linear/predict",
        body=json.dumps({"job_id": "j"}),
        headers={"Content-Type": "application/json"},
    )
    assert status == 400 and body["field"] == "observation"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Host": "rebound.example:8080"},
    ],
)
def test_a_foreign_page_is_refused(port, headers):
    status, body = request(
        port, "POST", "/cycles", body="{}", headers={"Content-Type": "application/json", **headers}
    )
    assert status == 403 and "localhost" in body["message"]


def test_a_bad_length_is_refused(port):
    status, _ = request(port, "POST", "/kpis", body=b"", headers={"Content-Length": "-5"})
    assert status == 400
