"""Prometheus: Envoy's or Istio's metrics, and a policy's custom queries.

prometheus-api-client is synchronous (requests): every call runs in a worker
thread (``asyncio.to_thread``) so the event loop never blocks.

Flavours (what is queried for service ``S``, version ``V``):

* ``envoy`` (default) - Envoy's ``/stats/prometheus`` scraped from the proxies:
  ``envoy_cluster_external_upstream_rq_xx{envoy_cluster_name="S-V"}`` (live)
  or ``envoy_cluster_internal_upstream_rq_xx`` (shadow: mirrored requests are
  Envoy's own, *internal*, see ``envoy_stats``), split by
  ``envoy_response_code_class``; latency from
  ``envoy_cluster_{external,internal}_upstream_rq_time_bucket`` (bounds in ms).
  Envoy's tag extraction cuts ``envoy_cluster_name`` at the first dot: versions
  with dots (``v1.2``) need ``alt_stat_name`` or the envoy-stats source.
* ``istio`` - Istio's standard metrics: ``istio_requests_total`` and
  ``istio_request_duration_milliseconds_bucket`` with
  ``reporter="destination"``, ``destination_service_name="S"`` (the label is
  configurable) and ``destination_version="V"``; errors are
  ``response_code`` 5xx or 0. Istio's metrics do not tell mirrored requests
  apart: ``shadow=True`` raises :class:`SourceError`.

Counting is exact to the scrape: the query fetches each counter's *raw*
samples over the window (a range selector evaluated at now, no ``rate()`` or
``increase()`` extrapolation) and adds up the differences from the first
sample at or after ``since``, across counter resets (a restart adds what the
counter counted since it). A series first seen inside the window (Envoy
creates ``5xx`` lazily, at the first one) counts from zero when its proxy's
other series were already there. So ``since`` is exact to one scrape interval:
requests between ``since`` and the next scrape are missed, older ones never
counted. Latency: per-bucket differences of the histogram series, turned into
samples at each bucket's representative value (``_histogram``; Envoy's default
bounds 0.5 1 5 10 25 50 100 250 500 1000 2500 ... ms are coarse).

Custom SLO queries (:meth:`PrometheusSource.custom`): the policy's PromQL
with ``{{version}}`` replaced, evaluated as an instant query; it must return a
single number (one series or a scalar); no data is ``None`` (inconclusive).

Built-in Istio queries (:data:`ISTIO_QUERIES`, run by name with
:meth:`PrometheusSource.istio_query`), for evidence, dashboards and checks by
hand, over the same selector as the ``istio`` flavour (reporter, service label,
extra labels):

* ``istio-requests`` - requests so far by ``destination_version`` and
  ``response_code`` (the raw counters, summed over pods);
* ``istio-request-rate`` - the same as a per-second rate over ``window``;
* ``istio-error-ratio`` - per version, 5xx-or-0 responses / all, over ``window``;
* ``istio-latency`` - per version, the ``quantile`` of
  ``istio_request_duration_milliseconds`` over ``window`` (histogram_quantile,
  so to bucket resolution).
"""

from __future__ import annotations

import asyncio
import math
import re
import string
import time
from typing import Any, Callable, Literal, Mapping

from analysis.samples import ArmSamples

from . import Coverage, SourceError, cluster_of
from ._histogram import GrowingSamples, buckets_from_cumulative

__all__ = ["FLAVOURS", "ISTIO_QUERIES", "PrometheusSource", "substitute", "series_increase"]

#: What the source counts, by name: Envoy's own stats, or Istio's standard metrics.
FLAVOURS = ("envoy", "istio")

