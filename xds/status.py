"""Per-proxy xDS status: who is connected, what each has ACKed, what it rejected.

The rollout engine asks one question of the xDS layer: "has every connected
proxy of this group applied version V?" (:meth:`StatusRegistry.converged`).
Only then does traffic count as evidence for the new step. The registry keeps
a count of proxies per (group, converged version) so that the answer costs
O(1) however many proxies ACK, instead of rescanning the fleet on every ACK.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Mapping

from .snapshot import PUSH_ORDER, SHORT_NAMES


@dataclass(frozen=True, slots=True)
class NackRecord:
    """One rejected response. The message is Envoy's text, stored verbatim and never parsed."""

    type_url: str
    nonce: str
    code: int
    message: str
    version_info: str  # the version the proxy still runs
    at: float

    def to_json(self) -> dict:
        return {
            "type": SHORT_NAMES.get(self.type_url, self.type_url),
            "nonce": self.nonce,
            "code": self.code,
            "message": self.message,
            "last_accepted_version": self.version_info,
            "at": self.at,
        }


@dataclass(eq=False)
class ProxyStatus:
    """What the control plane knows about one proxy's stream."""

    node_id: str
    node_cluster: str
    protocol: str  # "sotw" | "delta"
    peer: str
    connected_at: float = field(default_factory=time.time)
    disconnected_at: float | None = None
    group: str = ""  # the snapshot group serving this proxy
    converged_version: str | None = None
    nacks: deque = field(default_factory=lambda: deque(maxlen=8))
    #: Filled by the stream: returns {type_url: {resource name: version}} of what was ACKed.
    acked_versions: Callable[[], Mapping[str, Mapping[str, str]]] = lambda: {}
    #: Filled by the stream: the ACKed version of one resource (type_url, name), or None. O(1),
    #: for per-service convergence checks that must not copy the proxy's whole state.
    acked_version: Callable[[str, str], str | None] = lambda type_url, name: None

    def to_json(self) -> dict:
        acked = self.acked_versions()
        return {
            "node_id": self.node_id,
            "node_cluster": self.node_cluster,
            "group": self.group,
            "protocol": self.protocol,
            "peer": self.peer,
            "connected_at": self.connected_at,
            "disconnected_at": self.disconnected_at,
            "converged_version": self.converged_version,
            "acked": {SHORT_NAMES[t]: dict(acked.get(t, {})) for t in PUSH_ORDER},
            "nacks": [n.to_json() for n in self.nacks],
        }


class StatusRegistry:
    """Connected proxies, their convergence, and waiters for convergence."""

    def __init__(self, history: int = 1000):
        self._connected: set[ProxyStatus] = set()
        self._per_group: dict[str, set[ProxyStatus]] = {}
        self._converged: dict[str, Counter] = {}
        self._waiters: dict[str, list[tuple[str, asyncio.Future]]] = {}
        self.disconnected: deque[ProxyStatus] = deque(maxlen=history)
        self.nack_total: Counter = Counter()  # by type URL, for /metrics
        #: Called with a group whenever its proxies' convergence may have moved (an ACK that completed a
        #: proxy, a disconnect, a move): lets a router tell waiters at once instead of at their next poll.
        self.listeners: list[Callable[[str], None]] = []

    # -- stream lifecycle ------------------------------------------------------
    def connect(self, proxy: ProxyStatus, group: str) -> None:
        self._connected.add(proxy)
        proxy.group = group
        self._per_group.setdefault(group, set()).add(proxy)

    def disconnect(self, proxy: ProxyStatus) -> None:
        if proxy not in self._connected:
            return
        self._connected.discard(proxy)
        self._leave(proxy)
        proxy.disconnected_at = time.time()
        self.disconnected.append(proxy)
        self._wake(proxy.group)

    def move(self, proxy: ProxyStatus, group: str) -> None:
        """The proxy is now served by another group's snapshot."""
        if proxy.group == group or proxy not in self._connected:
            return
        old = proxy.group
        self._leave(proxy)
        proxy.group = group
        self._per_group.setdefault(group, set()).add(proxy)
        self._wake(old)

    def _leave(self, proxy: ProxyStatus) -> None:
        members = self._per_group.get(proxy.group)
        if members is not None:
            members.discard(proxy)
        self._set(proxy, None)

    # -- convergence -----------------------------------------------------------
    def set_converged(self, proxy: ProxyStatus, version: str | None) -> None:
        if proxy.converged_version == version or proxy not in self._connected:
            return
        self._set(proxy, version)
        if version is not None:
            self._wake(proxy.group)

    def _set(self, proxy: ProxyStatus, version: str | None) -> None:
        counts = self._converged.setdefault(proxy.group, Counter())
        if proxy.converged_version is not None:
            counts[proxy.converged_version] -= 1
            if counts[proxy.converged_version] <= 0:
                del counts[proxy.converged_version]
        proxy.converged_version = version
        if version is not None:
            counts[version] += 1

    def record_nack(self, proxy: ProxyStatus, nack: NackRecord) -> None:
        proxy.nacks.append(nack)
        self.nack_total[nack.type_url] += 1

    def is_converged(self, group: str, version: str) -> bool:
        members = self._per_group.get(group, ())
        return self._converged.get(group, Counter()).get(version, 0) == len(members)

    def counts(self, group: str, version: str) -> tuple[int, int]:
        """(proxies converged to version, proxies connected) for a group."""
        return self._converged.get(group, Counter()).get(version, 0), len(self._per_group.get(group, ()))

    async def converged(self, group: str, version: str, timeout: float | None = None) -> bool:
        """Wait until every proxy connected to `group` has ACKed `version`.

        True at once when no proxy is connected (there is nobody to wait for);
        False when the timeout passes first. Proxies that disconnect stop
        counting; a proxy that connects meanwhile must converge too.
        """
        if self.is_converged(group, version):
            return True
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            fut = loop.create_future()
            self._waiters.setdefault(group, []).append((version, fut))
            try:
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                await asyncio.wait_for(fut, remaining)
            except asyncio.TimeoutError:
                return self.is_converged(group, version)
            finally:
                waiters = self._waiters.get(group, [])
                if (version, fut) in waiters:
                    waiters.remove((version, fut))
            if self.is_converged(group, version):
                return True

    def _wake(self, group: str) -> None:
        for listener in self.listeners:
            listener(group)
        waiters = self._waiters.get(group)
        if not waiters:
            return
        for version, fut in list(waiters):
            if not fut.done() and self.is_converged(group, version):
                fut.set_result(True)

    # -- reading ---------------------------------------------------------------
    def proxies(self, group: str | None = None) -> list[ProxyStatus]:
        items = self._connected if group is None else self._per_group.get(group, set())
        return sorted(items, key=lambda p: (p.group, p.node_id, p.connected_at))

    def __len__(self) -> int:
        return len(self._connected)
