"""The REST API contract: status codes, body shapes, problem+json errors, auth, limits, /metrics."""

from __future__ import annotations

import re

import httpx
import pytest
import yaml

from analysis.analyzer import ScriptedAnalyzer
from control_plane.api.app import create_app
from control_plane.api.auth import TokenAuth, TokenFileError, hash_token, parse_tokens
from control_plane.api.metrics import Metrics
from control_plane.store import SQLiteStore
from tests.proxy_double import engine_with_proxies, sync_all
from tests.test_engine import Clock
from xds.snapshot import ROUTE
from xds.status import NackRecord, ProxyStatus

MINIMAL = open("policies/examples/minimal.yaml").read()
OPERATOR_TOKEN = "weir_operator-secret"
VIEWER_TOKEN = "weir_viewer-secret"
OP = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
VIEW = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
TOKENS_FILE = f"""
tokens:
  - name: olga
    role: operator
    sha256: {hash_token(OPERATOR_TOKEN)}
  - name: victor
    role: viewer
    sha256: {hash_token(VIEWER_TOKEN)}
"""


def policy_yaml(name="echo", service="echo", steps=(10, 50, 100), domains=("*",)) -> str:
    data = yaml.safe_load(MINIMAL)
    data["metadata"]["name"] = name
    data["spec"]["service"]["name"] = service
    data["spec"]["service"]["domains"] = list(domains)
    data["spec"]["strategy"]["canary"]["steps"] = [{"weight": s, "minRequests": 10} for s in steps]
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture
async def make_api(tmp_path):
    """make(script=..., auth=True, **create_app kwargs) -> (client, engine, registry, app)."""
    made = []

    async def make(script=("inconclusive",), auth=True, proxies=1, start=True, **kwargs):
        engine, registry, _, doubles = engine_with_proxies(
            SQLiteStore(tmp_path / f"weir{len(made)}.db"), ScriptedAnalyzer(script), clock=Clock(), proxies=proxies)
        if start:
            await engine.start(run=False)  # ticks are driven by hand
        sync_all(doubles)
        if not auth:  # without tokens only loopback names and configured ones are served (api/guard.py)
            kwargs.setdefault("allowed_hosts", ["weir.test"])
        app = create_app(engine, registry, TokenAuth.from_text(TOKENS_FILE) if auth else None, **kwargs)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://weir.test")
        made.append((client, engine))
        return client, engine, registry, app

    yield make
    for client, engine in made:
        await client.aclose()
        await engine.stop()
        await engine.store.close()


