"""The REST API: submit policies, watch rollouts, act on them, see proxies and metrics.

Every error is an RFC 9457 ``application/problem+json`` document (``type``,
``title``, ``status``, ``detail``, ``instance``) and, for input that failed
validation, ``errors: [{path, message, line}]`` with *every* problem found, so
a client (``weir apply``) can show them all at once.

Authentication (see :mod:`control_plane.api.auth`) runs before a request body is
read or parsed, so an anonymous client learns nothing from error details.
``/healthz`` and ``/readyz`` stay open for probes; ``/metrics`` and every
``GET /v1`` route need a viewer token; submitting and actions need an
operator token. ``auth=None`` disables authentication (``weir serve`` allows
that only on a loopback address).

All engine calls are awaited on the server's loop; nothing here blocks it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from http import HTTPStatus
from typing import Any, Awaitable, Callable, Iterable

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from policies import PolicyValidationError, parse_policy
from policies.document import NumberTooLong, load_json
from policies.errors import describe, format_path
from xds.routing import RoutingError
from xds.status import StatusRegistry

from ..errors import WeirError, status_of
from ..mesh.errors import MeshError
from ..rollouts.engine import Applied, Engine
from ..rollouts.model import Rollout
from ..rollouts.webhooks import redact_policy
from .auth import ANONYMOUS_OPERATOR, OPERATOR, VIEWER, Principal, TokenAuth
from .guard import OPEN_PATHS, ApiGuard
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .session import COOKIE as SESSION_COOKIE
from .session import Sessions
from .schemas import (ApplyResult, Balancing, EndpointsResult, EventList, Health, Proxies, ReleaseList, RolloutDetail,
                      RolloutList, install_policy_schema, ok, text)

log = logging.getLogger("weir.api")

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://weir.dev/problems/"
#: The operator actions served as ``POST /v1/rollouts/{name}/{action}``.
ACTIONS = ("pause", "resume", "promote", "abort", "retry")
#: How many recently disconnected proxies ``GET /v1/proxies`` lists.
DISCONNECTED_SHOWN = 100


# --------------------------------------------------------------------------- problems


class ApiProblem(Exception):
    """Raise anywhere in a handler to answer with a problem+json document."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        *,
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ):
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail
        self.title = title or HTTPStatus(status).phrase
        self.errors, self.headers, self.extra = errors, headers, extra


class BodyTooLarge(Exception):
    """The streamed request body went past the limit (raised from the receive channel)."""


def problem_body(
    status: int, kind: str, title: str, detail: str, instance: str | None = None,
    errors: list[dict[str, Any]] | None = None, **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + kind if kind != "about:blank" else kind,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors
    body.update(extra)
    return body


def problem_response(request: Request | None, problem: ApiProblem) -> JSONResponse:
    instance = request.url.path if request is not None else None
    body = problem_body(problem.status, problem.kind, problem.title, problem.detail, instance, problem.errors,
                        **problem.extra)
    return JSONResponse(body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_JSON)


class Problem(BaseModel):
    """RFC 9457 problem details (documentation model for the OpenAPI schema)."""

    type: str = Field(description="URI naming the kind of problem")
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = Field(
        None, description="every validation problem: {path, message, line}; line is null when unknown"
    )


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Problem, "description": HTTPStatus(code).phrase,
                   "content": {PROBLEM_JSON: {}}} for code in codes}


