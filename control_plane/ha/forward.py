"""The REST API on every replica: reads answer locally, writes go through the leader.

Reads (GET) come from the shared store, so any replica answers them. A
write on a replica that does not lead (apply a policy, an operator action)
is forwarded to the leader's API, as advertised in the leadership key
(``weir serve --advertise-api``), with the caller's headers (its token), and
the leader's answer is returned as is. With no leader (an election in
progress, or etcd without quorum) the write is refused with 503 and a cause,
never queued: nothing is decided without a store.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx

from ..etcd.client import EtcdUnavailable
from .leadership import Leadership

log = logging.getLogger("weir.ha")

__all__ = ["LeaderForwarding"]

_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_FORWARDED = b"x-weir-forwarded-by"
_HOP_BY_HOP = frozenset({b"host", b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"upgrade"})


class LeaderForwarding:
    """ASGI middleware: on a replica that does not lead, writes under /v1/ are forwarded to the leader."""

    def __init__(self, app, leadership: Leadership, replica: str, *, max_body_bytes: int = 1_048_576,
                 timeout_s: float = 30.0):
        self.app = app
        self.leadership = leadership
        self.replica = replica
        self.max_body_bytes = max_body_bytes
        self._http = httpx.AsyncClient(timeout=timeout_s)

    async def __call__(self, scope, receive, send) -> None:
        if (scope["type"] != "http" or scope["method"] in _READS or not scope["path"].startswith("/v1/")
                or self.leadership.is_leader):
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k not in _HOP_BY_HOP]
        if any(k == _FORWARDED for k, _ in headers):
            await _problem(send, 503, "not-leader", "this replica does not lead either; the leadership is moving: "
                                                    "try again in a few seconds")
            return
        try:
            leader = await self.leadership.leader()
        except EtcdUnavailable as err:
            await _problem(send, 503, "store-unavailable", f"no write is possible now: {err}")
            return
        if leader is None or not leader.get("api") or leader.get("replica") == self.replica:
            await _problem(send, 503, "no-leader", "no replica leads now (an election is under way, or etcd has "
                                                   "lost quorum): nothing can be written; try again in a few seconds")
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                await _problem(send, 413, "payload-too-large", f"the body is larger than {self.max_body_bytes} bytes")
                return
        url = leader["api"].rstrip("/") + scope["path"]
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        try:
            resp = await self._http.request(scope["method"], url, content=body,
                                            headers=[*headers, (_FORWARDED, self.replica.encode())])
        except httpx.HTTPError as err:
            await _problem(send, 503, "leader-unreachable",
                           f"the leader {leader.get('replica')} at {leader['api']} did not answer ({err}); "
                           "try again in a few seconds")
            return
        out = [(k.lower().encode(), v.encode()) for k, v in resp.headers.items()
               if k.lower().encode() not in _HOP_BY_HOP]
        out.append((b"content-length", str(len(resp.content)).encode()))
        out.append((b"x-weir-leader", str(leader.get("replica")).encode()))
        await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
        await send({"type": "http.response.body", "body": resp.content})

    async def aclose(self) -> None:
        await self._http.aclose()


async def _problem(send, status: int, kind: str, detail: str, **extra: Any) -> None:
    body = json.dumps({"type": f"https://weir.dev/problems/{kind}", "title": kind.replace("-", " ").capitalize(),
                       "status": status, "detail": detail, **extra}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
