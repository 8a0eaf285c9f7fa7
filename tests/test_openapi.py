"""The OpenAPI document types every success answer, and real answers match those types."""

from __future__ import annotations

import pytest

from control_plane.api import schemas
from tests.test_api import OP, VIEW, make_api, policy_yaml  # noqa: F401  (fixture)


async def test_every_route_has_a_typed_success_response(make_api):
    client, *_ = await make_api()
    document = (await client.get("/openapi.json", headers=VIEW)).json()
    missing = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            successes = {code: r for code, r in operation["responses"].items() if code.startswith("2")}
            if not successes:
                missing.append(f"{method.upper()} {path}: no 2xx response")
            for code, response in successes.items():
                content = response.get("content") or {}
                schemas_ = [c.get("schema") for c in content.values()]
                if not schemas_ or not all(schemas_):
                    missing.append(f"{method.upper()} {path} {code}: no schema")
                elif "application/json" in content and "$ref" not in content["application/json"]["schema"]:
                    missing.append(f"{method.upper()} {path} {code}: an untyped JSON schema")
    assert not missing, missing
    body = document["paths"]["/v1/rollouts"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/RolloutPolicy"}
    policy = document["components"]["schemas"]["RolloutPolicy"]
    assert "spec" in policy["properties"]
    # Every $ref in the document resolves inside it.
    text = str(document)
    import re
    for name in set(re.findall(r"#/components/schemas/([A-Za-z0-9_.-]+)", text)):
        assert name in document["components"]["schemas"], name


async def test_real_answers_match_their_documented_types(make_api):
    client, engine, *_ = await make_api(script=("pass",))
    created = await client.post("/v1/rollouts", content=policy_yaml(), headers={**OP, "Content-Type": "application/yaml"})
    assert created.status_code == 201
    schemas.ApplyResult.model_validate(created.json())
    schemas.RolloutDetail.model_validate(created.json())
    await engine.tick()
    schemas.RolloutList.model_validate((await client.get("/v1/rollouts", headers=VIEW)).json())
    schemas.RolloutDetail.model_validate((await client.get("/v1/rollouts/echo", headers=VIEW)).json())
    events = (await client.get("/v1/rollouts/echo/events", headers=VIEW)).json()
    schemas.EventList.model_validate(events)
    assert events["items"]
    schemas.Proxies.model_validate((await client.get("/v1/proxies", headers=VIEW)).json())
    schemas.ReleaseList.model_validate((await client.get("/v1/releases", headers=VIEW)).json())
    schemas.RolloutDetail.model_validate((await client.post("/v1/rollouts/echo/pause", headers=OP)).json())
    with pytest.raises(Exception):  # the models do check: a rollout without its phase is refused
        schemas.RolloutSummary.model_validate({"name": "x"})
