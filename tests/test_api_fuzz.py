"""A bounded, seeded fuzz run of the REST API over real HTTP: zero 5xx answers, zero tracebacks (issue 13).

Schemathesis generates requests for every operation of the served
``/openapi.json`` (valid and invalid parameters and bodies); a second run
posts mutated policies (YAML tags, 5,000-digit numbers, aliases, control
characters...). The server is a real uvicorn on 127.0.0.1 whose logs are
captured: any record with a traceback fails the run.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

import httpx
import pytest
import schemathesis
from schemathesis import GenerationMode
import uvicorn
import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis.errors import Unsatisfiable
from hypothesis import strategies as st

from analysis.analyzer import ScriptedAnalyzer
from control_plane.api.app import create_app
from control_plane.api.auth import TokenAuth, hash_token
from control_plane.store import SQLiteStore
from tests.proxy_double import engine_with_proxies, sync_all
from tests.test_policy_hardening import MINIMAL, NASTY, SENTIMENT, _mutate

TOKEN = "weir_fuzz-operator-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
COUNTS = {"requests": 0, "refused": 0, "5xx": 0}


@schemathesis.serializer("application/yaml")
def _yaml(ctx, value):
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else yaml.safe_dump(value).encode()


class Tracebacks(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        if record.exc_info or "Traceback" in record.getMessage():
            self.records.append(record)


class Server:
    """Weir's API with a real engine and store, served by uvicorn on a thread of its own."""

    def __init__(self, db):
        self.db = db
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.ready = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    async def _main(self):
        engine, registry, _, proxies = engine_with_proxies(SQLiteStore(self.db), ScriptedAnalyzer(("inconclusive",)))
        await engine.start(run=False)
        sync_all(proxies)
        app = create_app(engine, registry, TokenAuth.from_text(f"fuzz:operator:{hash_token(TOKEN)}"))
        # log_config=None: uvicorn's loggers propagate to the root logger, where tracebacks are counted.
        self.server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="info", lifespan="off"))
        serving = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started and not serving.done():
            await asyncio.sleep(0.01)
        self.ready.set()
        try:
            await serving
        finally:
            await engine.stop()
            await engine.store.close()

    def start(self):
        self.thread.start()
        assert self.ready.wait(15)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tracebacks = Tracebacks()
    logging.getLogger().addHandler(tracebacks)
    srv = Server(tmp_path_factory.mktemp("fuzz") / "weir.db")
    srv.start()
    srv.tracebacks = tracebacks
    srv.client = httpx.Client(base_url=srv.url, timeout=10)
    yield srv
    srv.client.close()
    srv.stop()
    logging.getLogger().removeHandler(tracebacks)
    print(f"\nAPI fuzz: {COUNTS['requests']} requests, {COUNTS['refused']} refused with a 4xx problem, "
          f"{COUNTS['5xx']} answers >= 500, {len(tracebacks.records)} tracebacks")
    assert not tracebacks.records, [r.getMessage() for r in tracebacks.records]


def _count(status: int) -> None:
    COUNTS["requests"] += 1
    if 400 <= status < 500:
        COUNTS["refused"] += 1
    if status >= 500:
        COUNTS["5xx"] += 1


FUZZ = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def test_every_operation_answers_bad_input_with_a_4xx(server):
    """Every operation of /openapi.json, with valid and invalid parameters and bodies."""
    spec = httpx.get(server.url + "/openapi.json", headers=AUTH, timeout=5).json()
    operations = [result.ok() for result in schemathesis.openapi.from_dict(spec).get_all_operations()]
    assert len(operations) >= 12
    before = COUNTS["requests"]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @seed(13)
            @FUZZ
            @given(case=operation.as_strategy(mode))
            def run(case):
                response = case.call(base_url=server.url, headers=AUTH, timeout=10)
                _count(response.status_code)
                assert response.status_code < 500, (case.method, case.path, response.text[:300])
                if response.status_code >= 400:
                    content_type = (response.headers.get("content-type") or [""])[0]
                    assert content_type.startswith("application/problem+json"), response.text
            try:
                run()
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body): the positive run covers it
                assert mode is GenerationMode.NEGATIVE, operation.label
    assert COUNTS["requests"] - before > 20 * len(operations)
    assert not server.tracebacks.records


@seed(13)
@settings(max_examples=80, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(base=st.sampled_from([MINIMAL, SENTIMENT]), line=st.integers(0, 80), fragment=st.sampled_from(NASTY),
       mode=st.integers(0, 2), json_body=st.booleans())
def test_mutated_policies_over_http_are_refused_cleanly(server, base, line, fragment, mode, json_body):
    text = _mutate(base, line, fragment, mode)
    headers = {**AUTH, "Content-Type": "application/json" if json_body else "application/yaml"}
    client = server.client
    response = client.post("/v1/rollouts", content=text.encode("utf-8", "surrogatepass"), headers=headers)
    _count(response.status_code)
    assert response.status_code < 500, response.text[:300]
    if response.status_code < 300:  # a mutation that is still a valid policy: clean up for the next one
        name = response.json()["name"]
        client.post(f"/v1/rollouts/{name}/abort", headers=AUTH)
    assert client.get("/healthz").status_code == 200  # the connection and the server are fine
    assert not server.tracebacks.records
