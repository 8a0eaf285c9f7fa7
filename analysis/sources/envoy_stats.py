"""Envoy admin stats: counters and latency histograms polled from each proxy.

For when access logs are off. Every ``interval_s`` the source GETs each
admin's ``/stats?format=json&histogram_buckets=detailed`` (filtered to the
cluster request counters, ``upstream_rq_time`` and ``server.uptime``) with
httpx on the event loop, and keeps the polls of the last ``history_s``.

Attribution: the stats of cluster ``<service>-<version>`` (``cluster_of``).
Live and shadow are told apart by Envoy's own split of every upstream request
into ``external.*`` and ``internal.*`` stats: mirrored requests are sent by
Envoy itself and are *internal*, clients' requests are *external* (observed
with Envoy 1.40: 100% mirroring to v2 gave ``cluster.v2.internal.upstream_rq_2xx``
only). That holds while clients are not trusted as internal (Weir's listeners
set no ``internal_address_config``).

Counts: ``requests`` = sum of the ``upstream_rq_<N>xx`` classes (responses,
including the 503/504 Envoy answers itself for upstream resets, timeouts and
connection failures), ``errors`` = ``5xx``. A window's counts are the
difference between the latest poll and the *baseline*: the first poll of each
proxy that started at or after ``since`` - so ``since`` is exact only to the
poll interval (requests finishing between ``since`` and that poll are missed,
never earlier ones counted). The baseline is pinned at the first query, so it
outlives ``history_s``.

Latency: the detailed histogram buckets of ``upstream_rq_time`` (see
``_histogram`` for the resolution: whole ms, two significant digits), which
count failed responses too and are updated on Envoy's stats flush
(``stats_flush_interval``, 5 s by default) - so latency samples lag the
counters by up to one flush; the samples handed out never exceed the
successful requests counted.

Coverage is incomplete when a proxy restarted in the window (``server.uptime``
went down, or a counter did: the lost part is unknown), when a proxy's first
successful poll came after ``since`` without a zero uptime baseline, or when a
proxy has not answered since some time in the window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import httpx

from analysis.samples import ArmSamples

from . import Coverage, SourceError, cluster_of
from ._histogram import Bucket, GrowingSamples

log = logging.getLogger("weir.analysis.envoy_stats")

__all__ = ["EnvoyStatsSource", "ArmCounters", "parse_stats_json", "STATS_PATH"]

LIVE_PREFIX, SHADOW_PREFIX = "external", "internal"
#: The admin query: cluster request counters by class, the latency histogram, and uptime.
STATS_PATH = (
    "/stats?format=json&histogram_buckets=detailed"
    r"&filter=^(cluster\..+\.upstream_rq_([1-5]xx|time)|server\.uptime)$"
)
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


@dataclass
class ArmCounters:
    """Cumulative counters of one (cluster, traffic) as of one poll."""

    requests: int = 0
    errors: int = 0
    buckets: dict[Bucket, float] = field(default_factory=dict)  # detailed bins, cumulative
    reps: dict[Bucket, float] = field(default_factory=dict)


@dataclass
class _Poll:
    started: float
    uptime: float | None
    arms: dict[tuple[str, str], ArmCounters]  # (cluster, "live"|"shadow"|"all")


def parse_stats_json(doc: dict[str, Any]) -> tuple[float | None, dict[tuple[str, str], ArmCounters]]:
    """(server uptime, {(cluster, traffic): counters}) from the admin's JSON stats."""
    arms: dict[tuple[str, str], ArmCounters] = {}
    uptime = None

    def split(name: str, suffix: str) -> tuple[str, str] | None:
        if not name.startswith("cluster.") or not name.endswith(suffix):
            return None
        middle = name[len("cluster.") : -len(suffix)]
        for prefix, traffic in ((LIVE_PREFIX, "live"), (SHADOW_PREFIX, "shadow")):
            if middle.endswith("." + prefix):
                return middle[: -len(prefix) - 1], traffic
        return middle, "all"

    for item in doc.get("stats", []):
        if "name" in item:
            name, value = item["name"], item.get("value", 0)
            if name == "server.uptime":
                uptime = float(value)
                continue
            for cls in _CLASSES:
                key = split(name, f".upstream_rq_{cls}")
                if key is not None:
                    arm = arms.setdefault(key, ArmCounters())
                    arm.requests += int(value)
                    if cls == "5xx":
                        arm.errors += int(value)
                    break
        elif "histograms" in item:
            hist = item["histograms"]
            for detail in hist.get("details", []) if isinstance(hist, dict) else []:
                key = split(detail.get("name", ""), ".upstream_rq_time")
                if key is None:
                    continue
                arm = arms.setdefault(key, ArmCounters())
                for b in detail.get("totals") or []:
                    lo, width, count = float(b["lower_bound"]), float(b["width"]), float(b["count"])
                    # upstream_rq_time is whole (truncated) ms: a zero-width bin at v is [v, v + 1).
                    hi = lo + (width if width > 0 else 1.0)
                    arm.buckets[(lo, hi)] = arm.buckets.get((lo, hi), 0.0) + count
                    arm.reps[(lo, hi)] = (lo + hi) / 2.0
    return uptime, arms


