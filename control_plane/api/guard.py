"""What may reach the API's routes at all: Host and Origin checks without tokens, the token gate with them.

Why: without tokens (``weir serve`` allows that only on loopback) the API
trusts whoever can connect, and a web page open in the operator's browser can
connect. A cross-origin "simple" request (a form post, a ``text/plain``
fetch) is sent without a CORS preflight, so such a page could start or abort
rollouts; with DNS rebinding (``evil.example`` re-resolving to 127.0.0.1) it
could even read answers, since the browser then thinks the API is the page's
own origin. So, without tokens:

* the ``Host`` header must be a loopback name (``localhost``, 127.0.0.0/8,
  ``::1``) or one configured with ``weir serve --allowed-host NAME``: a
  rebinding page sends its own name and is refused (403);
* a write (any method but GET, HEAD, OPTIONS) that carries an ``Origin`` must
  come from the API's own origin. Browsers send ``Origin`` on every
  cross-origin write; ``weir``, curl and scripts send none, so they are not
  affected. ``Origin: null`` (sandboxed frames, files) is refused, and so is
  ``Sec-Fetch-Site: cross-site``/``same-site``.

With tokens a page cannot attach the ``Authorization`` header across origins
without CORS consent, which the API never gives, so the token is the guard
(or, for reads only, the dashboard's session cookie obtained with a token:
:mod:`control_plane.api.session`):
every path except the health probes (and ``/metrics`` when it is made public)
needs a valid token *before routing*, including ``/docs``, ``/redoc`` and
``/openapi.json`` and paths that do not exist (no endpoint map for anonymous
clients). Roles (viewer, operator) are still checked by each route.

A pure ASGI middleware: it reads only the request line and headers, never the body.
"""

from __future__ import annotations

import ipaddress
import json
from http import HTTPStatus
from typing import Any, Callable, Iterable
from urllib.parse import quote, urlsplit

from .auth import TokenAuth

__all__ = ["ApiGuard", "LOOPBACK_NAMES", "OPEN_PATHS", "host_allowed"]

#: Host names that always mean this machine (IP literals of 127.0.0.0/8 and ::1 too).
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
#: Paths answered without a token: the health probes and the dashboard's sign-in page.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/ui/login"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_PROBLEM_JSON = b"application/problem+json"


def _hostname(authority: str) -> str | None:
    """The host of ``host[:port]`` or ``[v6]:port``, lowercased; None when it is not well formed."""
    authority = authority.strip().lower()
    if not authority:
        return None
    if authority.startswith("["):
        host, close, rest = authority[1:].partition("]")
        if not close or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return host
    host, colon, port = authority.rpartition(":")
    if not colon:
        return authority
    if not port.isdigit() or not host or ":" in host:
        return None
    return host


def host_allowed(host: str, allowed: Iterable[str] = ()) -> bool:
    """True for a loopback name or literal, or one of ``allowed`` (compared without a trailing dot)."""
    host = host.rstrip(".")
    if host in LOOPBACK_NAMES or host in {a.lower().rstrip(".") for a in allowed}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiGuard:
    """ASGI middleware in front of the API (see the module docstring).

    ``auth`` is called per request, so replacing the app's tokens at run time
    (``app.state.auth``) switches the guard between its two modes too.
    """

    def __init__(
        self,
        app: Any,
        *,
        auth: Callable[[], TokenAuth | None],
        allowed_hosts: Iterable[str] = (),
        open_paths: Iterable[str] = OPEN_PATHS,
        sessions: Any = None,
    ) -> None:
        self.app = app
        self.sessions = sessions  # control_plane.api.session.Sessions: a signed cookie allows reads
        self.auth = auth
        self.allowed_hosts = tuple(h.lower().rstrip(".") for h in allowed_hosts)
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for key, value in scope.get("headers", ()):
            headers.setdefault(key.lower(), value)
        auth = self.auth()
        refusal = self._loopback_refusal(scope, headers) if auth is None else self._token_refusal(scope, headers, auth)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, kind, detail, extra_headers = refusal
        if status == 401 and _wants_page(scope, headers):  # a browser opening the dashboard: the sign-in page
            await _redirect(send, "/ui/login?next=" + quote(scope.get("path", "/ui/"), safe="/"))
            return
        await _reject(scope, send, status, kind, detail, extra_headers)

    # -- loopback mode ---------------------------------------------------------------------------
    def _loopback_refusal(self, scope, headers: dict[bytes, bytes]):
        raw_host = headers.get(b"host", b"").decode("latin-1")
        host = _hostname(raw_host)
        names = ", ".join(["localhost", "127.0.0.1", "::1", *self.allowed_hosts])
        if host is None or not host_allowed(host, self.allowed_hosts):
            return (403, "host-not-allowed",
                    f"the Host header {raw_host!r} is not a name of this API ({names}); without tokens the API "
                    "answers only its loopback names (add one with weir serve --allowed-host NAME)", None)
        if scope.get("method", "GET").upper() in _SAFE_METHODS:
            return None
        site = headers.get(b"sec-fetch-site", b"").decode("latin-1").lower()
        origin = headers.get(b"origin")
        if origin is None and site not in ("cross-site", "same-site"):
            return None  # not a browser's cross-origin request: weir, curl, scripts
        text = (origin or b"").decode("latin-1")
        parts = urlsplit(text) if text and text != "null" else None
        same = (parts is not None and parts.scheme in ("http", "https") and parts.netloc.lower() == raw_host.lower()
                and site not in ("cross-site", "same-site"))
        if not same:
            return (403, "cross-origin-write",
                    f"a write from another origin ({text or 'Sec-Fetch-Site: ' + site}) is refused: without tokens "
                    "only this API's own pages and non-browser clients may change rollouts", None)
        return None

    # -- token mode ------------------------------------------------------------------------------
    def _token_refusal(self, scope, headers: dict[bytes, bytes], auth: TokenAuth):
        if scope.get("path", "") in self.open_paths:
            return None
        value = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = value.partition(" ")
        if not value and self.sessions is not None and scope.get("method", "GET").upper() in ("GET", "HEAD") \
                and self.sessions.from_headers(headers, auth) is not None:
            return None
        if not value:
            return (401, "unauthorized", "this endpoint needs a bearer token (Authorization: Bearer TOKEN)",
                    {"WWW-Authenticate": 'Bearer realm="weir"'})
        if scheme.lower() != "bearer" or auth.authenticate(token.strip()) is None:
            return (401, "unauthorized", "the bearer token is not valid",
                    {"WWW-Authenticate": 'Bearer realm="weir", error="invalid_token"'})
        return None


def _wants_page(scope, headers: dict[bytes, bytes]) -> bool:
    """A browser's page load of the dashboard or /docs (not a script's fetch of data)."""
    path = scope.get("path", "")
    return (scope.get("method") == "GET" and (path == "/docs" or path == "/ui" or path.startswith("/ui/"))
            and not path.startswith("/ui/static/") and b"text/html" in headers.get(b"accept", b""))


async def _redirect(send, location: str) -> None:
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


async def _reject(scope, send, status: int, kind: str, detail: str, extra: dict[str, str] | None) -> None:
    body = json.dumps({
        "type": f"https://weir.dev/problems/{kind}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": scope.get("path"),
    }).encode()
    headers = [(b"content-type", _PROBLEM_JSON), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})