def assert_problem(response: httpx.Response, status: int, kind: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and isinstance(body["detail"], str)
    if kind is not None:
        assert body["type"].endswith("/" + kind), body
    return body


async def submit(client, text=None, **kw):
    response = await client.post("/v1/rollouts", content=text or policy_yaml(**kw), headers=OP)
    assert response.status_code == 201, response.text
    return response.json()


# --------------------------------------------------------------------------- the happy paths


async def test_submit_list_get_and_drive(make_api):
    client, engine, _, _ = await make_api()
    response = await client.post("/v1/rollouts", content=policy_yaml(),
                                 headers={**OP, "Content-Type": "application/yaml"})
    assert response.status_code == 201
    assert response.headers["location"] == "/v1/rollouts/echo"
    body = response.json()
    assert body["name"] == "echo" and body["service"] == "echo" and body["phase"] == "Pending"
    assert body["revision"] == 1 and body["active"] is True and body["policy_hash"]
    assert [s["weight"] for s in body["steps"]] == [10, 50, 100] and body["n_steps"] == 3
    assert body["shadow"] is None and body["latest_verdict"] is None

    listed = (await client.get("/v1/rollouts", headers=VIEW)).json()
    assert [r["name"] for r in listed["items"]] == ["echo"] and listed["items"][0]["n_steps"] == 3

    for _ in range(3):
        await engine.tick()
    detail = (await client.get("/v1/rollouts/echo", headers=VIEW)).json()
    assert detail["phase"] == "Progressing" and detail["step"] == 0 and detail["weight"] == 10
    assert detail["latest_verdict"]["outcome"] == "inconclusive"
    assert detail["steps"][0] == {"index": 0, "kind": "weight", "weight": 10, "mirror": 0.0, "min_requests": 10,
                                  "max_duration_s": None}


async def test_submit_json_body(make_api):
    client, _, _, _ = await make_api()
    data = yaml.safe_load(policy_yaml())
    response = await client.post("/v1/rollouts", json=data, headers=OP)
    assert response.status_code == 201 and response.json()["name"] == "echo"


async def test_events_and_after(make_api):
    client, engine, _, _ = await make_api()
    await submit(client)
    for _ in range(3):
        await engine.tick()
    events = (await client.get("/v1/rollouts/echo/events", headers=VIEW)).json()["items"]
    assert events[0]["kind"] == "created" and events[0]["phase_to"] == "Pending"
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(seqs) >= 2
    assert set(events[0]) >= {"rollout", "revision", "kind", "phase_from", "phase_to", "step", "weight", "reason",
                              "policy_hash", "verdict", "at", "seq"}
    later = (await client.get(f"/v1/rollouts/echo/events?after={seqs[0]}", headers=VIEW)).json()["items"]
    assert [e["seq"] for e in later] == seqs[1:]
    body = assert_problem(await client.get("/v1/rollouts/echo/events?after=-1", headers=VIEW), 422, "invalid-request")
    assert body["errors"][0]["path"] == "query.after"
    assert_problem(await client.get("/v1/rollouts/nope/events", headers=VIEW), 404, "rollout-not-found")


async def test_actions_and_their_conflicts(make_api):
    client, engine, _, _ = await make_api()
    await submit(client)
    for _ in range(3):
        await engine.tick()
    response = await client.post("/v1/rollouts/echo/pause", headers=OP)
    assert response.status_code == 200 and response.json()["phase"] == "Paused"
    assert (await client.post("/v1/rollouts/echo/pause", headers=OP)).json()["phase"] == "Paused"  # idempotent
    body = assert_problem(await client.post("/v1/rollouts/echo/retry", headers=OP), 409, "invalid-action")
    assert body["action"] == "retry" and body["phase"] == "Paused" and "cannot retry" in body["detail"]
    assert (await client.post("/v1/rollouts/echo/resume", headers=OP)).json()["phase"] == "Progressing"
    promoted = (await client.post("/v1/rollouts/echo/promote", headers=OP)).json()
    assert promoted["gate"] == "confirm-promotion"
    aborted = (await client.post("/v1/rollouts/echo/abort", headers=OP)).json()
    assert aborted["phase"] == "RollingBack" and aborted["weight"] == 0
    for _ in range(2):
        await engine.tick()
    assert (await client.get("/v1/rollouts/echo", headers=VIEW)).json()["phase"] == "RolledBack"
    retried = (await client.post("/v1/rollouts/echo/retry", headers=OP)).json()
    assert retried["phase"] == "Pending" and retried["step"] == -1
    body = assert_problem(await client.post("/v1/rollouts/echo/explode", headers=OP), 404, "unknown-action")
    assert "pause, resume, promote, abort, retry" in body["detail"]
    assert_problem(await client.post("/v1/rollouts/ghost/pause", headers=OP), 404, "rollout-not-found")
    assert_problem(await client.get("/v1/rollouts/ghost", headers=VIEW), 404, "rollout-not-found")


async def test_set_weight(make_api):
    client, engine, _, _ = await make_api()
    await submit(client)
    # Pending: the phase does not allow it.
    assert_problem(await client.put("/v1/rollouts/echo/weight", json={"weight": 30}, headers=OP), 409, "invalid-action")
    for _ in range(3):
        await engine.tick()
    response = await client.put("/v1/rollouts/echo/weight", json={"weight": 30}, headers=OP)
    assert response.status_code == 200
    assert response.json()["weight"] == 30 and response.json()["weight_override"] == 30

    for bad, path in (({"weight": "30"}, "weight"), ({"weight": 101}, "weight"), ({"weight": -1}, "weight"),
                      ({"weight": True}, "weight"), ({"weight": 3.5}, "weight"), ({}, "weight"),
                      ({"weight": 30, "force": 1}, "force")):
        response = await client.put("/v1/rollouts/echo/weight", json=bad, headers=OP)
        body = assert_problem(response, 422, "invalid-request")
        assert [e["path"] for e in body["errors"]] == [path], (bad, body)
    response = await client.put("/v1/rollouts/echo/weight", content=b"{weight: 3", headers=OP)
    assert_problem(response, 400, "malformed-body")
    assert_problem(await client.put("/v1/rollouts/ghost/weight", json={"weight": 3}, headers=OP), 404)
    assert (await client.get("/v1/rollouts/echo", headers=VIEW)).json()["weight"] == 30  # bad input changed nothing


async def test_proxies(make_api):
    client, _, registry, _ = await make_api(proxies=0)
    assert (await client.get("/v1/proxies", headers=VIEW)).json() == {"connected": [], "disconnected": []}
    alive = ProxyStatus("envoy-1", "edge", "sotw", "127.0.0.1:5000")
    gone = ProxyStatus("envoy-2", "edge", "delta", "127.0.0.1:5001")
    registry.connect(alive, "*")
    registry.connect(gone, "*")
    registry.record_nack(alive, NackRecord(ROUTE, "n1", 3, "bad route", "v1", 1.0))
    registry.disconnect(gone)
    body = (await client.get("/v1/proxies", headers=VIEW)).json()
    assert [p["node_id"] for p in body["connected"]] == ["envoy-1"]
    assert body["connected"][0]["nacks"][0]["message"] == "bad route"
    assert [p["node_id"] for p in body["disconnected"]] == ["envoy-2"]
    assert body["disconnected"][0]["disconnected_at"] is not None


# --------------------------------------------------------------------------- bad input


async def test_invalid_policy_reports_every_error_with_path_and_line(make_api):
    client, engine, _, _ = await make_api()
    text = policy_yaml().replace("port: 10000", "port: high\n    colour: blue").replace("weight: 50", "weight: 500")
    body = assert_problem(await client.post("/v1/rollouts", content=text, headers=OP), 422, "policy-invalid")
    errors = body["errors"]
    assert len(errors) == 3, errors
    assert all(set(e) == {"path", "message", "line"} and isinstance(e["line"], int) for e in errors)
    paths = [e["path"] for e in errors]
    assert "spec.service.port" in paths and "spec.service.colour" in paths
    assert "spec.strategy.canary.steps[1].weight" in paths
    lines = text.splitlines()
    for error in errors:  # every line number points at the offending key
        assert error["path"].rsplit(".", 1)[-1].split("[")[0] in lines[error["line"] - 1], error
    assert await engine.list() == []  # nothing stored


@pytest.mark.parametrize("text,status", [
    ("apiVersion: [unclosed", 422),
    ("", 422),
    ("- just\n- a list\n", 422),
    ('{"apiVersion": ', 422),
])
async def test_malformed_policy_bodies(make_api, text, status):
    client, engine, _, _ = await make_api()
    body = assert_problem(await client.post("/v1/rollouts", content=text, headers=OP), status, "policy-invalid")
    assert body["errors"] and body["errors"][0]["message"]
    assert await engine.list() == []


async def test_json_content_type_is_parsed_strictly(make_api):
    client, _, _, _ = await make_api()
    body = assert_problem(await client.post("/v1/rollouts", content="apiVersion: x",
                                            headers={**OP, "Content-Type": "application/json"}), 422, "policy-invalid")
    assert "not valid JSON" in body["errors"][0]["message"] and body["errors"][0]["line"] == 1


async def test_non_utf8_body(make_api):
    client, _, _, _ = await make_api()
    assert_problem(await client.post("/v1/rollouts", content=b"\xff\xfe\x00bad", headers=OP), 400, "malformed-body")


async def test_conflicts_409_and_routing_422(make_api):
    client, engine, _, _ = await make_api()
    await submit(client)
    body = assert_problem(await client.post("/v1/rollouts", content=policy_yaml(name="echo-2"), headers=OP), 409,
                          "rollout-conflict")
    assert "already has an active rollout 'echo'" in body["detail"]
    assert body["errors"] == [{"path": "metadata.name", "message": body["detail"], "line": None}]
    # The same policy again changes nothing (it used to be a 409 "abort it first").
    again = await client.post("/v1/rollouts", content=policy_yaml(), headers=OP)
    assert again.status_code == 200 and again.json()["applied"]["action"] == "unchanged"
    assert again.json()["revision"] == 1
    await engine.tick()  # publishes echo's routing
    # Another service claiming the same domain, port and path cannot coexist with echo.
    response = await client.post("/v1/rollouts", content=policy_yaml(name="other", service="other"), headers=OP)
    body = assert_problem(response, 422, "routing-invalid")
    assert body["errors"] and all(e["message"] for e in body["errors"])
    assert [r.name for r in await engine.list()] == ["echo"]


async def test_oversize_bodies_get_413(make_api):
    client, engine, _, _ = await make_api(max_body_bytes=2048)
    big = policy_yaml() + "#" * 4096 + "\n"
    # Declared by Content-Length.
    assert_problem(await client.post("/v1/rollouts", content=big, headers=OP), 413, "body-too-large")

    # Streamed (chunked, no Content-Length): counted as it arrives.
    async def chunks():
        data = big.encode()
        for i in range(0, len(data), 512):
            yield data[i:i + 512]

    response = await client.post("/v1/rollouts", content=chunks(), headers=OP)
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "body-too-large")
    assert_problem(await client.put("/v1/rollouts/echo/weight", content=b" " * 5000, headers=OP), 413)
    assert await engine.list() == []
    # A body under the limit passes.
    await submit(client)