#: Built-in PromQL over Istio's standard metrics, by name ($selector, $window and $quantile filled in).
#: Errors are 5xx or 0 (no response: reset or timeout), as everywhere in Weir.
ISTIO_QUERIES: Mapping[str, str] = {
    "istio-requests": "sum by (destination_version, response_code) (istio_requests_total{$selector})",
    "istio-request-rate": "sum by (destination_version, response_code) (rate(istio_requests_total{$selector}[$window]))",
    "istio-error-ratio": (
        'sum by (destination_version) (rate(istio_requests_total{$selector,response_code=~"5..|0"}[$window]))'
        " / sum by (destination_version) (rate(istio_requests_total{$selector}[$window]))"
    ),
    "istio-latency": (
        "histogram_quantile($quantile, sum by (destination_version, le) "
        "(rate(istio_request_duration_milliseconds_bucket{$selector}[$window])))"
    ),
}

_PLACEHOLDER = re.compile(r"\{\{\s*([^}]*?)\s*\}\}")


def substitute(query: str, version: str) -> str:
    """Replace ``{{version}}`` (spaces allowed inside the braces) - the only placeholder policies accept."""

    def repl(m: re.Match) -> str:
        if m.group(1) != "version":
            raise SourceError(f"unknown placeholder {m.group(0)} in custom query (only {{{{version}}}} exists)")
        return version

    return _PLACEHOLDER.sub(repl, query)


def series_increase(values: list[tuple[float, float]], since: float, *, born: bool = False) -> tuple[float, int, float | None]:
    """(increase, resets, first timestamp counted) of one counter's raw samples from ``since`` on.

    The count starts at the first sample at or after ``since``. A series with
    no sample before ``since`` whose proxy *was* scraped before (``born``) was
    created inside the window: its first value counts in full.
    """
    after = [(t, v) for t, v in values if t >= since]
    if not after:
        return 0.0, 0, None
    has_before = any(t < since for t, _ in values)
    prev = 0.0 if (born and not has_before) else after[0][1]
    total = 0.0
    resets = 0
    for _, v in after:
        if v >= prev:
            total += v - prev
        else:
            total += v
            resets += 1
        prev = v
    return total, resets, after[0][0]