def _validation_errors(exc: ValidationError | RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        if loc and loc[0] == "body":
            loc = loc[1:]
        message = err.get("msg", "")
        if "input" in err and err.get("type") not in ("missing", "extra_forbidden"):
            message = f"{message} (got {describe(err['input'])})"
        out.append({"path": format_path([p for p in loc if isinstance(p, (str, int))]), "message": message,
                    "line": None})
    return out


# --------------------------------------------------------------------------- request body limit


class BodyLimitMiddleware:
    """413 for a body over `max_bytes`: by Content-Length up front, and by counting what streams in.

    Counting matters because a chunked upload has no Content-Length and a client
    may lie in it; the receive channel raises once the limit is passed and this
    middleware turns that into the 413 (unless a response already started).
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = None
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                length = value
                break
        if length is not None:
            try:
                declared = int(length)
                if declared < 0:
                    raise ValueError
            except ValueError:
                await self._reject(scope, send, 400, "malformed-body", "the Content-Length header is not a number")
                return
            if declared > self.max_bytes:
                await self._reject(scope, send, 413, "body-too-large", self._too_large())
                return
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._reject(scope, send, 413, "body-too-large", self._too_large())

    def _too_large(self) -> str:
        return f"the request body is larger than the limit of {self.max_bytes} bytes"

    async def _reject(self, scope, send, status: int, kind: str, detail: str) -> None:
        body = json.dumps(problem_body(status, kind, HTTPStatus(status).phrase, detail, scope.get("path"))).encode()
        await send({
            "type": "http.response.start",
            "status": status,
            # No "Connection: close": the server then reads and drops the rest of the upload before
            # closing, so the client is not reset while still sending and does see this answer.
            "headers": [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())],
        })
        await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------- bodies


class WeightRequest(BaseModel):
    """Body of ``PUT /v1/rollouts/{name}/weight``."""

    model_config = ConfigDict(extra="forbid")
    weight: StrictInt = Field(ge=0, le=100, description="percent of live traffic to the canary, 0-100")


class EndpointsRequest(BaseModel):
    """Body of ``PUT /v1/services/{service}/versions/{version}/endpoints``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    endpoints: list[str] = Field(description='host:port[@weight]; the host an IP address or a DNS name')


ENDPOINTS_BODY = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": EndpointsRequest.model_json_schema()}}}
}

POLICY_BODY = {
    "requestBody": {
        "required": True,
        "description": "A RolloutPolicy as YAML or JSON (its JSON Schema: `weir schema`).",
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {"schema": {"$ref": "#/components/schemas/RolloutPolicy"}},
        },
    }
}
WEIGHT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": WeightRequest.model_json_schema()}},
    }
}


async def _read_text(request: Request) -> str:
    body = await request.body()
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ApiProblem(400, "malformed-body", f"the body is not UTF-8 text (undecodable byte at offset {exc.start})")


# --------------------------------------------------------------------------- the app