async def test_unknown_routes_and_methods_are_problems(make_api):
    client, _, _, _ = await make_api()
    assert_problem(await client.get("/v2/nothing", headers=VIEW), 404)
    response = await client.delete("/v1/rollouts", headers=OP)
    assert_problem(response, 405)
    assert "allow" in response.headers


# --------------------------------------------------------------------------- auth


async def test_auth_roles(make_api):
    client, engine, _, _ = await make_api()
    await submit(client)
    response = await client.get("/v1/rollouts")
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
    response = await client.get("/v1/rollouts", headers={"Authorization": "Bearer not-a-token"})
    assert_problem(response, 401, "unauthorized")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert_problem(await client.get("/v1/rollouts", headers={"Authorization": f"Basic {OPERATOR_TOKEN}"}), 401)

    for method, path in (("GET", "/v1/rollouts"), ("GET", "/v1/rollouts/echo"), ("GET", "/v1/rollouts/echo/events"),
                         ("GET", "/v1/proxies"), ("GET", "/metrics")):
        assert (await client.request(method, path, headers=VIEW)).status_code == 200, path
        assert_problem(await client.request(method, path), 401)

    for method, path, body in (("POST", "/v1/rollouts", policy_yaml(name="x", service="x")),
                               ("POST", "/v1/rollouts/echo/pause", None),
                               ("POST", "/v1/rollouts/echo/abort", None),
                               ("PUT", "/v1/rollouts/echo/weight", '{"weight": 5}')):
        body_json = assert_problem(await client.request(method, path, content=body, headers=VIEW), 403, "forbidden")
        assert "victor" in body_json["detail"] and "operator" in body_json["detail"]
    assert (await engine.get("echo")).phase.value == "Pending"  # the viewer changed nothing
    assert (await client.post("/v1/rollouts/echo/pause", headers=OP)).status_code == 200

    # Authentication comes before the body is parsed: no detail leaks to an anonymous client.
    assert_problem(await client.put("/v1/rollouts/echo/weight", content=b"{not json"), 401)
    assert_problem(await client.post("/v1/rollouts", content="apiVersion: ["), 401)

    # Probes stay open.
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")  # the engine runs (started without tasks) and the store answers
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


