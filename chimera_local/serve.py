"""`chimera serve`: the API's resolver on localhost, fed the same REST v1 proxy events.

Each HTTP request becomes the event API Gateway would send (resource template, path
parameters, headers, query string, string body) and goes to the same `app.resolve`. There is
no IAM or API-key check here: API Gateway enforces those in the cloud; locally the server
listens on loopback only, for the operator.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from chimera_local.workflows import LambdaContext

MAX_BODY = 6 * 2**20  # API Gateway -> Lambda payload limit (6 MB)
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class _Template:
    resource: str
    pattern: re.Pattern[str]
    names: tuple[str, ...]


def _templates() -> list[_Template]:
    from chimera.api import openapi_document

    out = []
    for resource in json.loads(openapi_document())["paths"]:
        names = tuple(re.findall(r"{(\w+)}", resource))
        regex = re.sub(
            r"{\w+}", "([^/]+)", re.escape(resource).replace(r"\{", "{").replace(r"\}", "}")
        )
        out.append(_Template(resource, re.compile(f"^{regex}$"), names))
    return out


def proxy_event(
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes | None,
    templates: list[_Template],
) -> dict[str, Any]:
    """The API Gateway REST (v1) Lambda proxy event for one HTTP request."""
    url = urlsplit(target)
    path = unquote(url.path) or "/"
    resource, params = path, None
    for t in templates:
        match = t.pattern.match(path)
        if match:
            resource, params = t.resource, dict(zip(t.names, match.groups(), strict=True))
            break
    query = parse_qsl(url.query, keep_blank_values=True)
    multi_query: dict[str, list[str]] = {}
    for k, v in query:
        multi_query.setdefault(k, []).append(v)
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": params,
        "stageVariables": None,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "httpMethod": method,
            "path": path,
            "protocol": "HTTP/1.1",
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": int(time.time() * 1000),
            "resourcePath": resource,
            "stage": "local",
            "identity": {"sourceIp": "127.0.0.1", "userAgent": headers.get("User-Agent")},
        },
        "body": None if body is None else body.decode("utf-8", errors="replace"),
        "isBase64Encoded": False,
    }


def make_server(host: str = "127.0.0.1", port: int = 8080) -> ThreadingHTTPServer:
    from functions.api import handler as api

    templates = _templates()
    context = LambdaContext("chimera-api", "arn:aws:lambda:local:000000000000:function:chimera-api")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _refuse(self, status: int, message: str) -> None:
            body = json.dumps({"error": "ValidationFailedError", "message": message}).encode()
            self._answer(status, {"Content-Type": ["application/json"]}, body)
            self.close_connection = True

        def _serve(self) -> None:
            # Loopback only, for the operator: a page in a browser may not drive it (no
            # foreign Origin, no rebound Host name).
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
            origin = self.headers.get("Origin")
            if host not in LOCAL_HOSTS or (
                origin is not None and urlsplit(origin).hostname not in LOCAL_HOSTS
            ):
                self._refuse(403, "Host/Origin: chimera serve answers localhost only")
                return
            if self.headers.get("Transfer-Encoding"):
                self._refuse(411, "Transfer-Encoding: send a Content-Length")
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0:
                self._refuse(400, "Content-Length: not a length")
                return
            if length > MAX_BODY:
                self._refuse(413, f"Content-Length: over {MAX_BODY} bytes")
                return
            body = self.rfile.read(length) if length else None
            event = proxy_event(self.command, self.path, dict(self.headers), body, templates)
            response = api.lambda_handler(event, context)  # type: ignore[arg-type]
            headers = response.get("multiValueHeaders") or {
                k: [v] for k, v in (response.get("headers") or {}).items()
            }
            self._answer(response["statusCode"], headers, (response.get("body") or "").encode())

        def _answer(self, status: int, headers: dict[str, list[str]], payload: bytes) -> None:
            self.send_response(status)
            for name, values in headers.items():
                for value in values:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def __getattr__(self, name: str) -> Any:
            # Every method (GET ... TRACE, QUERY, anything) reaches the resolver, which
            # answers 404 where no route matches, as API Gateway would refuse it.
            if name.startswith("do_"):
                return self._serve
            raise AttributeError(name)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # the API Lambda logs each request as structured JSON

    return ThreadingHTTPServer((host, port), Handler)