def create_app(
    engine: Engine,
    registry: StatusRegistry,
    auth: TokenAuth | None,
    *,
    max_body_bytes: int = 1_048_576,
    metrics: Metrics | None = None,
    allowed_hosts: Iterable[str] = (),
    public_metrics: bool = False,
    balancer: Any = None,
    readiness: Callable[[], Awaitable[tuple[str | None, dict[str, Any]]]] | None = None,
    access_log: Any | None = None,
) -> FastAPI:
    """The API around a (started or soon started) engine.

    ``readiness`` replaces the one-replica check of /readyz (the engine runs and the
    store answers): it returns why the process is not ready, or None, and what to show
    (a replica over etcd is ready when its store has a quorum, leader or not).
    ``metrics`` becomes the engine's observer unless it already has one;
    ``app.state.auth`` may be replaced at run time, e.g. to reload the tokens file.
    ``allowed_hosts`` are Host names accepted besides the loopback ones when there
    are no tokens; ``public_metrics`` serves ``/metrics`` without a token
    (:mod:`control_plane.api.guard`). ``access_log`` feeds the dashboard's series and the per-version
    metrics (default: the analyzer's access-log source, when it has one).
    """
    metrics = metrics if metrics is not None else Metrics()
    if engine.observer is None:
        engine.observer = metrics

    app = FastAPI(
        title="Weir",
        summary="Canary rollouts of model servers on Envoy.",
        description=(
            "Submit a RolloutPolicy, follow its rollout step by step, and act on it. "
            "Errors are `application/problem+json` (RFC 9457). Authenticate with "
            "`Authorization: Bearer TOKEN`: viewer tokens read, operator tokens also submit and act."
        ),
        version="v1",
        docs_url=None,  # /docs is Weir's own page (control_plane.ui): Swagger UI would load from a CDN
        redoc_url=None,
    )
    app.state.engine = engine
    app.state.registry = registry
    app.state.auth = auth
    app.state.metrics = metrics
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.state.sessions = Sessions()  # the dashboard's read-only cookies (api/session.py)
    app.add_middleware(ApiGuard, auth=lambda: app.state.auth, allowed_hosts=allowed_hosts,
                       open_paths=OPEN_PATHS | ({"/metrics"} if public_metrics else set()),
                       sessions=app.state.sessions)
    _install_error_handlers(app)
    install_policy_schema(app)

    bearer = HTTPBearer(auto_error=False, description="A token listed (hashed) in the tokens file: weir tokens new")

    def require(role: str) -> Callable[..., Any]:
        async def check(
            request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
        ) -> Principal:
            current: TokenAuth | None = request.app.state.auth
            if current is None:
                return ANONYMOUS_OPERATOR
            if credentials is None and request.method in ("GET", "HEAD"):
                cookie = request.app.state.sessions.principal(request.cookies.get(SESSION_COOKIE), current)
                if cookie is not None and cookie.allows(role):
                    return cookie
            if credentials is None:
                raise ApiProblem(401, "unauthorized",
                                 "this endpoint needs a bearer token (Authorization: Bearer TOKEN)",
                                 headers={"WWW-Authenticate": 'Bearer realm="weir"'})
            principal = current.authenticate(credentials.credentials)
            if principal is None:
                raise ApiProblem(401, "unauthorized", "the bearer token is not valid",
                                 headers={"WWW-Authenticate": 'Bearer realm="weir", error="invalid_token"'})
            if not principal.allows(role):
                raise ApiProblem(403, "forbidden",
                                 f"{principal.name!r} is a {principal.role}; this needs the {role} role",
                                 headers={"WWW-Authenticate": 'Bearer realm="weir", error="insufficient_scope"'})
            return principal

        return check

    viewer = require(VIEWER)
    operator = require(OPERATOR)
    app.state.viewer = viewer  # for routes added around the app (GET /v1/leader on a replica)

    async def anyone() -> Principal:
        return ANONYMOUS_OPERATOR
    read_errors = _responses(401, 403, 404)
    write_errors = _responses(400, 401, 403, 404, 409, 413, 422)

    def detail_json(rollout: Rollout) -> dict[str, Any]:
        data = summary_json(rollout)
        machine = engine.machine(rollout)
        data["shadow"] = dataclasses.asdict(machine.shadow) if machine.shadow is not None else None
        data["steps"] = [dataclasses.asdict(s) for s in machine.steps]
        data["latest_verdict"] = engine.latest_verdicts.get(rollout.name)
        status = engine.route_status.get(rollout.name)
        data["routing"] = dataclasses.asdict(status) if status is not None and rollout.active else None
        release = engine.release(rollout.service)
        data["release"] = release.to_json() if release is not None else None
        if balancer is not None:
            weights = balancer.snapshot(rollout.service).get(rollout.service)
            if weights:
                data["balancing"] = weights
        return data

    def applied_json(applied: Applied, service: str) -> dict[str, Any]:
        """The rollout (as GET shows it) plus what applying did; only the latter when no rollout has that name."""
        plan = applied.plan
        outcome = {"applied": {"action": plan.action, "message": plan.message, "changes": list(plan.changes)}}
        if applied.rollout is not None:
            return {**detail_json(applied.rollout), **outcome}
        release = engine.release(service)
        return {**outcome, "release": release.to_json() if release is not None else None}

    def summary_json(rollout: Rollout) -> dict[str, Any]:
        data = rollout.to_json()
        data["policy"] = redact_policy(data["policy"])  # hook URLs may carry credentials
        try:
            data["n_steps"] = len(engine.machine(rollout).steps)
        except Exception:  # a stored policy the current model rejects: still list the rollout
            data["n_steps"] = None
        return data

    # -- probes and metrics ---------------------------------------------------------------------
    @app.get("/healthz", summary="Liveness: the process answers", tags=["probes"], responses=ok(Health))
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: the engine runs and the store answers", tags=["probes"],
             responses={**ok(Health), **_responses(503)})
    async def readyz():
        if readiness is not None:
            cause, info = await readiness()
            if cause is not None:
                raise ApiProblem(503, "not-ready", cause, **info)
            return {"status": "ready", **info}
        if not engine.running:
            raise ApiProblem(503, "not-ready", "the rollout engine is not running")
        try:
            problem = await asyncio.wait_for(engine.store.health(), timeout=2.0)
        except Exception as exc:  # any failure to check the store means not ready
            raise ApiProblem(503, "not-ready", f"the store does not answer: {exc or type(exc).__name__}")
        if problem is not None:
            raise ApiProblem(503, "not-ready", f"the store cannot serve: {problem}")
        return {"status": "ready"}

    @app.get("/metrics", summary="Prometheus metrics (viewer token)", tags=["probes"],
             response_class=PlainTextResponse,
             responses={**text(METRICS_CONTENT_TYPE.split(";")[0], "the exposition"), **_responses(401, 403)})
    async def get_metrics(request: Request, _: Principal = Depends(anyone if public_metrics else viewer)):
        body, content_type = metrics.exposition(await engine.list(), registry, request.headers.get("accept", ""))
        return PlainTextResponse(body, media_type=content_type)

    # -- rollouts --------------------------------------------------------------------------------
    @app.post("/v1/rollouts", status_code=201, summary="Apply a policy: start, update or restart a rollout",
              description="201 when a rollout was created; 200 when an active rollout was updated or restarted, "
                          "or when nothing was to do (the same policy again, a canary that is already live). "
                          "`applied.action` says which: create, replace, update, restart, unchanged, already-live.",
              tags=["rollouts"], openapi_extra=POLICY_BODY,
              responses={**ok(ApplyResult, "created", 201), **ok(ApplyResult, "updated or nothing to do"), **write_errors})
    async def submit(request: Request, principal: Principal = Depends(operator)):
        text = await _read_text(request)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        source = "request.json" if content_type == "application/json" or content_type.endswith("+json") else None
        # Parsing and validating a large document is CPU work: keep it off the event loop.
        policy = await asyncio.to_thread(parse_policy, text, source=source)
        applied = await engine.apply(policy)
        log.info("%s applied policy %s: %s (%s)", principal.name, policy.metadata.name, applied.plan.action,
                 applied.plan.message)
        headers = {"Location": f"/v1/rollouts/{applied.rollout.name}"} if applied.rollout is not None else None
        return JSONResponse(applied_json(applied, policy.spec.service.name), status_code=201 if applied.created else 200,
                            headers=headers)

    @app.put("/v1/services/{service}/versions/{version}/endpoints",
             summary="Change where a version runs (the live one or the active canary) without restarting the rollout",
             tags=["rollouts"], openapi_extra=ENDPOINTS_BODY, responses={**ok(EndpointsResult), **write_errors})
    async def set_endpoints(service: str, version: str, request: Request, principal: Principal = Depends(operator)):
        text = await _read_text(request)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ApiProblem(400, "malformed-body", f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}); "
                                                   'expected {"endpoints": ["host:port", ...]}')
        try:
            body = EndpointsRequest.model_validate(data)
        except ValidationError as exc:
            raise ApiProblem(422, "invalid-request", 'expected {"endpoints": ["host:port", ...]}', title="Invalid request",
                             errors=_validation_errors(exc))
        result = await engine.set_endpoints(service, version, body.endpoints, actor=principal.name)
        log.info("%s: %s", principal.name, result["message"])
        return result

    @app.get("/v1/services/{service}/balancing",
             summary="Latency-aware balancing of a service: each replica's weight and the estimate behind it",
             tags=["rollouts"], responses={**ok(Balancing), **read_errors})
    async def get_balancing(service: str, _: Principal = Depends(viewer)):
        snapshot = balancer.snapshot(service).get(service) if balancer is not None else None
        if snapshot is None:
            raise ApiProblem(404, "not-balanced", f"service {service!r} is not balanced latency-aware "
                             "(its policy's loadBalancing.policy is not latency-aware, or it has no routing)")
        return {"service": service, "versions": snapshot}

    @app.get("/v1/releases", summary="What is live per service: version, endpoints, the rollout that made it live",
             tags=["rollouts"], responses={**ok(ReleaseList), **_responses(401, 403)})
    async def list_releases(_: Principal = Depends(viewer)):
        return {"items": [r.to_json() for r in engine.releases()]}

    @app.get("/v1/rollouts", summary="List rollouts", tags=["rollouts"],
             responses={**ok(RolloutList), **_responses(401, 403)})
    async def list_rollouts(_: Principal = Depends(viewer)):
        return {"items": [summary_json(r) for r in await engine.list()]}

    @app.get("/v1/rollouts/{name}", summary="One rollout: state, steps, latest verdict", tags=["rollouts"],
             responses={**ok(RolloutDetail), **read_errors})
    async def get_rollout(name: str, _: Principal = Depends(viewer)):
        return detail_json(await engine.get(name))

    @app.get("/v1/rollouts/{name}/events", summary="A rollout's events (the why of every change)", tags=["rollouts"],
             responses={**ok(EventList), **_responses(401, 403, 404, 422)})
    async def get_events(
        name: str,
        after: int = Query(0, ge=0, le=2**63 - 1, description="only events with a sequence number above this"),
        _: Principal = Depends(viewer),
    ):
        return {"items": [e.to_json() for e in await engine.events(name, after)]}

    def add_action(action: str) -> None:
        async def act(name: str, principal: Principal = Depends(operator)):
            rollout = await engine.act(name, action, actor=principal.name)
            log.info("%s: %s rollout %s -> %s", principal.name, action, name, rollout.phase.value)
            return detail_json(rollout)

        act.__name__ = f"{action}_rollout"
        app.post(f"/v1/rollouts/{{name}}/{action}", summary=f"{action.capitalize()} a rollout", tags=["actions"],
                 responses={**ok(RolloutDetail), **_responses(401, 403, 404, 409)})(act)

    for action in ACTIONS:
        add_action(action)

    @app.post("/v1/rollouts/{name}/{action}", include_in_schema=False)
    async def unknown_action(name: str, action: str, _: Principal = Depends(operator)):
        hint = "; set the weight with PUT /v1/rollouts/{name}/weight" if action in ("weight", "set-weight") else ""
        raise ApiProblem(404, "unknown-action",
                         f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}{hint}")

    @app.put("/v1/rollouts/{name}/weight", summary="Set the canary weight (holds until the next step)",
             tags=["actions"], openapi_extra=WEIGHT_BODY, responses={**ok(RolloutDetail), **write_errors})
    async def set_weight(name: str, request: Request, principal: Principal = Depends(operator)):
        text = await _read_text(request)
        try:
            data = load_json(text)
        except json.JSONDecodeError as exc:
            raise ApiProblem(400, "malformed-body",
                             f'not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}); '
                                                    'expected {"weight": 0-100}')
        except (NumberTooLong, RecursionError) as exc:
            message = str(exc) if isinstance(exc, NumberTooLong) else "the document is nested too deeply"
            raise ApiProblem(422, "invalid-request", 'expected {"weight": 0-100}', title="Invalid request",
                             errors=[{"path": "weight", "message": message, "line": None}])
        try:
            body = WeightRequest.model_validate(data)
        except ValidationError as exc:
            raise ApiProblem(422, "invalid-request", 'expected {"weight": 0-100}', title="Invalid request",
                             errors=_validation_errors(exc))
        try:
            rollout = await engine.act(name, "set-weight", weight=body.weight, actor=principal.name)
        except WeirError:
            raise
        except ValueError as exc:  # the machine's own range check
            raise ApiProblem(422, "invalid-weight", str(exc), title="Invalid weight",
                             errors=[{"path": "weight", "message": str(exc), "line": None}])
        log.info("%s: set weight of rollout %s to %d%%", principal.name, name, body.weight)
        return detail_json(rollout)

    # -- proxies ---------------------------------------------------------------------------------
    @app.get("/v1/proxies", summary="Connected proxies and what they ACKed or NACKed", tags=["proxies"],
             responses={**ok(Proxies), **_responses(401, 403)})
    async def proxies(_: Principal = Depends(viewer)):
        gone = list(registry.disconnected)[-DISCONNECTED_SHOWN:]
        return {
            "connected": [p.to_json() for p in registry.proxies()],
            "disconnected": [p.to_json() for p in reversed(gone)],
        }

    from ..ui.routes import install_ui  # the dashboard, /docs, the series and the event stream

    if access_log is None:
        access_log = (getattr(engine.analyzer, "sources", None) or {}).get("access-log")
    metrics.bind(engine=engine, access_log=access_log, balancer=balancer)
    install_ui(app, engine, viewer=viewer, access_log=access_log, problem=ApiProblem)
    return app


