"""Notifications to a local receiver over real HTTP: Slack-compatible and JSON, with the evidence summary."""

from __future__ import annotations

import http.server
import json
import logging
import threading

import pytest
import yaml

from analysis.analyzer import ScriptedAnalyzer
from analysis.verdict import Verdict
from control_plane.notify import Notifier, Target
from control_plane.notify.config import load_targets, parse_target
from control_plane.rollouts.observers import add_observer
from control_plane.rollouts.webhooks import WebhookClient
from control_plane.store import SQLiteStore
from tests.proxy_double import engine_with_proxies

MINIMAL = yaml.safe_load(open("policies/examples/minimal.yaml"))
EVIDENCE = {"counts": {"stable": {"requests": 900, "errors": 1}, "canary": {"requests": 310, "errors": 0}},
            "slos": [{"slo": "error-rate", "outcome": "pass", "e_value_fail": 0.1, "fail_threshold": 80.0,
                      "e_value_pass": 1300.0, "pass_threshold": 20.0}]}


class Receiver:
    """A local HTTP receiver that records every POST (path, JSON body)."""

    def __init__(self, status: int = 200):
        self.posts: list[tuple[str, dict]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append((self.path, json.loads(body)))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


class EvidenceAnalyzer(ScriptedAnalyzer):
    async def analyze(self, request):
        verdict = await super().analyze(request)
        return Verdict(verdict.outcome, f"scripted {verdict.outcome}", EVIDENCE)


async def run(tmp_path, script, targets):
    policy = json.loads(json.dumps(MINIMAL))
    policy["spec"]["strategy"]["canary"]["steps"] = [{"weight": 10, "minRequests": 10}, {"weight": 50, "minRequests": 10},
                                                    {"weight": 100}]
    engine, *_ = engine_with_proxies(SQLiteStore(tmp_path / "weir.db"), EvidenceAnalyzer(script))
    client = WebhookClient(retries=1)
    notifier = Notifier(targets, client)
    add_observer(engine, notifier)
    await engine.start(run=False)
    try:
        await engine.submit(yaml.safe_dump(policy))
        for _ in range(12):
            await engine.tick()
        await notifier.drain()
        return await engine.get("echo"), notifier
    finally:
        await engine.stop()
        await engine.store.close()
        await client.close()


async def test_a_promotion_notifies_each_passed_step_and_the_promotion(tmp_path, receiver):
    rollout, notifier = await run(tmp_path, ("pass",), [Target("slack", receiver.url + "/slack"),
                                                         Target("json", receiver.url + "/json")])
    assert rollout.phase.value == "Succeeded"
    slack = [body for path, body in receiver.posts if path == "/slack"]
    generic = [body for path, body in receiver.posts if path == "/json"]
    assert [b["notification"] for b in generic] == ["step-passed", "step-passed", "promoted"]
    assert len(slack) == 3 and notifier.sent == 6 and notifier.failed == 0
    step = generic[0]
    assert step["rollout"] == "echo" and step["step"] == 2 and step["verdict"] == "pass"  # now at step 2 of 3
    assert step["evidence"]["counts"]["canary"] == {"requests": 310, "errors": 0}
    assert "error-rate: pass (e-value to fail 0.1/80, to pass 1.3e+03/20)" in step["summary"]
    assert "canary 310 requests, 0 errors; stable 900 requests, 1 errors" in step["summary"]
    text = slack[-1]["text"]
    assert "rollout *echo* promoted" in text and "weight 100%" in text
    assert any("*Evidence*" in b["text"]["text"] for b in slack[0]["blocks"] if b["type"] == "section")


async def test_a_rollback_is_notified_with_its_evidence_and_only_to_who_asked(tmp_path, receiver):
    targets = [Target("json", receiver.url + "/all"),
               Target("json", receiver.url + "/promotions", frozenset({"promoted"}))]
    rollout, _ = await run(tmp_path, ("fail",), targets)
    assert rollout.phase.value == "RolledBack"
    assert [(p, b["notification"]) for p, b in receiver.posts] == [("/all", "rolled-back")]
    body = receiver.posts[0][1]
    assert body["verdict"] == "fail" and body["phase"] == "RollingBack" and body["evidence"]["slos"]


async def test_a_failing_receiver_is_logged_with_its_url_redacted(tmp_path, caplog):
    bad = Receiver(status=500)
    try:
        caplog.set_level(logging.WARNING, "weir.notify")
        rollout, notifier = await run(tmp_path, ("fail",), [Target("slack", bad.url + "/services/T0/B0/pathsecret?token=s3cret")])
    finally:
        bad.close()
    assert rollout.phase.value == "RolledBack" and notifier.failed == 1  # the rollout went on regardless
    assert "s3cret" not in caplog.text and "pathsecret" not in caplog.text and "HTTP 500" in caplog.text
    assert f"{bad.url}/***?token=***" in caplog.text


def test_targets_from_flags_and_file(tmp_path):
    import argparse

    assert parse_target("slack=https://hooks.example/x").format == "slack"
    with pytest.raises(ValueError, match="--notify: expected FORMAT=URL with FORMAT one of slack, json"):
        parse_target("teams=https://x.example/")
    with pytest.raises(ValueError, match="expected an http\\(s\\) URL"):
        parse_target("json=ftp://x.example/?k=secret")
    path = tmp_path / "notify.yaml"
    path.write_text("notify:\n  - format: slack\n    url: https://hooks.example/T/B/X\n    events: [promoted]\n"
                    "  - format: json\n    url: https://ops.example/weir\n")
    targets = load_targets(argparse.Namespace(notify=["json=http://127.0.0.1:9/x"], notify_file=str(path)))
    assert [t.format for t in targets] == ["json", "slack", "json"] and targets[1].events == {"promoted"}
    assert targets[1].url.endswith("/T/B/X") and "T/B/X" not in repr(targets[1])  # the path is the credential
    path.write_text("notify:\n  - format: teams\n    url: nope\n    events: [everything]\n    extra: 1\n")
    with pytest.raises(ValueError) as err:
        load_targets(argparse.Namespace(notify=[], notify_file=str(path)))
    message = str(err.value)
    for part in ("notify[0]: unknown key(s) extra", "notify[0].format", "notify[0].url", "notify[0].events"):
        assert part in message, message
