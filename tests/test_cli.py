"""The `weir` client commands against a real API server (uvicorn on 127.0.0.1, a free port, its own thread)."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import types

import pytest
import uvicorn
import yaml

from control_plane import cli
from analysis.analyzer import ScriptedAnalyzer
from control_plane.api.app import create_app
from control_plane.api.auth import TokenAuth, hash_token
from control_plane.store import SQLiteStore
from tests.proxy_double import engine_with_proxies, sync_all

OPERATOR_TOKEN = "weir_cli-operator"
VIEWER_TOKEN = "weir_cli-viewer"
MINIMAL = yaml.safe_load(open("policies/examples/minimal.yaml"))


class Server:
    """An engine (ticked by hand) and the API, served by uvicorn on its own loop in a thread."""

    def __init__(self, db, script, proxies=1):
        self.db, self.script, self.proxies = db, script, proxies
        self.ready = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self.error: BaseException | None = None

    async def _main(self):
        try:
            self.loop = asyncio.get_running_loop()
            self.engine, registry, _, proxies = engine_with_proxies(SQLiteStore(self.db), ScriptedAnalyzer(self.script),
                                                                   proxies=self.proxies)
            await self.engine.start(run=False)  # ticked by hand
            sync_all(proxies)
            auth = TokenAuth.from_text(f"olga:operator:{hash_token(OPERATOR_TOKEN)}\n"
                                       f"victor:viewer:{hash_token(VIEWER_TOKEN)}\n")
            config = uvicorn.Config(create_app(self.engine, registry, auth), log_level="warning", lifespan="off")
            self.server = uvicorn.Server(config)
            serving = asyncio.create_task(self.server.serve(sockets=[self.sock]))
            while not self.server.started and not serving.done():
                await asyncio.sleep(0.01)
            self.ready.set()
            await serving
        except BaseException as exc:  # surfaced by start()
            self.error = exc
            self.ready.set()
        finally:
            await self.engine.store.close()

    def start(self):
        self.thread.start()
        assert self.ready.wait(10) and self.error is None, self.error

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    def run(self, coro, timeout=10):
        """Run a coroutine on the server's loop (e.g. engine.tick()) and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def ticks(self, n=1):
        for _ in range(n):
            self.run(self.engine.tick())


@pytest.fixture
def make_server(tmp_path):
    servers = []

    def make(script=("inconclusive",), proxies=1):
        server = Server(tmp_path / f"weir{len(servers)}.db", script, proxies)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server):
    return make_server()


@pytest.fixture
def policy_file(tmp_path):
    def write(name="echo", service="echo", steps=(10, 50, 100), suffix=".yaml", text=None):
        data = json.loads(json.dumps(MINIMAL))
        data["metadata"]["name"] = name
        data["spec"]["service"]["name"] = service
        data["spec"]["strategy"]["canary"]["steps"] = [{"weight": s, "minRequests": 10} for s in steps]
        path = tmp_path / f"{name}{suffix}"
        if text is None:
            text = json.dumps(data) if suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
        path.write_text(text)
        return str(path)

    return write


def weir(server, *argv, token=OPERATOR_TOKEN):
    """Run `weir --server URL --token T ARGV...` in-process; returns the exit code."""
    head = ["--server", server.url] + (["--token", token] if token else [])
    return cli.main([*head, *argv])


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("WEIR_SERVER", raising=False)
    monkeypatch.delenv("WEIR_TOKEN", raising=False)


# --------------------------------------------------------------------------- tests