def problem_for(exc: Exception) -> ApiProblem:
    """The one mapping from Weir's error hierarchy to HTTP (status from the error's class)."""
    if isinstance(exc, PolicyValidationError):
        errors = [{"path": e.path, "message": e.message, "line": e.line} for e in exc.errors]
        n = len(errors)
        if isinstance(exc, RoutingError):
            return ApiProblem(422, "routing-invalid",
                              "the policy's routing cannot coexist with the other services; nothing was changed",
                              title="Invalid routing", errors=errors)
        return ApiProblem(422, "policy-invalid", f"the policy has {n} problem{'s' if n != 1 else ''}; nothing was changed",
                          title="Invalid policy", errors=errors)
    if isinstance(exc, WeirError) and not hasattr(type(exc), "status"):
        # a registered (virtual) member of the hierarchy, e.g. routing Istio cannot express
        return ApiProblem(status_of(exc), "invalid-input", str(exc), title="Invalid input",
                          errors=[{"path": "", "message": line, "line": None} for line in str(exc).splitlines()])
    if isinstance(exc, WeirError):
        details = dict(exc.details)
        path = details.pop("path", None)
        errors = [{"path": path, "message": str(exc), "line": None}] if path else None
        return ApiProblem(type(exc).status, type(exc).kind, str(exc), title=type(exc).title, errors=errors, **details)
    return ApiProblem(500, "internal", "internal error; the control plane log has details")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiProblem)
    async def on_problem(request: Request, exc: ApiProblem):
        return problem_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def on_request_invalid(request: Request, exc: RequestValidationError):
        return problem_response(request, ApiProblem(422, "invalid-request", "the request is not valid",
                                                    title="Invalid request",
                                                    errors=_validation_errors(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException):
        status = exc.status_code
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
        if status == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path} (see /docs)"
        return problem_response(request, ApiProblem(status, "about:blank", detail, headers=exc.headers))

    @app.exception_handler(WeirError)
    @app.exception_handler(PolicyValidationError)
    @app.exception_handler(MeshError)
    async def on_weir_error(request: Request, exc: Exception):
        return problem_response(request, problem_for(exc))

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception):
        # A bug: Starlette re-raises after this answer, so the server logs the traceback once.
        return problem_response(request, problem_for(exc))


__all__ = ["ACTIONS", "ApiProblem", "BodyLimitMiddleware", "PROBLEM_JSON", "create_app"]