class EnvoyStatsSource:
    """Polls Envoy admins; answers ``arm_samples`` from counter and histogram differences.

    ``admins``: base URLs (``http://10.0.0.5:9901``) or a callable returning
    them (e.g. from the xDS registry), re-read at every poll.
    """

    name = "envoy-stats"

    def __init__(
        self,
        admins: Iterable[str] | Callable[[], Iterable[str]],
        *,
        interval_s: float = 1.0,
        history_s: float = 600.0,
        timeout_s: float = 2.0,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self._admins = admins if callable(admins) else (lambda a=tuple(admins): a)
        self.interval_s = float(interval_s)
        self.history_s = float(history_s)
        self.timeout_s = float(timeout_s)
        self.clock = clock
        self._client = client
        self._own_client = client is None
        self._polls: dict[str, deque[_Poll]] = {}
        self._last_ok: dict[str, float] = {}
        self._failing_since: dict[str, float] = {}
        self._restarts: dict[str, list[float]] = {}
        self._baselines: OrderedDict[float, dict[str, _Poll]] = OrderedDict()
        self._growing = GrowingSamples()
        self._task: asyncio.Task | None = None
        self.started_at = clock()

    # ----------------------------------------------------------------- polling

    async def start(self) -> None:
        if self._task is None:
            await self.poll_once()
            self._task = asyncio.create_task(self._run(), name="weir-envoy-stats")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.interval_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            try:
                await self.poll_once()
            except Exception:  # noqa: BLE001 - keep polling
                log.exception("envoy stats poll failed")

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
        return self._client

    async def poll_once(self) -> None:
        """Poll every admin once, concurrently."""
        admins = [a.rstrip("/") for a in self._admins()]
        await asyncio.gather(*(self._poll(a) for a in admins))

    async def _poll(self, admin: str) -> None:
        started = self.clock()
        try:
            resp = await self._http().get(admin + STATS_PATH)
            resp.raise_for_status()
            uptime, arms = parse_stats_json(resp.json())
        except (httpx.HTTPError, ValueError) as exc:
            self._failing_since.setdefault(admin, started)
            log.debug("envoy admin %s: %s", admin, exc)
            return
        self._failing_since.pop(admin, None)
        polls = self._polls.setdefault(admin, deque())
        if polls and _restarted(polls[-1], uptime, arms):
            self._restarts.setdefault(admin, []).append(started)
        polls.append(_Poll(started, uptime, arms))
        self._last_ok[admin] = started
        horizon = started - self.history_s
        while len(polls) > 2 and polls[0].started < horizon:
            polls.popleft()

    # ----------------------------------------------------------------- queries

    def _baseline(self, since: float) -> dict[str, _Poll]:
        """Per admin, the first poll that started at or after ``since`` (pinned once found).

        A proxy that started inside the window (by its ``server.uptime``, whole
        seconds) has an all-zero baseline: everything it counted is in the window.
        """
        pinned = self._baselines.get(since, {})
        for admin, polls in self._polls.items():
            if admin in pinned:
                continue
            first = next((p for p in polls if p.started >= since), None)
            if first is not None:
                if first.uptime is not None and first.started - first.uptime - 1.0 >= since:
                    first = _Poll(first.started - first.uptime - 1.0, 0.0, {})
                pinned[admin] = first
        if pinned:
            self._baselines[since] = pinned
            self._baselines.move_to_end(since)
            while len(self._baselines) > 64:
                self._baselines.popitem(last=False)
        return pinned

    def counters(self, cluster: str, traffic: str, since: float) -> tuple[int, int, dict[Bucket, float], dict[Bucket, float]]:
        """Summed over proxies: requests, errors, histogram buckets counted since the baseline."""
        base = self._baseline(since)
        n = err = 0
        buckets: dict[Bucket, float] = {}
        reps: dict[Bucket, float] = {}
        empty = ArmCounters()
        for admin, b in base.items():
            for start, end in self._segments(admin, b):
                now_arm = end.arms.get((cluster, traffic))
                if now_arm is None:
                    continue
                base_arm = start.arms.get((cluster, traffic), empty) if start is not None else empty
                if now_arm.requests < base_arm.requests:  # this series was reset (cluster re-created)
                    base_arm = empty
                n += now_arm.requests - base_arm.requests
                err += max(0, now_arm.errors - base_arm.errors)
                for k, c in now_arm.buckets.items():
                    d = c - base_arm.buckets.get(k, 0.0)
                    if d > 0:
                        buckets[k] = buckets.get(k, 0.0) + d
                reps.update(now_arm.reps)
        return n, min(err, n), buckets, reps

    def _segments(self, admin: str, base: _Poll) -> list[tuple[_Poll | None, _Poll]]:
        """(from, to) poll pairs between the baseline and the latest poll, split at restarts
        (after a restart the proxy counts from zero: ``from`` is None)."""
        polls = self._polls.get(admin)
        if not polls:
            return []
        segments: list[tuple[_Poll | None, _Poll]] = []
        start: _Poll | None = base
        prev = None
        for p in polls:
            if p.started < base.started:
                continue
            if prev is not None and p.uptime is not None and prev.uptime is not None and p.uptime < prev.uptime:
                segments.append((start, prev))
                start = None
            prev = p
        if prev is not None:
            segments.append((start, prev))
        return segments

    async def arm_samples(
        self, service: str, version: str, since: float, *, shadow: bool = False, until: float | None = None
    ) -> ArmSamples:
        if until is not None:
            raise SourceError("the envoy-stats source answers open windows only (until=None): counters have no per-request time")
        traffic = "shadow" if shadow else "live"
        n, err, buckets, reps = self.counters(cluster_of(service, version), traffic, since)
        lat, _ = self._growing.update((service, version, traffic, since), buckets, reps, limit=n - err)
        return ArmSamples(requests=n, errors=err, latencies_ms=lat)

    async def is_online(self) -> bool:
        """True when at least one admin answered within the last few intervals."""
        now = self.clock()
        return any(now - t <= max(3 * self.interval_s, self.timeout_s + self.interval_s) for t in self._last_ok.values())

    async def coverage(self, service: str, since: float, *, until: float | None = None) -> Coverage:
        cov = Coverage(self.name, since, until)
        now = self.clock()
        admins = [a.rstrip("/") for a in self._admins()]
        if not admins:
            cov.missing("no Envoy admin address to poll")
        base = self._baseline(since)
        for admin in admins:
            polls = self._polls.get(admin)
            if not polls:
                cov.missing(f"{admin} has not answered a stats poll yet")
                continue
            b = base.get(admin)
            if b is None:
                cov.missing(f"{admin}: no poll since the window began yet")
            elif b.started - since > 2 * self.interval_s + self.timeout_s and not (b.uptime is not None and b.uptime <= b.started - since):
                cov.missing(f"{admin}: first poll in the window came {b.started - since:.1f} s after it began: requests before it are not counted")
            for t in self._restarts.get(admin, []):
                if t >= since - self.interval_s:
                    cov.missing(f"{admin} restarted (or reset its counters) around {t:.0f}: requests before the restart are lost")
            failing = self._failing_since.get(admin)
            if failing is not None and failing <= (until or now):
                cov.missing(f"{admin} has not answered since {failing:.0f}: its latest requests are not counted")
        cov.details = {
            "admins": admins,
            "interval_s": self.interval_s,
            "last_ok": dict(self._last_ok),
            "latency_resolution": "Envoy detailed histogram bins (whole ms, 2 significant digits)",
        }
        return cov


def _restarted(prev: _Poll, uptime: float | None, arms: dict[tuple[str, str], ArmCounters]) -> bool:
    if uptime is not None and prev.uptime is not None and uptime < prev.uptime:
        return True
    return any(arms.get(k) is not None and arms[k].requests < a.requests for k, a in prev.arms.items())
