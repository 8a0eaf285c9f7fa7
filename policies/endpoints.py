"""Model-server endpoints as written in policies: ``host:port`` or ``host:port@weight``.

Why a string form at all: a list of ``"10.0.0.7:8081@3"`` reads at a glance and
diffs cleanly; the typed :class:`Endpoint` is what the xDS layer consumes
(``host``, ``port``, ``weight`` -> an Envoy LbEndpoint with load_balancing_weight).

A policy's host is an IP address or a DNS name (a headless Kubernetes Service
is just a name): Weir resolves names itself and hands Envoy the addresses
over EDS, so it can hold a rollout whose name does not resolve and can weigh
every address. The desired routing Envoy receives holds addresses only
(``parse_endpoint(text, allow_names=False)``).
"""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, ConfigDict

from .errors import describe

__all__ = ["Endpoint", "is_ip_literal", "parse_endpoint", "ENDPOINT_PATTERN", "MAX_ENDPOINT_WEIGHT"]

MAX_ENDPOINT_WEIGHT = 1_000_000
"""Upper bound for ``@weight``: keeps the per-locality sum far inside Envoy's uint32 limit."""

ENDPOINT_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}(@[0-9]+)?$"
"""JSON Schema pattern for the string form (the parser checks hosts and ranges precisely)."""

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_EXPECTED = 'expected "host:port" or "host:port@weight", e.g. "127.0.0.1:8081@2"'


class Endpoint(BaseModel):
    """One model-server address. ``weight`` (default 1) is its share within its version."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    host: str
    port: int
    weight: int = 1

    @property
    def is_name(self) -> bool:
        """A DNS name (resolved by Weir) rather than an IP address."""
        return not is_ip_literal(self.host)

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 hosts bracketed), the identity of the endpoint regardless of weight."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return self.address if self.weight == 1 else f"{self.address}@{self.weight}"


def is_ip_literal(host: str) -> bool:
    """``host`` is an IPv4 or IPv6 address as text (not a name to resolve)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_endpoint(text: object, *, allow_names: bool = True) -> Endpoint:
    """Parse ``host:port[@weight]``; raise ValueError saying exactly which part is wrong.

    ``allow_names=False`` refuses DNS names (Envoy's EDS takes addresses only).
    """
    if isinstance(text, Endpoint):
        return text
    if not isinstance(text, str):
        raise ValueError(f"{_EXPECTED} (got {describe(text)})")
    raw = text.strip()
    address, at, weight_text = raw.partition("@")
    weight = 1
    if at:
        if not re.fullmatch(r"[0-9]{1,9}", weight_text):
            raise ValueError(f"weight after @ must be a whole number from 1 to {MAX_ENDPOINT_WEIGHT} (got {describe(text)})")
        if len(weight_text) > 1 and weight_text.startswith("0"):
            raise ValueError(f"weight after @ has a leading zero; write it as {int(weight_text)} (in {describe(text)})")
        weight = int(weight_text)
        if not 1 <= weight <= MAX_ENDPOINT_WEIGHT:
            raise ValueError(f"weight after @ must be between 1 and {MAX_ENDPOINT_WEIGHT} (got {weight})")
    if address.startswith("["):
        host, close, rest = address[1:].partition("]")
        if not close or not rest.startswith(":"):
            raise ValueError(f"{_EXPECTED}; IPv6 hosts go in brackets like [::1]:8081 (got {describe(text)})")
        port_text = rest[1:]
        if "%" in host:
            raise ValueError(f"{describe(host)} has a zone (%...): a zone names an interface of one machine, "
                             f"which Envoy cannot use for an endpoint; give a global address (in {describe(text)})")
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{describe(host)} is not an IPv6 address (in {describe(text)})") from None
        _check_unicast(ip, text)
    else:
        host, colon, port_text = address.rpartition(":")
        if not colon or not host:
            raise ValueError(f"{_EXPECTED}; the port is missing (got {describe(text)})")
        if ":" in host:
            raise ValueError(f"{_EXPECTED}; put IPv6 hosts in brackets like [::1]:8081 (got {describe(text)})")
        if re.fullmatch(r"[0-9.]+", host):
            try:
                ip = ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(f"{describe(host)} is not an IPv4 address (in {describe(text)})") from None
            _check_unicast(ip, text)
        elif not _HOSTNAME.fullmatch(host):
            raise ValueError(f"{describe(host)} is not a valid host name (in {describe(text)})")
        elif not allow_names:
            # Envoy EDS endpoints are socket addresses: it NACKs names ("malformed IP address").
            raise ValueError(
                f"{describe(host)} is a host name; give the model server's IP address "
                f"(EDS takes IP addresses only; in a policy Weir resolves names itself) (in {describe(text)})"
            )
    if re.fullmatch(r"0[0-9]+", port_text):
        raise ValueError(f"port {describe(port_text)} has a leading zero; write it as {int(port_text)} "
                         f"(in {describe(text)})")
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port must be between 1 and 65535 (got {describe(port_text)} in {describe(text)})")
    return Endpoint(host=host, port=int(port_text), weight=weight)


def _check_unicast(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, text: str) -> None:
    """Refuse addresses that name no single model server (Envoy would connect nowhere, or everywhere)."""
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    if ip.is_unspecified:
        problem = "is the unspecified address (it means \"any\" when binding, no server when connecting)"
    elif isinstance(ip, ipaddress.IPv4Address) and ip == ipaddress.IPv4Address("255.255.255.255"):
        problem = "is the broadcast address"
    elif ip.is_multicast:
        problem = "is a multicast address"
    else:
        return
    raise ValueError(f"{ip} {problem}; give the model server's own IP address (in {describe(text)})")