async def test_auth_disabled(make_api):
    client, _, _, _ = await make_api(auth=False)
    assert (await client.post("/v1/rollouts", content=policy_yaml())).status_code == 201
    assert (await client.post("/v1/rollouts/echo/pause")).status_code == 200


async def test_tokens_can_be_reloaded_at_run_time(make_api):
    client, _, _, app = await make_api()
    assert (await client.get("/v1/rollouts", headers=VIEW)).status_code == 200
    app.state.auth = TokenAuth.from_text(f"ops:operator:{hash_token('new-token')}")
    assert (await client.get("/v1/rollouts", headers=VIEW)).status_code == 401
    assert (await client.get("/v1/rollouts", headers={"Authorization": "Bearer new-token"})).status_code == 200


def test_token_file_formats_and_errors():
    assert hash_token("test") == "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    auth = TokenAuth.from_text(TOKENS_FILE)
    assert auth.authenticate(OPERATOR_TOKEN).name == "olga" and auth.authenticate(OPERATOR_TOKEN).role == "operator"
    assert auth.authenticate(VIEWER_TOKEN).role == "viewer"
    assert auth.authenticate("nope") is None and auth.authenticate("") is None and auth.authenticate(None) is None

    lines = f"# comment\nalice:operator:{hash_token('a')}\n\nviewer:{hash_token('b').upper()}  # trailing comment\n"
    entries = parse_tokens(lines)
    assert [(e.name, e.role) for e in entries] == [("alice", "operator"), ("viewer-line4", "viewer")]
    assert TokenAuth(entries).authenticate("b").role == "viewer"

    bad = f"alice:admin:{hash_token('a')}\nbob:viewer:weir_rawtoken\ncarol:viewer:{hash_token('a')}\njunk\n"
    with pytest.raises(TokenFileError) as err:
        parse_tokens(bad, source="tokens.txt")
    text = str(err.value)
    assert "line 1: role must be viewer or operator" in text
    assert "line 2: expected the hex SHA-256" in text and "store only its hash" in text
    assert "line 4: expected NAME:ROLE:SHA256" in text
    with pytest.raises(TokenFileError, match="tokens\\[0\\]: missing sha256"):
        parse_tokens("tokens:\n  - name: a\n    role: viewer\n")
    with pytest.raises(TokenFileError, match="same token hash"):
        parse_tokens(f"a:viewer:{hash_token('x')}\nb:operator:{hash_token('x')}\n")
    with pytest.raises(TokenFileError, match="no tokens"):
        TokenAuth.from_text("# empty\n")


