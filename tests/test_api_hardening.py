"""The API refuses what must not get in, and answers bad input with a 4xx problem (issue 13).

Loopback mode (no tokens): cross-origin writes and unknown Host names are
refused. Token mode: everything but the probes needs a token. Bad input that
used to be a 500 (and a reset connection) is a 422 problem+json.
"""

from __future__ import annotations

import pytest

from tests.test_api import MINIMAL, OP, VIEW, assert_problem, make_api, policy_yaml, submit  # noqa: F401 (fixture)

BROWSER = {"Content-Type": "text/plain", "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}


# --------------------------------------------------------------------------- loopback mode


@pytest.fixture
async def loopback(make_api):
    client, engine, _, _ = await make_api(auth=False, allowed_hosts=[])
    client.base_url = "http://127.0.0.1:8080"
    return client, engine


async def test_a_cross_origin_text_plain_post_creates_nothing(loopback):
    """Defect: any web page could POST a policy as text/plain (no CORS preflight) and got 201."""
    client, engine = loopback
    body = assert_problem(await client.post("/v1/rollouts", content=policy_yaml(), headers=BROWSER), 403,
                          "cross-origin-write")
    assert "http://evil.example" in body["detail"]
    assert await engine.list() == []


async def test_a_cross_origin_abort_changes_nothing(loopback):
    client, engine = loopback
    assert (await client.post("/v1/rollouts", content=policy_yaml())).status_code == 201
    assert_problem(await client.post("/v1/rollouts/echo/abort", headers={"Origin": "http://evil.example"}), 403)
    assert_problem(await client.post("/v1/rollouts/echo/abort", headers={"Origin": "null"}), 403)
    assert_problem(await client.post("/v1/rollouts/echo/abort", headers={"Sec-Fetch-Site": "cross-site"}), 403)
    # another port of the same machine is another origin too
    assert_problem(await client.post("/v1/rollouts/echo/abort", headers={"Origin": "http://127.0.0.1:3000"}), 403)
    assert (await engine.get("echo")).phase.value == "Pending"


async def test_same_origin_pages_and_non_browser_clients_may_write(loopback):
    client, engine = loopback
    assert (await client.post("/v1/rollouts", content=policy_yaml())).status_code == 201  # weir, curl: no Origin
    same = {"Origin": "http://127.0.0.1:8080", "Sec-Fetch-Site": "same-origin"}
    assert (await client.post("/v1/rollouts/echo/pause", headers=same)).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.1.evil.example", "localhost.evil",
                                  "", "[::1", "10.0.0.1:8080"])
async def test_an_unknown_host_is_refused_even_for_reads(loopback, host):
    """Defect: Host was not checked, so DNS rebinding let a page read and drive the API."""
    client, _ = loopback
    body = assert_problem(await client.get("/v1/rollouts", headers={"Host": host}), 403, "host-not-allowed")
    assert "--allowed-host" in body["detail"]
    assert_problem(await client.post("/v1/rollouts", content=policy_yaml(), headers={"Host": host}), 403)


@pytest.mark.parametrize("host", ["localhost", "localhost:8080", "127.0.0.1:8080", "127.0.0.2", "[::1]:8080",
                                  "LOCALHOST."])
async def test_loopback_names_are_served(loopback, host):
    client, _ = loopback
    assert (await client.get("/v1/rollouts", headers={"Host": host})).status_code == 200


async def test_configured_host_names_are_served(make_api):
    client, _, _, _ = await make_api(auth=False, allowed_hosts=["weir.internal"])
    ok = await client.get("/v1/rollouts", headers={"Host": "weir.internal:8080"})
    assert ok.status_code == 200
    assert_problem(await client.get("/v1/rollouts", headers={"Host": "other.internal"}), 403)


