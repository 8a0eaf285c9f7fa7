"""Webhooks from the policy contract: pre-rollout, confirm-promotion, post-rollout, rollback.

A hook is a JSON POST with the policy's timeout, retried with exponential
backoff. Only a 2xx answer counts as yes: a gate that cannot be reached holds
the rollout, it never lets it through. Redirects are not followed (a 3xx is a no).

Security (docs/webhooks.md):

* **Signed.** With a secret (``weir serve --webhook-secret-file FILE``) every
  request carries ``Weir-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
  "<t>.<body>">``; a receiver recomputes it and refuses a timestamp older than
  :data:`REPLAY_WINDOW_S`. :func:`verify_signature` is the reference check.
* **Redacted.** A hook URL may carry credentials (``user:pass@``, ``?token=``);
  :func:`redact_url` is the one function that turns a URL into what a message,
  an event, a log line or an API answer may show.
* **Confined.** :class:`Destinations` resolves the host (off the event loop)
  and refuses link-local and cloud-metadata addresses unless allow-listed
  (``--webhook-allow CIDR|HOST``); with an allow-list, only what it names. The
  request then goes to the address that was checked, so a second DNS answer
  cannot swap it.
* **Quiet.** A receiver's response body is never copied into a message: the
  rollout shows only the status code.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx

from policies.endpoints import is_ip_literal

log = logging.getLogger("weir.webhooks")

__all__ = [
    "Destinations",
    "HookResult",
    "REPLAY_WINDOW_S",
    "SIGNATURE_HEADER",
    "WebhookClient",
    "load_webhook_secret",
    "redact_policy",
    "redact_text",
    "redact_url",
    "sign_body",
    "verify_signature",
]

SIGNATURE_HEADER = "Weir-Signature"
REPLAY_WINDOW_S = 300
"""How old a signature's timestamp may be (either way) before a receiver should refuse it."""
MIN_SECRET_BYTES = 16
_HIDDEN = "***"


# --------------------------------------------------------------------------- redaction


