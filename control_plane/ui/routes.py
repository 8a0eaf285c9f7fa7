"""The dashboard's routes: pages and static files under ``/ui``, the series and event-stream endpoints, ``/docs``.

Every asset is a file of this package (``static/``, shipped in the wheel): no
CDN, so the dashboard and ``/docs`` work on a machine without internet. Pages
and data need a viewer, like the rest of ``GET /v1``; with tokens on, a browser
signs in once at ``/ui/login`` with a token and gets a read-only session cookie
(:mod:`control_plane.api.session`).
"""

from __future__ import annotations

import mimetypes
from html import escape as html_escape
from importlib import resources
from typing import Any, Callable
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from ..api.schemas import Series, ok, text
from ..api.session import set_cookie_header
from ..rollouts.observers import add_observer
from .history import VerdictHistory
from .series import SeriesBuilder
from .stream import BATCH, EventHub, event_stream

__all__ = ["install_ui", "static_text"]

STATIC = resources.files(__package__) / "static"
#: Files ``/ui/static/NAME`` serves (nothing else in the package is reachable).
STATIC_FILES = ("weir.js", "weir.css", "uPlot.iife.min.js", "uPlot.min.css", "api.js")
_LOGIN_BODY_MAX = 8192


#: How often a stream re-reads the store when this replica's engine does not run (a follower of
#: several replicas): the leader's engine emits the events, so nothing here would wake the stream.
FOLLOWER_POLL_S = 1.0


def static_text(name: str) -> str:
    """One static file's text (also what ``weir report`` inlines)."""
    return (STATIC / name).read_text(encoding="utf-8")


