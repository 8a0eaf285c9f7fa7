"""Browser sessions for the dashboard: a short-lived signed cookie obtained with a token, good for reads only.

Why a cookie at all: a browser cannot put an ``Authorization`` header on a
page load or on an ``EventSource`` (the dashboard's live feed), so with tokens
on the dashboard would be unusable. Why it is safe:

* it is obtained only by presenting a valid token (``POST /ui/login``), and it
  carries the token's name, role and a fingerprint of its hash, so removing the
  token from the tokens file (a reload) ends every session made with it;
* it is signed (HMAC-SHA256) with a key that lives only in this process: a
  restart ends every session; it expires after :data:`SESSION_S` unless the
  dashboard renews it (each page load and each event-stream connection does);
* it authorises **safe methods only** (GET, HEAD): no cross-site form or
  script can use it to change a rollout (writes still need the bearer header,
  which a page cannot attach across origins), and it is ``HttpOnly`` and
  ``SameSite=Strict`` (``Secure`` when the API is served over TLS).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Callable, Mapping

from .auth import Principal, TokenAuth, hash_token

__all__ = ["COOKIE", "SESSION_S", "Sessions"]

COOKIE = "weir_session"
#: Lifetime of a session cookie in seconds (renewed while a dashboard is open).
SESSION_S = 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Issues and checks session cookies for one API process (its own random key)."""

    def __init__(self, *, key: bytes | None = None, lifetime_s: float = SESSION_S,
                 clock: Callable[[], float] = time.time) -> None:
        self._key = key or secrets.token_bytes(32)
        self.lifetime_s = lifetime_s
        self.clock = clock

    def issue(self, auth: TokenAuth, token: str) -> tuple[str, Principal] | None:
        """(cookie value, principal) for a valid token; None for one that is not ours."""
        principal = auth.authenticate(token)
        if principal is None:
            return None
        return self._sign(principal.name, principal.role, hash_token(token)[:16]), principal

    def renew(self, value: str, auth: TokenAuth) -> str | None:
        """A fresh cookie for a still-valid one (None when it is not valid any more)."""
        claims = self._claims(value, auth)
        return self._sign(claims["n"], claims["r"], claims["h"]) if claims is not None else None

    def principal(self, value: str | None, auth: TokenAuth) -> Principal | None:
        """Who a cookie belongs to, if it is ours, unexpired and its token is still in the tokens file."""
        claims = self._claims(value, auth) if value else None
        return Principal(claims["n"], claims["r"]) if claims is not None else None

    def from_headers(self, headers: Mapping[bytes, bytes], auth: TokenAuth) -> Principal | None:
        """The principal of the request's session cookie (raw ASGI headers, lowercased names)."""
        return self.principal(cookie_value(headers.get(b"cookie", b"").decode("latin-1")), auth)

    # -- internals ------------------------------------------------------------------------------
    def _sign(self, name: str, role: str, fingerprint: str) -> str:
        body = _b64(json.dumps({"n": name, "r": role, "h": fingerprint, "e": int(self.clock() + self.lifetime_s)},
                               separators=(",", ":")).encode())
        return body + "." + _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())

    def _claims(self, value: str | None, auth: TokenAuth) -> dict | None:
        if not value or value.count(".") != 1:
            return None
        body, signature = value.split(".")
        expected = _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(signature, expected):
            return None
        try:
            claims = json.loads(_unb64(body))
        except ValueError:
            return None
        if not isinstance(claims, dict) or not isinstance(claims.get("e"), int) or claims["e"] < self.clock():
            return None
        still = any(e.name == claims.get("n") and e.role == claims.get("r") and e.sha256[:16] == claims.get("h")
                    for e in auth.entries)
        return claims if still else None


def cookie_value(header: str, name: str = COOKIE) -> str | None:
    """The value of one cookie in a ``Cookie`` header."""
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip().strip('"')
    return None


def set_cookie_header(value: str, *, secure: bool, lifetime_s: float = SESSION_S) -> str:
    """The ``Set-Cookie`` value for a session (``Max-Age=0`` with an empty value ends it)."""
    flags = f"Path=/; Max-Age={int(lifetime_s)}; HttpOnly; SameSite=Strict"
    return f"{COOKIE}={value}; {flags}" + ("; Secure" if secure else "")
