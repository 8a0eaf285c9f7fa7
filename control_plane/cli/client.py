"""A small synchronous client of the REST API (what ``weir apply/get/...`` use).

Sync httpx is right here: the CLI makes one or two calls and exits. Every
non-2xx answer becomes :class:`ApiError` carrying the problem+json document, so
callers print ``title``, ``detail`` and every ``errors[]`` entry; a server that
cannot be reached becomes :class:`ServerUnreachable`, naming the URL.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

DEFAULT_SERVER = "http://127.0.0.1:8080"


def default_server() -> str:
    return os.environ.get("WEIR_SERVER") or DEFAULT_SERVER


def default_token() -> str | None:
    return os.environ.get("WEIR_TOKEN") or None


class ApiError(Exception):
    """The API answered with an error; ``problem`` is its problem+json body (or a stand-in)."""

    def __init__(self, status: int, problem: dict[str, Any]):
        self.status = status
        self.problem = problem
        super().__init__(self.summary())

    @property
    def errors(self) -> list[dict[str, Any]]:
        errors = self.problem.get("errors")
        return errors if isinstance(errors, list) else []

    def summary(self) -> str:
        title = self.problem.get("title") or f"HTTP {self.status}"
        detail = self.problem.get("detail")
        return f"{title} (HTTP {self.status}): {detail}" if detail else f"{title} (HTTP {self.status})"

    def lines(self) -> list[str]:
        """The error as people read it: a summary, then one line per validation error."""
        out = [self.summary()]
        for err in self.errors:
            if not isinstance(err, dict):
                out.append(f"  {err}")
                continue
            path, message, line = err.get("path"), err.get("message", ""), err.get("line")
            text = f"{path}: {message}" if path else str(message)
            out.append(f"  {text}, line {line}" if line is not None else f"  {text}")
        return out


class ServerUnreachable(Exception):
    """No answer from the server (refused, DNS, timeout)."""

    def __init__(self, server: str, reason: str):
        self.server, self.reason = server, reason
        super().__init__(f"cannot reach the Weir API at {server}: {reason}")


class WeirClient:
    """One method per API call; returns the decoded JSON body."""

    def __init__(self, server: str | None = None, token: str | None = None, *, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None):
        from .polish import normalize_server

        self.server = normalize_server(server or default_server())  # ValueError names --server and the fix
        headers = {"Accept": "application/json, application/problem+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "WeirClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ServerUnreachable(self.server, _reason(exc)) from None
        except httpx.TimeoutException:
            raise ServerUnreachable(self.server, "timed out") from None
        except httpx.TransportError as exc:
            raise ServerUnreachable(self.server, _reason(exc)) from None
        if response.is_success:
            if response.headers.get("content-type", "").startswith("application/json"):
                return response.json()
            return response.text
        try:
            problem = response.json()
            if not isinstance(problem, dict):
                raise ValueError
        except ValueError:
            text = response.text.strip()
            problem = {"title": response.reason_phrase or f"HTTP {response.status_code}", "detail": text[:500]}
        raise ApiError(response.status_code, problem)

    # -- rollouts -------------------------------------------------------------------------------
    def apply(self, text: str, *, json_body: bool = False) -> dict[str, Any]:
        """Apply a policy (YAML, or JSON when json_body): ``{"applied": {action, message, changes}, "rollout", "release"}``."""
        content_type = "application/json" if json_body else "application/yaml"
        return self._request("POST", "/v1/rollouts", content=text.encode("utf-8"),
                             headers={"Content-Type": content_type})

    def list(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/rollouts")["items"]

    def set_endpoints(self, service: str, version: str, endpoints: list[str]) -> dict[str, Any]:
        return self._request("PUT", f"/v1/services/{_segment(service)}/versions/{_segment(version)}/endpoints",
                             json={"endpoints": endpoints})

    def releases(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/releases")["items"]

    def get(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/rollouts/{_segment(name)}")

    def act(self, name: str, action: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/rollouts/{_segment(name)}/{_segment(action)}")

    def set_weight(self, name: str, weight: int) -> dict[str, Any]:
        return self._request("PUT", f"/v1/rollouts/{_segment(name)}/weight", json={"weight": weight})

    def events(self, name: str, after: int = 0) -> list[dict[str, Any]]:
        params = {"after": after} if after else None
        return self._request("GET", f"/v1/rollouts/{_segment(name)}/events", params=params)["items"]

    def get_path(self, path: str) -> Any:
        """``GET`` any API path (with its query), e.g. what ``weir report`` collects."""
        return self._request("GET", path)

    # -- fleet ----------------------------------------------------------------------------------
    def proxies(self) -> dict[str, Any]:
        return self._request("GET", "/v1/proxies")

    def metrics(self) -> str:
        return self._request("GET", "/metrics")


def _segment(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "refused" in text.lower():
        return "connection refused"
    return text


__all__ = ["ApiError", "DEFAULT_SERVER", "ServerUnreachable", "WeirClient", "default_server", "default_token"]