# --------------------------------------------------------------------------- probes, metrics, docs


async def test_readyz_follows_the_engine(make_api):
    client, engine, _, _ = await make_api(start=False)
    assert_problem(await client.get("/readyz"), 503, "not-ready")
    await engine.start()
    try:
        assert (await client.get("/readyz")).json() == {"status": "ready"}
    finally:
        await engine.stop()
    assert (await client.get("/healthz")).status_code == 200


_SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? '
                     r'(-?[0-9.eE+-]+|\+Inf|-Inf|NaN)$')


_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def canonical(key: str) -> str:
    """A sample's key with its labels sorted: the exposition does not promise an order."""
    name, brace, rest = key.partition("{")
    if not brace:
        return key
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(_LABEL.findall(rest[:-1]))) + "}"


class Samples(dict):
    def __getitem__(self, key: str) -> float:
        return super().__getitem__(canonical(key))


def parse_metrics(text: str) -> dict[str, float]:
    samples = Samples()
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$", line), line
            continue
        assert _SAMPLE.match(line), line
        key, value = line.rsplit(" ", 1)
        samples[canonical(key)] = float(value)
    return samples


async def test_metrics_exposition(make_api):
    metrics = Metrics()
    client, engine, registry, app = await make_api(script=("pass", "inconclusive"), metrics=metrics)
    assert app.state.metrics is metrics
    await submit(client)
    for _ in range(5):
        await engine.tick()
    registry.nack_total[ROUTE] += 2
    registry.connect(ProxyStatus("envoy-1", "edge", "sotw", "127.0.0.1:5000"), "*")
    # The engine observed its own convergences (vacuous here: no proxy); count from now on.
    before = parse_metrics((await client.get("/metrics", headers=VIEW)).text)
    assert before["weir_xds_convergence_seconds_count"] >= 2  # one per published step
    metrics.observe_convergence(0.2)
    metrics.observe_convergence(3.0)

    response = await client.get("/metrics", headers=VIEW)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert text.endswith("\n")
    samples = parse_metrics(text)
    assert samples['weir_rollout_phase{rollout="echo",service="echo",phase="Progressing"}'] == 1
    assert samples['weir_rollout_phase{rollout="echo",service="echo",phase="Pending"}'] == 0
    assert samples['weir_rollout_canary_weight{rollout="echo"}'] == 50
    assert samples['weir_verdicts_total{rollout="echo",outcome="pass"}'] == 1
    assert samples['weir_xds_nacks_total{type="rds"}'] == 2
    assert samples["weir_xds_connected_proxies"] == 2  # the in-memory proxy that ACKs, and envoy-1
    def delta(key):
        return samples[key] - before[key]

    assert delta('weir_xds_convergence_seconds_bucket{le="0.25"}') == 1
    assert delta('weir_xds_convergence_seconds_bucket{le="+Inf"}') == 2
    assert delta("weir_xds_convergence_seconds_count") == 2
    assert delta("weir_xds_convergence_seconds_sum") == pytest.approx(3.2)
    assert "# TYPE weir_rollout_phase gauge" in text and "# TYPE weir_verdicts_total counter" in text
    assert "# TYPE weir_xds_convergence_seconds histogram" in text


