"""Model servers' own queue depth, scraped from their Prometheus endpoints.

vLLM exports ``vllm:num_requests_waiting``, Triton
``nv_inference_pending_request_count``: requests a replica has accepted and
not started. A replica with a queue is slower than its latency shows yet (the
queued requests have not finished), so the balancer multiplies its estimate
by (1 + queued). Scrapes run concurrently with a short timeout; a replica
that cannot be scraped keeps no value (its latency alone decides) and the
failure is logged once until it recovers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterable

import httpx

log = logging.getLogger("weir.balancer")

__all__ = ["QueueScraper", "gauge_value"]


def gauge_value(text: str, metric: str) -> float | None:
    """The sum of every sample of ``metric`` in a Prometheus text exposition (None when absent)."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name_end = len(metric)
        if not line.startswith(metric) or len(line) <= name_end or line[name_end] not in "{ ":
            continue
        try:
            value = float(line.rsplit("}", 1)[-1].split()[0] if "}" in line else line.split()[1])
        except (IndexError, ValueError):
            continue
        total += value
        seen = True
    return total if seen else None


class QueueScraper:
    def __init__(self, timeout_s: float = 0.5):
        self.timeout_s = timeout_s
        self._values: dict[str, float] = {}
        self._failing: set[str] = set()
        self._client: httpx.AsyncClient | None = None

    def value(self, address: str, settings: Any) -> float | None:
        return self._values.get(address)

    @staticmethod
    def url(address: str, settings: Any) -> str:
        host, _, port = address.rpartition(":")
        return f"http://{host}:{settings.metrics_port or port}{settings.metrics_path}"

    async def scrape(self, targets: Iterable[tuple[str, str, Any]]) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s)

        async def one(address: str, settings: Any) -> None:
            url = self.url(address, settings)
            try:
                resp = await self._client.get(url)
                resp.raise_for_status()
                value = gauge_value(resp.text, settings.queue_metric)
            except (httpx.HTTPError, ValueError) as err:
                self._values.pop(address, None)
                if address not in self._failing:
                    self._failing.add(address)
                    log.warning("queue depth of %s: cannot scrape %s (%s)", address, url, err)
                return
            self._failing.discard(address)
            if value is None:
                self._values.pop(address, None)
            else:
                self._values[address] = value

        await asyncio.gather(*(one(address, settings) for _, address, settings in targets))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