def redact_url(url: str, *, hide_path: bool = False) -> str:
    """The URL with its user info and every query value replaced by ``***`` (scheme, host, port, path kept).

    ``hide_path`` hides the path too: a chat service's incoming-webhook URL carries its credential there.
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = f"{_HIDDEN}@{netloc.rpartition('@')[2]}"
        query = "&".join(f"{k}={_HIDDEN}" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
        if parts.query and not query:
            query = _HIDDEN
        path = "/" + _HIDDEN if hide_path and parts.path not in ("", "/") else parts.path
        return urlunsplit((parts.scheme, netloc, path, query, _HIDDEN if parts.fragment else ""))
    except ValueError:
        return f"{_HIDDEN} (an unreadable URL)"


_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact_text(text: str, *secrets: str) -> str:
    """``text`` with every URL in it redacted and each of ``secrets`` (e.g. a URL's password) hidden."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, _HIDDEN)
    return text


def _secrets_of(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found = [parts.password or "", parts.username or ""]
    found += [v for _, v in parse_qsl(parts.query, keep_blank_values=True)]
    return [s for s in found if s]


def redact_policy(policy: dict[str, Any]) -> dict[str, Any]:
    """A copy of a policy's JSON form whose webhook URLs are redacted (for API answers)."""
    hooks = (policy.get("spec") or {}).get("webhooks") if isinstance(policy.get("spec"), dict) else None
    if not hooks:
        return policy
    spec = dict(policy["spec"])
    spec["webhooks"] = [{**h, "url": redact_url(str(h.get("url", "")))} if isinstance(h, dict) else h for h in hooks]
    return {**policy, "spec": spec}


class _RedactingFilter(logging.Filter):
    """Redacts URLs in records of the HTTP client's own loggers (httpx logs every request URL at INFO)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot format itself is left to the handler
            return True
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_FILTER = _RedactingFilter()
for _name in ("httpx", "httpcore"):
    if _FILTER not in logging.getLogger(_name).filters:
        logging.getLogger(_name).addFilter(_FILTER)


# --------------------------------------------------------------------------- signing


def sign_body(secret: bytes, body: bytes, timestamp: int) -> str:
    """The ``Weir-Signature`` value: ``t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: bytes, body: bytes, header: str, *, now: float | None = None,
                     window_s: float = REPLAY_WINDOW_S) -> bool:
    """What a receiver does: True only for a valid ``v1`` signature whose timestamp is within the window."""
    fields: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > window_s:
        return False
    expected = sign_body(secret, body, timestamp).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", []))


def load_webhook_secret(path: str | Path) -> bytes:
    """Read the signing secret (surrounding whitespace removed); ValueError says what is wrong with the file."""
    path = Path(path)
    try:
        data = path.read_bytes().strip()
    except OSError as err:
        raise ValueError(f"--webhook-secret-file {path}: cannot read: {err.strerror or err}") from None
    if len(data) < MIN_SECRET_BYTES:
        raise ValueError(f"--webhook-secret-file {path}: the secret must be at least {MIN_SECRET_BYTES} bytes "
                         "(make one with: python3 -c 'import secrets; print(secrets.token_hex(32))')")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("--webhook-secret-file %s can be read by other users (mode %o); chmod 600 it",
                    path, stat.S_IMODE(mode))
    return data


# --------------------------------------------------------------------------- destinations

_METADATA = [ipaddress.ip_network(n) for n in (
    "169.254.0.0/16",    # IPv4 link-local, incl. 169.254.169.254 (AWS, GCP, Azure, OpenStack metadata)
    "fe80::/10",         # IPv6 link-local
    "fd00:ec2::254/128",  # AWS IMDS over IPv6
    "100.100.100.200/32",  # Alibaba Cloud metadata
)]


def _special(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address is refused unless a CIDR allows it; None for an ordinary one."""
    if any(ip in net for net in _METADATA if net.version == ip.version):
        return "a link-local or cloud-metadata address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast or (ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255")):
        return "a multicast or broadcast address"
    return None


@dataclass(frozen=True)
class _Target:
    address: str | None  # the checked IP to connect to
    refusal: str | None  # why not, when refused


class Destinations:
    """Which addresses webhooks may reach.

    Entries are CIDRs (``10.0.0.0/8``, ``169.254.169.254/32``) or host names
    (``hooks.example.com``, ``*.example.com``). Without entries every address is
    allowed except link-local, cloud-metadata, unspecified and multicast ones;
    with entries only a named host or an address inside a listed CIDR is, and
    the special addresses only inside a listed CIDR (a host name does not vouch
    for what DNS answers).
    """

    def __init__(self, allow: Iterable[str] = (),
                 resolve: Callable[[str, int], Any] | None = None) -> None:
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.hosts: list[str] = []
        for entry in allow:
            entry = entry.strip().lower()
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            name = entry.removeprefix("*")
            if not name or any(c.isspace() or c in "/:@" for c in name):
                raise ValueError(f"--webhook-allow {entry!r}: expected a CIDR such as 10.0.0.0/8 or a host name such "
                                 "as hooks.example.com or *.example.com")
            self.hosts.append(entry)
        self._resolve = resolve

    @property
    def restricted(self) -> bool:
        return bool(self.networks or self.hosts)

    def _host_listed(self, host: str) -> bool:
        for entry in self.hosts:
            if entry.startswith("*.") and host.endswith(entry[1:]):
                return True
            if host == entry.rstrip("."):
                return True
        return False

    async def _addresses(self, host: str, port: int) -> list[str]:
        if self._resolve is not None:
            return list(await self._resolve(host, port))
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)  # off the loop
        return list(dict.fromkeys(info[4][0] for info in infos))

    async def target(self, url: str) -> _Target:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = [host] if is_ip_literal(host) else await self._addresses(host, port)
        except (OSError, UnicodeError) as err:
            return _Target(None, f"cannot resolve {host}: {getattr(err, 'strerror', None) or err}")
        if not addresses:
            return _Target(None, f"cannot resolve {host}: no address")
        refusals = []
        for text in addresses:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
            plain = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
            in_cidr = any(plain in net for net in self.networks if net.version == plain.version)
            special = _special(plain)
            if special is not None and not in_cidr:
                refusals.append(f"{plain} is {special}")
                continue
            if self.restricted and not (in_cidr or self._host_listed(host)):
                refusals.append(f"{plain} is not in the webhook allow-list")
                continue
            return _Target(str(ip), None)
        hint = "allow it with weir serve --webhook-allow CIDR" if not self.restricted else \
            "add it with weir serve --webhook-allow CIDR|HOST"
        return _Target(None, f"destination refused: {'; '.join(refusals)} ({hint})")


# --------------------------------------------------------------------------- the client


@dataclass(frozen=True)
class HookResult:
    ok: bool
    detail: str  # the status code, or the error; never the receiver's body, never a secret
    attempts: int


class WebhookClient:
    """Calls hooks: signed when it has a secret, only to allowed destinations, never following redirects."""

    def __init__(self, retries: int = 3, backoff_s: float = 0.5, client: httpx.AsyncClient | None = None, *,
                 secret: bytes | None = None, destinations: Destinations | None = None,
                 clock: Callable[[], float] = time.time):
        self.retries = retries
        self.backoff_s = backoff_s
        self._client = client or httpx.AsyncClient(follow_redirects=False, trust_env=False)
        self.secret = secret
        self.destinations = destinations if destinations is not None else Destinations()
        self.clock = clock
        self._warned_unsigned = False

    async def call(self, url: str, payload: dict[str, Any], timeout_s: float, *, hide_path: bool = False) -> HookResult:
        """POST `payload`; True only on a 2xx within `retries` attempts (``hide_path``: see :func:`redact_url`)."""
        shown, secrets = redact_url(url, hide_path=hide_path), _secrets_of(url)
        if hide_path:
            secrets += [urlsplit(url).path.strip("/")] if urlsplit(url).path.strip("/") else []
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        if self.secret is None and not self._warned_unsigned:
            self._warned_unsigned = True
            log.warning("webhooks are sent unsigned (receivers cannot tell Weir from anyone else); "
                        "start weir serve with --webhook-secret-file FILE")
        detail = ""
        for attempt in range(1, self.retries + 1):
            target = await self.destinations.target(url)
            if target.refusal is not None:
                log.warning("webhook %s refused: %s", shown, target.refusal)
                return HookResult(False, target.refusal, attempt)  # a refusal of ours: asking again changes nothing
            try:
                resp = await self._client.post(**self._request(url, target.address, body), timeout=timeout_s)
                detail = f"HTTP {resp.status_code}"
                await resp.aclose()
                if 200 <= resp.status_code < 300:
                    return HookResult(True, detail, attempt)
                if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
                    return HookResult(False, detail, attempt)  # a clear "no": do not insist
                if 300 <= resp.status_code < 400:
                    detail += " (a redirect; webhooks do not follow redirects)"
                    return HookResult(False, detail, attempt)
            except httpx.TimeoutException:
                detail = f"no answer within {timeout_s:g}s"
            except httpx.HTTPError as err:
                detail = redact_text(f"{type(err).__name__}: {err}", *secrets)
            log.info("webhook %s attempt %d failed: %s", shown, attempt, detail)
            if attempt < self.retries:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
        return HookResult(False, detail, self.retries)

    def _request(self, url: str, address: str | None, body: bytes) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "User-Agent": "weir-webhooks/1"}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign_body(self.secret, body, int(self.clock()))
        request_url = httpx.URL(url)
        extensions: dict[str, Any] = {}
        if address is not None and not is_ip_literal(request_url.host):
            # Connect to the address that was checked; the Host header and TLS name stay the URL's.
            headers["Host"] = request_url.netloc.decode("ascii").rpartition("@")[2]
            if request_url.scheme == "https":
                extensions["sni_hostname"] = request_url.host
            request_url = request_url.copy_with(host=address)
        return {"url": request_url, "content": body, "headers": headers, "extensions": extensions}

    async def close(self) -> None:
        await self._client.aclose()