def install_ui(app: FastAPI, engine: Any, *, viewer: Callable[..., Any], access_log: Any | None = None,
               problem: Callable[..., Exception]) -> None:
    """Add the dashboard to ``app``; ``viewer`` is the API's viewer dependency, ``problem`` its ApiProblem."""
    hub = EventHub()
    history = VerdictHistory(engine.latest_verdicts.get, clock=engine.clock)
    add_observer(engine, hub)
    add_observer(engine, history)
    series = SeriesBuilder(engine, access_log, history, clock=engine.clock, version=lambda: hub.version)
    app.state.event_hub, app.state.series = hub, series
    page = static_text("dashboard.html")

    def html(request: Request, body: str) -> HTMLResponse:
        response = HTMLResponse(body, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                               "Content-Security-Policy": CSP})
        _renew(request, response)
        return response

    @app.get("/ui", include_in_schema=False)
    async def ui_root():
        return RedirectResponse("/ui/", status_code=308)

    @app.get("/ui/", include_in_schema=False)
    async def ui_index(request: Request, _: Any = Depends(viewer)):
        return html(request, page)

    @app.get("/ui/rollouts/{name}", include_in_schema=False)
    async def ui_rollout(name: str, request: Request, _: Any = Depends(viewer)):
        return html(request, page)

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request, _: Any = Depends(viewer)):
        return html(request, static_text("api.html"))

    @app.get("/ui/static/{file}", include_in_schema=False)
    async def ui_static(file: str, _: Any = Depends(viewer)):
        if file not in STATIC_FILES:
            raise problem(404, "about:blank", f"no such file: /ui/static/{file}")
        media = mimetypes.guess_type(file)[0] or "application/octet-stream"
        return Response((STATIC / file).read_bytes(), media_type=media,
                        headers={"Cache-Control": "max-age=300"})

    @app.get("/ui/login", include_in_schema=False)
    async def login_page(request: Request, next: str = Query("/ui/", max_length=2000),
                         failed: str | None = Query(None, max_length=8)):
        if request.app.state.auth is None:
            return RedirectResponse("/ui/", status_code=303)
        body = static_text("login.html").replace('name="next" value="/ui/"', f'name="next" value="{html_escape(_safe_next(next))}"')
        if failed is not None:
            body = body.replace("<!--FAILED-->", '<p class="failed">That token is not valid here. Try again.</p>')
        return HTMLResponse(body, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                                                "Content-Security-Policy": CSP})

    @app.post("/ui/login", include_in_schema=False)
    async def login(request: Request):
        auth = request.app.state.auth
        if auth is None:
            return RedirectResponse("/ui/", status_code=303)
        body = await request.body()
        if len(body) > _LOGIN_BODY_MAX:
            raise problem(413, "body-too-large", f"a sign-in form is at most {_LOGIN_BODY_MAX} bytes")
        form = parse_qs(body.decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        target = _safe_next((form.get("next") or ["/ui/"])[0])
        issued = request.app.state.sessions.issue(auth, token)
        if issued is None:
            return RedirectResponse("/ui/login?failed=1", status_code=303)
        response = RedirectResponse(target, status_code=303)
        response.headers["Set-Cookie"] = set_cookie_header(issued[0], secure=request.url.scheme == "https")
        return response

    @app.get("/ui/logout", include_in_schema=False)
    async def logout(request: Request):
        response = RedirectResponse("/ui/login" if request.app.state.auth is not None else "/ui/", status_code=303)
        response.headers["Set-Cookie"] = set_cookie_header("", secure=request.url.scheme == "https", lifetime_s=0)
        return response

    @app.get("/v1/rollouts/{name}/series", summary="A rollout's per-version traffic, weights and SLO statistics over time",
             tags=["rollouts"], responses=ok(Series))
    async def get_series(name: str, _: Any = Depends(viewer)):
        return await series.build(name)

    @app.get("/v1/events/stream", summary="Server-sent events: every stored event as it happens (Last-Event-ID resumes)",
             description="`event: event` messages carry an event (`id` = its sequence number). With `rollout`, only "
                         "that rollout's events, plus `event: series` messages (the rollout's series) every few seconds. "
                         "Browsers authenticate with the dashboard's session cookie (GET /ui/login).",
             tags=["rollouts"], response_class=EventStreamResponse,
             responses=text("text/event-stream", "an endless stream of events"))
    async def stream(
        request: Request,
        rollout: str | None = Query(None, max_length=253, description="only this rollout's events (and its series)"),
        after: int = Query(0, ge=0, le=2**63 - 1, description="start after this sequence number"),
        last_event_id: str | None = Header(None, alias="Last-Event-ID", max_length=20),
        _: Any = Depends(viewer),
    ):
        if last_event_id is not None:
            if not last_event_id.isdigit() or int(last_event_id) >= 2**63:
                raise problem(422, "invalid-request", f"Last-Event-ID must be an event sequence number (got {last_event_id!r})")
            after = max(after, int(last_event_id))
        if rollout is not None:
            await engine.get(rollout)  # 404 for an unknown rollout
        extra = (lambda: series.build(rollout)) if rollout is not None else None
        body = event_stream(hub, lambda seq: engine.store.all_events(seq, BATCH), after=after, rollout=rollout,
                            extra=extra, poll_s=lambda: None if engine.running else FOLLOWER_POLL_S)
        response = EventStreamResponse(body, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        _renew(request, response)
        return response


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"


#: Pages load scripts and styles only from this server; no inline script, no frames.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def _safe_next(target: str) -> str:
    """Where to go after signing in: a dashboard path of this server, never another site."""
    return target if target.startswith("/ui/") and not target.startswith("//") and "\\" not in target else "/ui/"


def _renew(request: Request, response: Response) -> None:
    """A page load or a stream (re)connection made with a session cookie renews it."""
    auth = request.app.state.auth
    value = request.cookies.get("weir_session")
    if auth is None or not value:
        return
    fresh = request.app.state.sessions.renew(value, auth)
    if fresh is not None:
        response.headers["Set-Cookie"] = set_cookie_header(fresh, secure=request.url.scheme == "https")
