"""Webhooks against a real local HTTP server: retries with backoff, a clear "no", unreachable."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from devtools.devstack import free_port
from control_plane.rollouts.webhooks import WebhookClient


class Hook:
    """Answers with the next status of a script (the last one repeats); records bodies."""

    def __init__(self, statuses):
        self.statuses, self.bodies = list(statuses), []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                hook.bodies.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                status = hook.statuses[min(len(hook.bodies), len(hook.statuses)) - 1]
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"no")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook_factory():
    hooks = []

    def make(statuses):
        hooks.append(Hook(statuses))
        return hooks[-1]

    yield make
    for hook in hooks:
        hook.close()


async def test_retries_server_errors_then_succeeds(hook_factory):
    hook = hook_factory([503, 500, 200])
    client = WebhookClient(retries=3, backoff_s=0.01)
    result = await client.call(hook.url, {"event": "confirm-promotion", "rollout": "echo"}, timeout_s=2)
    await client.close()
    assert result.ok and result.attempts == 3
    assert hook.bodies[0] == {"event": "confirm-promotion", "rollout": "echo"}


async def test_a_clear_no_is_not_retried(hook_factory):
    hook = hook_factory([403])
    client = WebhookClient(retries=3, backoff_s=0.01)
    result = await client.call(hook.url, {}, timeout_s=2)
    await client.close()
    assert not result.ok and result.attempts == 1 and "HTTP 403" in result.detail


async def test_gives_up_after_retries(hook_factory):
    hook = hook_factory([500])
    client = WebhookClient(retries=3, backoff_s=0.01)
    result = await client.call(hook.url, {}, timeout_s=2)
    assert not result.ok and result.attempts == 3 and len(hook.bodies) == 3
    unreachable = await client.call(f"http://127.0.0.1:{free_port()}/hook", {}, timeout_s=0.5)
    await client.close()
    assert not unreachable.ok and "ConnectError" in unreachable.detail
