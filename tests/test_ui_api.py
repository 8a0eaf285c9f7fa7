"""The dashboard's server side over real HTTP: pages, the event stream (Last-Event-ID), series, sessions."""

from __future__ import annotations

import json

import httpx
import pytest
import yaml

from tests.test_cli import OPERATOR_TOKEN, VIEWER_TOKEN, make_server, no_env, policy_file, server, weir  # noqa: F401

VIEW = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
OP = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


_LINES: dict[int, object] = {}


def read_messages(response: httpx.Response, want: int) -> list[dict]:
    """The next `want` SSE messages (id, event, data) of a streaming response; comments skipped."""
    lines = _LINES.setdefault(id(response), response.iter_lines())
    out, current = [], {}
    for line in lines:
        if not line:
            if "data" in current:
                out.append(current)
                if len(out) == want:
                    return out
            current = {}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(": ")
        current[field] = json.loads(value) if field == "data" else value
    return out


def test_event_stream_replays_then_follows_and_resumes_from_last_event_id(server, policy_file):  # noqa: F811
    assert weir(server, "apply", "-f", policy_file()) == 0
    server.ticks(2)
    with httpx.Client(base_url=server.url, headers=VIEW, timeout=30) as client:
        stored = client.get("/v1/rollouts/echo/events").json()["items"]
        assert len(stored) >= 2
        with client.stream("GET", "/v1/events/stream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            replay = read_messages(response, len(stored))
            assert [int(m["id"]) for m in replay] == [e["seq"] for e in stored]
            assert all(m["event"] == "event" for m in replay)
            # A new event reaches the open stream (woken by the engine, not by a timer).
            assert weir(server, "pause", "echo") == 0
            (paused,) = read_messages(response, 1)
            assert paused["data"]["kind"] == "action" and paused["data"]["phase_to"] == "Paused"
            last = int(paused["id"])
        assert weir(server, "resume", "echo") == 0
        with client.stream("GET", "/v1/events/stream", headers={"Last-Event-ID": str(last)}) as response:
            (resumed,) = read_messages(response, 1)
            assert int(resumed["id"]) > last and resumed["data"]["phase_from"] == "Paused"
        bad = client.get("/v1/events/stream", headers={"Last-Event-ID": "x1"})
        assert bad.status_code == 422 and "Last-Event-ID" in bad.json()["detail"]
        assert client.get("/v1/events/stream", params={"rollout": "nope"}).status_code == 404


def test_per_rollout_stream_sends_its_series(server, policy_file):  # noqa: F811
    assert weir(server, "apply", "-f", policy_file()) == 0
    other = policy_file(name="other", service="other")
    data = yaml.safe_load(open(other))
    data["spec"]["service"]["domains"] = ["other.example"]
    open(other, "w").write(yaml.safe_dump(data))
    assert weir(server, "apply", "-f", other) == 0
    server.ticks(2)
    with httpx.Client(base_url=server.url, headers=VIEW, timeout=30) as client:
        with client.stream("GET", "/v1/events/stream", params={"rollout": "echo"}) as response:
            messages = read_messages(response, 4)
    kinds = {m["event"] for m in messages}
    assert kinds == {"event", "series"}, messages
    assert all(m["data"]["rollout"] == "echo" for m in messages if m["event"] == "event")
    series = next(m["data"] for m in messages if m["event"] == "series")
    assert series["rollout"] == "echo" and series["weights"][0]["kind"] == "created"


def test_series_endpoint(server, policy_file):  # noqa: F811
    assert weir(server, "apply", "-f", policy_file()) == 0
    server.ticks(3)
    with httpx.Client(base_url=server.url, headers=VIEW, timeout=30) as client:
        series = client.get("/v1/rollouts/echo/series").json()
        assert client.get("/v1/rollouts/nope/series").status_code == 404
    assert series["source"] is None  # the scripted analyzer has no access log: nothing to plot per request
    assert series["versions"] == [] and len(series["t"]) >= 1 and series["bin_s"] >= 1
    assert [w["weight"] for w in series["weights"]][-1] == 10  # the first step's weight, from the events


def test_series_follow_a_new_event_at_once(server, policy_file):  # noqa: F811
    assert weir(server, "apply", "-f", policy_file()) == 0
    server.ticks(3)
    with httpx.Client(base_url=server.url, headers=VIEW, timeout=30) as client:
        before = client.get("/v1/rollouts/echo/series").json()["weights"]
        assert weir(server, "pause", "echo") == 0
        after = client.get("/v1/rollouts/echo/series").json()["weights"]  # within the same second: not the cache
    assert len(after) == len(before) + 1 and after[-1]["phase"] == "Paused"


def test_pages_and_assets_need_a_viewer_and_ship_with_weir(server):  # noqa: F811
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        page = anonymous.get("/ui/rollouts/echo", headers={"Accept": "text/html,*/*"})
        assert page.status_code == 303 and page.headers["location"] == "/ui/login?next=/ui/rollouts/echo"
        assert anonymous.get("/ui/").status_code == 401  # not a browser's page load: a problem document
        assert anonymous.get("/ui/static/weir.js").status_code == 401
        login = anonymous.get("/ui/login", params={"next": "/ui/rollouts/echo"})
        assert login.status_code == 200 and 'name="token"' in login.text
        assert 'name="next" value="/ui/rollouts/echo"' in login.text
        assert 'value="/ui/"' in anonymous.get("/ui/login", params={"next": "https://evil.example/"}).text
        assert "not valid" in anonymous.get("/ui/login", params={"failed": "1"}).text
    with httpx.Client(base_url=server.url, headers=VIEW, timeout=30) as client:
        page = client.get("/ui/")
        assert page.status_code == 200 and "/ui/static/weir.js" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "http://" not in page.text and "https://" not in page.text  # no CDN
        for name in ("weir.js", "weir.css", "uPlot.iife.min.js", "uPlot.min.css", "api.js"):
            asset = client.get(f"/ui/static/{name}")
            assert asset.status_code == 200 and asset.content, name
        assert client.get("/ui/static/LICENSE.uPlot.txt").status_code == 404  # only the listed files
        assert client.get("/ui/static/..%2fstatic%2fweir.js").status_code == 404
        assert "MIT" in client.get("/ui/static/uPlot.iife.min.js").text[:400]
        docs = client.get("/docs")
        assert docs.status_code == 200 and "/ui/static/api.js" in docs.text and "cdn" not in docs.text.lower()
        assert client.get("/redoc").status_code == 404


def test_a_session_cookie_reads_but_never_writes(server, policy_file):  # noqa: F811
    assert weir(server, "apply", "-f", policy_file()) == 0
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        refused = browser.post("/ui/login", data={"token": "weir_wrong"})
        assert refused.status_code == 303 and refused.headers["location"] == "/ui/login?failed=1"
        assert "weir_session" not in browser.cookies
        signed_in = browser.post("/ui/login", data={"token": VIEWER_TOKEN, "next": "/ui/rollouts/echo"})
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/ui/rollouts/echo"
        cookie = signed_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and VIEWER_TOKEN not in cookie
        assert browser.get("/ui/rollouts/echo").status_code == 200
        assert browser.get("/v1/rollouts/echo").json()["name"] == "echo"
        with browser.stream("GET", "/v1/events/stream") as response:
            assert response.status_code == 200
        # An operator's cookie still cannot act: writes need the bearer header.
        browser.cookies.clear()
        browser.post("/ui/login", data={"token": OPERATOR_TOKEN})
        assert browser.get("/v1/rollouts").status_code == 200
        assert browser.post("/v1/rollouts/echo/pause").status_code == 401
        # A forged or tampered cookie is nobody's.
        value = browser.cookies["weir_session"]
        browser.cookies.clear()
        browser.cookies.set("weir_session", value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))
        assert browser.get("/v1/rollouts").status_code == 401
        # An off-site `next` is ignored.
        browser.cookies.clear()
        elsewhere = browser.post("/ui/login", data={"token": VIEWER_TOKEN, "next": "//evil.example/"})
        assert elsewhere.headers["location"] == "/ui/"


def test_session_ends_when_its_token_is_removed():
    from control_plane.api.auth import TokenAuth, hash_token
    from control_plane.api.session import Sessions

    now = [1000.0]
    sessions = Sessions(clock=lambda: now[0], lifetime_s=60)
    auth = TokenAuth.from_text(f"ann:viewer:{hash_token('weir_a')}\nbob:operator:{hash_token('weir_b')}\n")
    value, principal = sessions.issue(auth, "weir_a")
    assert principal.name == "ann" and sessions.principal(value, auth) == principal
    assert sessions.issue(auth, "weir_nope") is None
    reloaded = TokenAuth.from_text(f"bob:operator:{hash_token('weir_b')}\n")
    assert sessions.principal(value, reloaded) is None
    now[0] += 61
    assert sessions.principal(value, auth) is None  # expired
    assert Sessions().principal(value, auth) is None  # another process's key


@pytest.mark.parametrize("path", ["/ui/", "/ui/rollouts/echo", "/v1/events/stream", "/v1/rollouts/echo/series"])
def test_ui_paths_refuse_anonymous_clients(server, path):  # noqa: F811
    response = httpx.get(server.url + path, timeout=10)
    assert response.status_code == 401 and response.headers["content-type"].startswith("application/problem+json")
