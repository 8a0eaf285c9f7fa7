"""A recorded-interaction fake of the Kubernetes API, over real HTTP on 127.0.0.1.

No Kubernetes API server can run on the test machines, so the Istio router is
tested against this instead: it replays request/response pairs from a JSON
fixture (``tests/fixtures/istio/*.json``), in order, and checks that every
request the router sends is the recorded one - method, path, query, content
type and (parsed) body. Anything else is answered with a 500 Status and kept
in ``mismatches``; :meth:`RecordedApi.assert_done` fails on mismatches and on
recorded requests that never came.

Fixture format::

    {"description": "...",
     "interactions": [
        {"request": {"method": "PATCH", "path": "/apis/...", "query": {"fieldManager": "weir"},
                     "contentType": "application/apply-patch+yaml", "body": {...}},
         "response": {"status": 200, "body": {...}}}]}

The responses follow the API conventions: server-side apply answers with the
stored object (``metadata.generation`` bumped only when the spec changed),
GET returns the object with Istio's ``status``, errors are ``metav1.Status``.
"""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

FIXTURES = Path(__file__).parent / "fixtures" / "istio"


def load_interactions(name: str) -> list[dict[str, Any]]:
    return json.loads((FIXTURES / name).read_text())["interactions"]


class RecordedApi:
    """Serve ``interactions`` one by one; use as a context manager (``with RecordedApi(...) as api``)."""

    def __init__(self, interactions: list[dict[str, Any]]):
        self.pending = list(interactions)
        self.received: list[dict[str, Any]] = []
        self.mismatches: list[str] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body = fake._answer(self.command, self.path, self.headers.get("Content-Type"), raw)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_PUT = do_POST = do_DELETE = _any

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "RecordedApi":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, method: str, target: str, content_type: str | None, raw: bytes) -> tuple[int, Any]:
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query))
        body = json.loads(raw) if raw else None
        got = {"method": method, "path": parts.path, "query": query, "contentType": content_type, "body": body}
        with self._lock:
            self.received.append(got)
            if not self.pending:
                return self._mismatch(f"unexpected request {method} {target}: nothing more was recorded")
            want = self.pending.pop(0)
        request = want["request"]
        for key in ("method", "path", "query", "contentType", "body"):
            if key in request and request[key] != got[key]:
                return self._mismatch(
                    f"request {len(self.received)} ({method} {parts.path}): {key} was {got[key]!r}, recorded {request[key]!r}"
                )
        response = want["response"]
        return response["status"], response.get("body", {})

    def _mismatch(self, text: str) -> tuple[int, Any]:
        self.mismatches.append(text)
        return 500, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": text, "code": 500}

    def assert_done(self) -> None:
        assert self.mismatches == [], self.mismatches
        left = [f"{i['request']['method']} {i['request']['path']}" for i in self.pending]
        assert left == [], f"recorded requests never sent: {left}"