# --------------------------------------------------------------------------- token mode


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect", "/nope", "/metrics"])
async def test_with_tokens_only_the_probes_are_open(make_api, path):
    """Defect: /docs, /openapi.json and /redoc answered without a token."""
    client, _, _, _ = await make_api()
    body = assert_problem(await client.get(path), 401, "unauthorized")
    assert body["detail"].startswith("this endpoint needs a bearer token")
    assert_problem(await client.get(path, headers={"Authorization": "Bearer wrong"}), 401)
    assert_problem(await client.get(path, headers={"Authorization": "Basic b2xnYTpzZWNyZXQ="}), 401)
    assert (await client.get(path, headers=VIEW)).status_code in (200, 404)
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200


async def test_metrics_can_be_made_public(make_api):
    client, _, _, _ = await make_api(public_metrics=True)
    assert (await client.get("/metrics")).status_code == 200
    assert_problem(await client.get("/openapi.json"), 401)
    assert_problem(await client.get("/v1/rollouts"), 401)


async def test_with_tokens_a_foreign_host_is_no_problem(make_api):
    """A token cannot be sent by a foreign page, so in token mode the Host names are not restricted."""
    client, _, _, _ = await make_api()
    assert (await client.get("/v1/rollouts", headers={**VIEW, "Host": "weir.example.com"})).status_code == 200


# --------------------------------------------------------------------------- bad input: 4xx, never 500


async def test_a_policy_with_a_5000_digit_number_is_a_422(make_api):
    """Defect: Python's int-digit limit raised ValueError in the YAML reader: a 500 and a reset connection."""
    client, engine, _, _ = await make_api()
    text = policy_yaml().replace("port: 10000", "port: " + "9" * 5000)
    body = assert_problem(await client.post("/v1/rollouts", content=text, headers=OP), 422, "policy-invalid")
    assert body["errors"][0]["path"] == "spec.service.port" and "too long" in body["errors"][0]["message"]
    json_text = '{"apiVersion": "weir.dev/v1alpha1", "kind": "RolloutPolicy", "spec": {"x": ' + "9" * 5000 + "}}"
    body = assert_problem(await client.post("/v1/rollouts", content=json_text,
                                            headers={**OP, "Content-Type": "application/json"}), 422)
    assert "too long" in body["errors"][0]["message"]
    assert await engine.list() == []


@pytest.mark.parametrize("tagged", ["name: !!float echo", "name: !!int ten", "name: !!bool maybe"])
async def test_yaml_tags_are_a_422(make_api, tagged):
    client, _, _, _ = await make_api()
    text = MINIMAL.replace("name: echo\nspec", f"{tagged}\nspec")
    body = assert_problem(await client.post("/v1/rollouts", content=text, headers=OP), 422, "policy-invalid")
    assert body["errors"][0]["path"] == "metadata.name" and body["errors"][0]["line"] == 7


async def test_a_5000_digit_weight_is_a_422(make_api):
    """Defect: PUT .../weight with a 5,000-digit weight was a 500."""
    client, engine, _, _ = await make_api()
    await submit(client)
    body = assert_problem(await client.put("/v1/rollouts/echo/weight", content='{"weight": ' + "9" * 5000 + "}",
                                           headers=OP), 422)
    assert body["errors"][0]["path"] == "weight" and "too long" in body["errors"][0]["message"]
    body = assert_problem(await client.put("/v1/rollouts/echo/weight", content="[" * 100_000, headers=OP), 422)
    assert "nested too deeply" in body["errors"][0]["message"]
    assert (await engine.get("echo")).weight_override is None


@pytest.mark.parametrize("after", ["9223372036854775808", "9" * 5000, "-1", "1e3"])
async def test_events_after_out_of_range_is_a_422(make_api, after):
    """Defect: after=2**63 raised OverflowError inside SQLite: a 500."""
    client, _, _, _ = await make_api()
    await submit(client)
    body = assert_problem(await client.get(f"/v1/rollouts/echo/events?after={after}", headers=VIEW), 422)
    assert body["errors"][0]["path"] == "query.after"
    ok = await client.get("/v1/rollouts/echo/events?after=9223372036854775807", headers=VIEW)
    assert ok.status_code == 200 and ok.json() == {"items": []}