def test_apply_get_and_output_formats(server, policy_file, capsys):
    assert weir(server, "apply", "-f", policy_file()) == 0
    out = capsys.readouterr().out
    assert out.startswith("rollout/echo create: created rollout of v2 over v1 (revision 1, v1 -> v2, Pending)")

    assert weir(server, "get") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "SERVICE", "PHASE", "STEP", "WEIGHT", "AGE", "MESSAGE"]
    assert lines[1].split()[:5] == ["echo", "echo", "Pending", "-", "0%"]

    server.ticks(3)
    assert weir(server, "get", "echo") == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[:5] == ["echo", "echo", "Progressing", "1/3", "10%"]

    assert weir(server, "get", "-o", "json") == 0
    items = json.loads(capsys.readouterr().out)
    assert isinstance(items, list) and items[0]["name"] == "echo" and items[0]["phase"] == "Progressing"
    assert weir(server, "get", "echo", "-o", "yaml") == 0
    one = yaml.safe_load(capsys.readouterr().out)
    assert one["weight"] == 10 and len(one["steps"]) == 3
    # --server/--token may also follow the sub-command.
    assert cli.main(["get", "--server", server.url, "--token", VIEWER_TOKEN, "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == "echo"


def test_apply_again_and_releases(server, policy_file, capsys):
    path = policy_file()
    assert weir(server, "apply", "-f", path) == 0
    capsys.readouterr()
    assert weir(server, "apply", "-f", path) == 0  # the same file again: nothing changes
    assert "rollout/echo unchanged: rollout 'echo' already runs this policy" in capsys.readouterr().out
    assert weir(server, "releases", token=VIEWER_TOKEN) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["SERVICE", "LIVE", "ENDPOINTS", "MADE", "LIVE", "BY", "AGE"]
    assert lines[1].split()[:3] == ["echo", "v1", "127.0.0.1:8081"] and "declared as stable" in lines[1]
    assert weir(server, "releases", "-o", "json") == 0
    assert json.loads(capsys.readouterr().out)[0]["version"] == "v1"


def test_endpoints_set(server, policy_file, capsys):
    assert weir(server, "apply", "-f", policy_file()) == 0
    server.ticks(3)
    capsys.readouterr()
    assert weir(server, "endpoints", "set", "echo", "v2", "127.0.0.1:8091", "127.0.0.1:8092") == 0
    assert "endpoints of the canary v2 changed from [127.0.0.1:8091] to [127.0.0.1:8091, 127.0.0.1:8092] (by olga)" in capsys.readouterr().out
    assert weir(server, "endpoints", "set", "echo", "v2", "127.0.0.1:0") == 1
    err = capsys.readouterr().err
    assert "endpoints[0]" in err and "port must be between 1 and 65535" in err
    assert weir(server, "endpoints", "set", "echo", "v7", "127.0.0.1:1") == 1
    assert "has no version 'v7' serving" in capsys.readouterr().err
    assert weir(server, "endpoints", "set", "echo", "v2", "127.0.0.1:1", token=VIEWER_TOKEN) == 1
    assert "operator" in capsys.readouterr().err


def test_apply_json_file_and_env_defaults(server, policy_file, capsys, monkeypatch):
    monkeypatch.setenv("WEIR_SERVER", server.url)
    monkeypatch.setenv("WEIR_TOKEN", OPERATOR_TOKEN)
    assert cli.main(["apply", "-f", policy_file(suffix=".json"), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "echo"


def test_apply_invalid_policy_prints_every_error(server, policy_file, capsys):
    path = policy_file(steps=(10, 500, 100), text=None)
    text = open(path).read().replace("port: 10000", "port: high")
    open(path, "w").write(text)
    assert weir(server, "apply", "-f", path) == 1
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert captured.out == ""
    assert err[0].startswith("error: Invalid policy (HTTP 422): the policy has 2 problems")
    assert any(line.strip().startswith("spec.service.port:") and ", line " in line for line in err[1:])
    assert any(line.strip().startswith("spec.strategy.canary.steps[1].weight:") and ", line " in line
               for line in err[1:])

    open(path, "w").write("apiVersion: [\n")
    assert weir(server, "apply", "-f", path) == 1
    assert "not valid YAML" in capsys.readouterr().err
    assert weir(server, "apply", "-f", path + ".missing") == 1
    assert "no such file" in capsys.readouterr().err


def test_conflict_and_not_found(server, policy_file, capsys):
    assert weir(server, "apply", "-f", policy_file()) == 0
    assert weir(server, "apply", "-f", policy_file(name="echo-2")) == 1
    assert "error: Rollout conflict (HTTP 409): service 'echo' already has an active rollout 'echo'" in \
        capsys.readouterr().err
    assert weir(server, "get", "ghost") == 1
    assert "Rollout not found (HTTP 404): no rollout named 'ghost'" in capsys.readouterr().err


def test_actions_and_weight(server, policy_file, capsys):
    weir(server, "apply", "-f", policy_file())
    server.ticks(3)
    capsys.readouterr()
    assert weir(server, "pause", "echo") == 0
    assert capsys.readouterr().out.startswith("rollout/echo pause: Paused, step 1/3, weight 10%")
    assert weir(server, "retry", "echo") == 1
    err = capsys.readouterr().err
    assert "Action not allowed now (HTTP 409)" in err and "cannot retry a rollout that is Paused" in err
    assert weir(server, "resume", "echo") == 0
    assert "Progressing" in capsys.readouterr().out
    assert weir(server, "set-weight", "echo", "30") == 0
    assert "weight 30%" in capsys.readouterr().out
    assert weir(server, "weight", "echo", "40", "-o", "json") == 0
    assert json.loads(capsys.readouterr().out)["weight_override"] == 40
    assert weir(server, "set-weight", "echo", "130") == 1
    err = capsys.readouterr().err
    assert "HTTP 422" in err and "\n  weight: " in err
    assert weir(server, "promote", "echo") == 0
    assert weir(server, "abort", "echo") == 0
    assert "RollingBack" in capsys.readouterr().out.splitlines()[-1]
    server.ticks(2)
    assert weir(server, "retry", "echo") == 0
    assert "Pending" in capsys.readouterr().out


def test_describe_and_events(make_server, policy_file, capsys):
    server = make_server(("pass", "inconclusive"))
    weir(server, "apply", "-f", policy_file())
    server.ticks(5)
    capsys.readouterr()
    assert weir(server, "describe", "echo") == 0
    out = capsys.readouterr().out
    assert "Name:        echo" in out and "Phase:       Progressing" in out
    assert "stable v1 -> canary v2" in out and "Weight:      50% of live traffic" in out
    steps = out.split("Steps:")[1].split("\n\n")[0].splitlines()
    marked = [line for line in steps if line.strip().startswith("->")]
    assert len(marked) == 1 and "weight 50%" in marked[0] and marked[0].split()[1] == "2"
    assert "Verdict (latest analysis): inconclusive: scripted inconclusive" in out
    assert "evidence:" in out and "call: 2" in out
    assert "Events (last " in out and "created" in out and "policy applied" in out

    assert weir(server, "events", "echo") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["SEQ", "TIME", "KIND"]
    assert any("[verdict pass]" in line for line in lines)
    assert weir(server, "events", "echo", "-o", "json") == 0
    events = json.loads(capsys.readouterr().out)
    assert events[0]["kind"] == "created"
    assert weir(server, "events", "echo", "--after", str(events[-1]["seq"])) == 0
    assert "no events for echo after" in capsys.readouterr().out


def test_watch_follows_until_terminal(make_server, policy_file, capsys):
    server = make_server(("pass",))
    weir(server, "apply", "-f", policy_file())
    capsys.readouterr()

    async def drive():
        # Each state lasts many polls (0.3 s vs 0.02 s), and the first tick waits for the watcher to start,
        # so a busy machine does not make it miss one.
        await asyncio.sleep(1.0)
        for _ in range(10):
            await server.engine.tick()
            await asyncio.sleep(0.3)

    future = asyncio.run_coroutine_threadsafe(drive(), server.loop)
    assert weir(server, "get", "echo", "--watch", "--interval", "0.02", token=VIEWER_TOKEN) == 0
    future.result(10)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 3 and "Succeeded" in lines[-1] and "weight 100%" in lines[-1]
    assert any("Progressing" in line and "step 1/3" in line for line in lines)
    assert len(lines) == len(set(lines))  # one line per change, no repeats

    # Already terminal: one line, exit 0 for Succeeded; -o json gives a JSON line.
    assert weir(server, "get", "echo", "-w", "-o", "json") == 0
    line = json.loads(capsys.readouterr().out)
    assert line["phase"] == "Succeeded"
    # Without NAME: one line per rollout, until none is active.
    assert weir(server, "get", "--watch") == 0
    assert "echo  Succeeded  step 3/3  weight 100%" in capsys.readouterr().out


def test_watch_exits_1_when_rolled_back(make_server, policy_file, capsys):
    server = make_server(("fail",))
    weir(server, "apply", "-f", policy_file())
    server.ticks(6)
    assert weir(server, "get", "echo", "--watch", "--interval", "0.01") == 1
    assert "RolledBack" in capsys.readouterr().out


def test_auth_errors(server, policy_file, capsys):
    assert weir(server, "get", token=None) == 1
    err = capsys.readouterr().err
    assert "Unauthorized (HTTP 401)" in err and "hint: pass --token TOKEN or set WEIR_TOKEN" in err
    assert weir(server, "get", token="wrong") == 1
    assert "not valid" in capsys.readouterr().err
    assert weir(server, "apply", "-f", policy_file(), token=VIEWER_TOKEN) == 1
    assert "Forbidden (HTTP 403): 'victor' is a viewer; this needs the operator role" in capsys.readouterr().err


def test_proxies(make_server, capsys):
    server = make_server(proxies=0)
    assert weir(server, "proxies", token=VIEWER_TOKEN) == 0
    assert capsys.readouterr().out.strip() == "no proxies connected"
    assert weir(server, "proxies", "-o", "json") == 0
    assert json.loads(capsys.readouterr().out) == {"connected": [], "disconnected": []}


def test_unreachable_server(capsys):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = "http://127.0.0.1:%d" % sock.getsockname()[1]
    sock.close()  # nothing listens there now
    assert cli.main(["--server", url, "get"]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach the Weir API at {url} (connection refused)" in err


def test_tokens_commands(tmp_path, capsys, monkeypatch):
    assert cli.main(["tokens", "hash", "test"]) == 0
    assert capsys.readouterr().out.strip() == "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(isatty=lambda: False, readline=lambda: "test\n"))
    assert cli.main(["tokens", "hash"]) == 0
    assert capsys.readouterr().out.strip() == hash_token("test")

    assert cli.main(["tokens", "new", "--name", "alice", "--role", "operator"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    token, entry = lines
    path = tmp_path / "tokens"
    path.write_text(entry + "\n")
    assert TokenAuth.from_file(path).authenticate(token).name == "alice"
    assert cli.main(["tokens", "check", str(path)]) == 0
    assert "1 token(s): alice (operator)" in capsys.readouterr().out
    path.write_text(f"alice:operator:{token}\n")
    assert cli.main(["tokens", "check", str(path)]) == 1
    assert "line 1: expected the hex SHA-256" in capsys.readouterr().err


def test_serve_parses_arguments_and_calls_serve_main(monkeypatch):
    seen = {}

    def fake_main(args):
        seen["args"] = args
        return 7

    monkeypatch.setitem(sys.modules, "control_plane.cli.serve", types.SimpleNamespace(main=fake_main))
    assert cli.main(["serve"]) == 7
    args = seen["args"]
    assert (args.api_host, args.api_port, args.xds_host, args.xds_port) == ("127.0.0.1", 8080, "127.0.0.1", 18000)
    assert (args.db, args.tokens, args.policies, args.listen_address, args.allow_remote, args.tick, args.analyzer) == \
        ("weir.db", None, None, "0.0.0.0", False, 1.0, "sources")
    assert cli.main(["serve", "--api-host", "0.0.0.0", "--api-port", "9000", "--xds-port", "18001", "--db", "x.db",
                     "--tokens", "t.yaml", "--policies", "pol", "--listen-address", "127.0.0.1", "--allow-remote",
                     "--tick", "0.5", "--analyzer", "scripted:pass"]) == 7
    args = seen["args"]
    assert (args.api_host, args.api_port, args.xds_port, args.db, args.tokens, args.policies, args.listen_address,
            args.allow_remote, args.tick, args.analyzer) == \
        ("0.0.0.0", 9000, 18001, "x.db", "t.yaml", "pol", "127.0.0.1", True, 0.5, "scripted:pass")


def test_existing_commands_still_work(tmp_path, capsys):
    assert cli.main(["validate", "policies/examples/minimal.yaml"]) == 0
    assert "ok" in capsys.readouterr().out
    assert cli.main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"]
    assert cli.main(["bootstrap", "--node-id", "n", "--cluster", "c", "--xds", "127.0.0.1:18000", "-o", "json"]) == 0
    assert "node" in json.loads(capsys.readouterr().out)


def test_oversize_upload_is_answered_not_reset(server):
    """A real server answers 413 and drains the upload, so the client sees the answer (no TCP reset)."""
    import httpx

    big = b"#" * 3_000_000
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}

    def chunks():
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    for content in (big, chunks()):
        response = httpx.post(server.url + "/v1/rollouts", content=content, headers=headers, timeout=10)
        assert response.status_code == 413
        assert response.json()["type"].endswith("/body-too-large")
