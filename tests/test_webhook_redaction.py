"""No webhook secret and no receiver body reaches a rollout message, an event, a log line or an API answer.

Defect (issue 13): ``user:pass@`` and ``?token=`` of a hook URL appeared in the
viewer-visible rollout message, in events and in INFO logs, and a refusing
hook's response body (200 characters) was copied into the rollout message.
This file uses only the engine and the API, so it runs against any version of them.
"""

from __future__ import annotations

import http.server
import json
import logging
import threading

import pytest

from tests.test_api import OP, VIEW, make_api, policy_yaml  # noqa: F401 (fixture)


class Receiver:
    """A webhook receiver on 127.0.0.1 that records raw bodies and headers and answers `status` with `body`."""

    def __init__(self, status: int = 200, body: bytes = b"ok"):
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, raw))
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(status=200, body=b"ok"):
        made.append(Receiver(status, body))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def receiver():
    made = []

    def make(status=200, body=b"ok"):
        made.append(Receiver(status, body))
        return made[-1]

    yield make
    for r in made:
        r.close()


async def test_no_secret_and_no_receiver_body_reaches_messages_events_logs_or_the_api(make_api, receiver, caplog):
    """Defect: user:pass@ and ?token= appeared in the rollout message, events and INFO logs; a refusing
    hook's body (200 characters) was copied into the rollout message."""
    hook = receiver(status=403, body=b"RECEIVER-SAYS-<script>alert(1)</script>")
    url = f"http://alice:pa55word@127.0.0.1:{hook.port}/hook?token=t0ken-s3cret"
    text = policy_yaml() + f"  webhooks:\n    - {{on: pre-rollout, url: '{url}', timeout: 2s}}\n"
    caplog.set_level(logging.DEBUG)
    client, engine, _, _ = await make_api()
    assert (await client.post("/v1/rollouts", content=text, headers=OP)).status_code == 201
    for _ in range(3):
        await engine.tick()
    assert hook.requests, "the hook was called"
    rollout = (await client.get("/v1/rollouts/echo", headers=VIEW)).json()
    assert rollout["phase"] == "Failed"
    assert rollout["message"] == (f"pre-rollout webhook refused: http://***@127.0.0.1:{hook.port}/hook?token=***: "
                                  "HTTP 403")
    events = (await client.get("/v1/rollouts/echo/events", headers=VIEW)).json()
    listed = (await client.get("/v1/rollouts", headers=VIEW)).json()
    everything = json.dumps([rollout, events, listed]) + "\n".join(r.getMessage() for r in caplog.records)
    for secret in ("pa55word", "alice", "t0ken-s3cret", "RECEIVER-SAYS"):
        assert secret not in everything, secret
    assert rollout["policy"]["spec"]["webhooks"][0]["url"] == f"http://***@127.0.0.1:{hook.port}/hook?token=***"