def test_metrics_escape_label_values():
    from control_plane.rollouts.model import Rollout

    r = Rollout(name='we"ird\\name', service="s", group="*", policy={}, policy_hash="h", stable_version="v1",
                canary_version="v2")
    samples = parse_metrics(Metrics().render([r]))
    assert samples['weir_rollout_canary_weight{rollout="we\\"ird\\\\name"}'] == 0


async def test_openapi_routes_have_summaries(make_api):
    client, _, _, _ = await make_api()
    spec = (await client.get("/openapi.json", headers=VIEW)).json()
    expected = {"/v1/rollouts", "/v1/rollouts/{name}", "/v1/rollouts/{name}/events", "/v1/rollouts/{name}/weight",
                "/v1/proxies", "/healthz", "/readyz", "/metrics"}
    expected |= {f"/v1/rollouts/{{name}}/{a}" for a in ("pause", "resume", "promote", "abort", "retry")}
    assert expected <= set(spec["paths"])
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            assert op.get("summary"), (method, path)
    assert (await client.get("/docs", headers=VIEW)).status_code == 200


async def test_balancing_weights_and_estimates_are_served(make_api):
    class Balancer:  # the balancer's read side (control_plane.balancing.balancer.LatencyAwareBalancer.snapshot)
        def snapshot(self, service=None):
            rows = [{"endpoint": "10.0.0.1:80", "weight": 120, "estimate_ms": 20.5, "samples": 40, "errors": 0, "queue": None}]
            data = {"echo": {"v1": rows}}
            return data if service in (None, "echo") else {}

    client, engine, _, _ = await make_api(balancer=Balancer())
    await submit(client)
    body = (await client.get("/v1/services/echo/balancing", headers=VIEW)).json()
    assert body == {"service": "echo", "versions": {"v1": [{"endpoint": "10.0.0.1:80", "weight": 120, "estimate_ms": 20.5,
                                                             "samples": 40, "errors": 0, "queue": None}]}}
    assert (await client.get("/v1/rollouts/echo", headers=VIEW)).json()["balancing"]["v1"][0]["weight"] == 120
    assert_problem(await client.get("/v1/services/other/balancing", headers=VIEW), 404, "not-balanced")