class PrometheusSource:
    """Samples per arm from Prometheus (see the module docstring)."""

    name = "prometheus"

    def __init__(
        self,
        url: str,
        *,
        flavour: Literal["envoy", "istio"] = "envoy",
        scrape_interval_s: float = 15.0,
        labels: Mapping[str, str] | None = None,
        istio_service_label: str = "destination_service_name",
        istio_reporter: str = "destination",
        timeout_s: float = 10.0,
        client: Any = None,
        clock: Callable[[], float] = time.time,
    ):
        if flavour not in FLAVOURS:
            raise ValueError(f"flavour must be 'envoy' or 'istio' (got {flavour!r})")
        self.url = url.rstrip("/")
        self.flavour = flavour
        self.scrape_interval_s = float(scrape_interval_s)
        self.labels = dict(labels or {})
        self.istio_service_label = istio_service_label
        self.istio_reporter = istio_reporter
        self.timeout_s = timeout_s
        self.clock = clock
        self._client = client
        self._growing = GrowingSamples()
        self._last_coverage: dict[tuple[str, float], dict[str, Any]] = {}

    # ----------------------------------------------------------------- plumbing

    def _prom(self):
        if self._client is None:
            from prometheus_api_client import PrometheusConnect

            self._client = PrometheusConnect(url=self.url, disable_ssl=True, timeout=self.timeout_s)
        return self._client

    async def _query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"time": f"{at if at is not None else self.clock():.3f}"}
        try:
            return await asyncio.to_thread(self._prom().custom_query, promql, params)
        except Exception as exc:  # noqa: BLE001 - requests/prometheus errors of many kinds
            raise SourceError(f"Prometheus query failed at {self.url}: {exc} (query: {promql})") from exc

    def _matchers(self, extra: Mapping[str, str], regex: Mapping[str, str] | None = None) -> str:
        parts = [f'{k}="{v}"' for k, v in {**self.labels, **extra}.items()]
        parts += [f'{k}=~"{v}"' for k, v in (regex or {}).items()]
        return "{" + ",".join(parts) + "}"

    def _selectors(self, service: str, version: str, shadow: bool) -> tuple[str, str, str, set[str]]:
        """(requests counter selector, histogram bucket selector, error label, error values)."""
        if self.flavour == "envoy":
            kind = "internal" if shadow else "external"
            m = self._matchers({"envoy_cluster_name": cluster_of(service, version)})
            return (
                f"envoy_cluster_{kind}_upstream_rq_xx{m}",
                f"envoy_cluster_{kind}_upstream_rq_time_bucket{m}",
                "envoy_response_code_class",
                {"5"},
            )
        if shadow:
            raise SourceError("Istio's standard metrics do not tell mirrored requests apart: use the access-log source for shadow analysis")
        m = self._matchers(
            {"reporter": self.istio_reporter, self.istio_service_label: service, "destination_version": version}
        )
        return f"istio_requests_total{m}", f"istio_request_duration_milliseconds_bucket{m}", "response_code", None

    async def _raw(self, selector: str, since: float, now: float) -> list[dict[str, Any]]:
        """Raw samples of every series of ``selector`` from a little before ``since`` to now."""
        span = max(1, math.ceil(now - since + 3 * self.scrape_interval_s))
        return await self._query(f"{selector}[{span}s]", at=now)

    # ----------------------------------------------------------------- MetricSource

    async def arm_samples(
        self, service: str, version: str, since: float, *, shadow: bool = False, until: float | None = None
    ) -> ArmSamples:
        now = self.clock() if until is None else min(until, self.clock())
        req_sel, bucket_sel, err_label, err_values = self._selectors(service, version, shadow)
        counters, buckets, up = await asyncio.gather(
            self._raw(req_sel, since, now), self._raw(bucket_sel, since, now), self._raw("up" + self._matchers({}), since, now)
        )
        # Targets scraped before the window: a series of theirs that first shows up inside it was born there.
        instances_before = _instances_before(up + counters + buckets, since)
        requests = errors = 0.0
        resets = 0
        for s in counters:
            inc, r, _ = series_increase(_values(s), since, born=_instance(s) in instances_before)
            resets += r
            requests += inc
            code = s["metric"].get(err_label, "")
            if (err_values is not None and code in err_values) or (err_values is None and (code.startswith("5") or code == "0")):
                errors += inc
        per_le: dict[float, float] = {}
        for s in buckets:
            le = _le(s["metric"].get("le", "+Inf"))
            inc, r, _ = series_increase(_values(s), since, born=_instance(s) in instances_before)
            per_le[le] = per_le.get(le, 0.0) + inc
        n, e = int(round(requests)), int(round(errors))
        counts = buckets_from_cumulative(per_le.items())
        lat, restarted = self._growing.update((service, version, shadow, since), counts, limit=n - e)
        self._last_coverage[(service, since)] = {
            "resets": resets,
            "instances": sorted({_instance(s) for s in counters}),
            "new_instances": sorted({_instance(s) for s in counters} - instances_before),
        }
        return ArmSamples(requests=n, errors=min(e, n), latencies_ms=lat)

    async def custom(self, query: str, version: str, *, at: float | None = None) -> float | None:
        """The value of a policy's custom query for ``version`` (None: no data)."""
        promql = substitute(query, version)
        result = await self._query(promql, at=at)
        if isinstance(result, dict) or (result and isinstance(result[0], (int, float, str))):
            raw = result["value"][1] if isinstance(result, dict) else result[1]
            value = float(raw)
        else:
            if not result:
                return None
            if len(result) > 1:
                raise SourceError(
                    f"custom query returned {len(result)} series, it must return one number: wrap it in sum(...) ({promql})"
                )
            value = float(result[0]["value"][1])
        return None if math.isnan(value) else value

    async def istio_query(
        self, name: str, service: str, *, window: str = "1m", quantile: float = 0.99, at: float | None = None
    ) -> list[tuple[dict[str, str], float]]:
        """Run the built-in Istio query ``name`` (:data:`ISTIO_QUERIES`) for ``service``.

        Returns ``(labels, value)`` per result series, sorted by labels: the
        labels are the query's grouping (``destination_version``, and
        ``response_code`` for the request queries). NaN results (no traffic in
        the window) are left out.
        """
        if name not in ISTIO_QUERIES:
            raise SourceError(f"no built-in Istio query {name!r} (known: {', '.join(ISTIO_QUERIES)})")
        if not re.fullmatch(r"\d+(ms|s|m|h)", window):
            raise SourceError(f"window must be a Prometheus duration such as 30s or 5m (got {window!r})")
        if not 0 < quantile < 1:
            raise SourceError(f"quantile must be between 0 and 1 (got {quantile!r})")
        selector = self._matchers({"reporter": self.istio_reporter, self.istio_service_label: service})[1:-1]
        promql = string.Template(ISTIO_QUERIES[name]).substitute(selector=selector, window=window, quantile=quantile)
        result = await self._query(promql, at=at)
        out = []
        for series in result:
            value = float(series["value"][1])
            if not math.isnan(value):
                out.append((dict(series.get("metric", {})), value))
        return sorted(out, key=lambda item: sorted(item[0].items()))

    async def is_online(self) -> bool:
        try:
            return bool(await asyncio.to_thread(self._prom().check_prometheus_connection))
        except Exception:  # noqa: BLE001
            return False

    async def coverage(self, service: str, since: float, *, until: float | None = None) -> Coverage:
        """Resets, stale or new scrape targets of the service's request counters in the window."""
        cov = Coverage(self.name, since, until)
        now = self.clock() if until is None else min(until, self.clock())
        if self.flavour == "envoy":
            sel = "envoy_cluster_upstream_rq_xx" + self._matchers({}, {"envoy_cluster_name": f"{service}-.+"})
        else:
            m = self._matchers({"reporter": self.istio_reporter, self.istio_service_label: service})
            sel = f"istio_requests_total{m}"
        try:
            series, up = await asyncio.gather(self._raw(sel, since, now), self._raw("up" + self._matchers({}), since, now))
        except SourceError as exc:
            cov.missing(str(exc))
            return cov
        before = _instances_before(up + series, since)
        stale_after = now - 3 * self.scrape_interval_s
        resets = 0
        stale = set()
        for s in series:
            values = _values(s)
            resets += series_increase(values, since)[1]
            if values and values[-1][0] < stale_after and values[-1][0] >= since - 3 * self.scrape_interval_s:
                stale.add(_instance(s))
        instances = {_instance(s) for s in series}
        if resets:
            cov.missing(f"{resets} counter reset(s) in the window (a proxy restarted): requests just before each are lost")
        if stale:
            cov.missing(f"not scraped in the last {3 * self.scrape_interval_s:g} s: {', '.join(sorted(stale))}")
        new = instances - before
        if new:
            cov.missing(
                f"first scraped inside the window: {', '.join(sorted(new))} - requests before their first scrape are not counted"
            )
        cov.details = {
            "flavour": self.flavour,
            "instances": sorted(instances),
            "scrape_interval_s": self.scrape_interval_s,
            "since_resolution_s": self.scrape_interval_s,
        }
        return cov


def _values(series: dict[str, Any]) -> list[tuple[float, float]]:
    return [(float(t), float(v)) for t, v in series.get("values", [])]


def _instance(series: dict[str, Any]) -> str:
    m = series.get("metric", {})
    return m.get("instance") or m.get("pod") or m.get("job") or ""


def _instances_before(series: list[dict[str, Any]], since: float) -> set[str]:
    """Scrape targets that had samples before the window: their new series are born in it."""
    return {_instance(s) for s in series if any(float(t) < since for t, _ in s.get("values", []))}


def _le(text: str) -> float:
    return math.inf if text in ("+Inf", "Inf", "inf") else float(text)
