"""The access-log source against a real Envoy: counts, errors, latency, shadow, since.

Ground truth is what the backends served (live or mirrored, by status); the
source must match it exactly once Envoy's 100 ms flush has passed.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from analysis.sources.access_log import PINNED, SHADOW
from tests.e2e.sources_stack import SERVICE, SourcesStack, eventually

pytestmark = pytest.mark.e2e


def _matches(stack: SourcesStack, since: float, expect: dict) -> bool:
    got = {v: stack.als.samples(SERVICE, v, since) for v in ("v1", "v2")}
    return all((got[v].requests, got[v].errors) == expect[v] for v in expect)


async def test_counts_errors_latency_and_since_match_what_was_sent():
    stack = await SourcesStack(split=(60, 40), v1={"delay_ms": 2}, v2={"delay_ms": 8, "error_every": 5}).start()
    try:
        t_start = time.time()
        first = await stack.send(100)
        assert sum(first.values()) == 100
        await eventually(lambda: stack.als.counters["live"] >= 100, 5)
        before = {v: (b.count(), b.count("live", 500)) for v, b in (("v1", stack.v1), ("v2", stack.v2))}
        since = time.time()  # the "step" starts: only requests that start from now on count
        second = await stack.send(300)
        assert sum(second.values()) == 300

        expect = {
            "v1": (stack.v1.count() - before["v1"][0], 0),
            "v2": (stack.v2.count() - before["v2"][0], stack.v2.count("live", 500) - before["v2"][1]),
        }
        assert expect["v1"][0] > 100 and expect["v2"][0] > 60 and expect["v2"][1] > 10, expect
        assert await eventually(lambda: _matches(stack, since, expect)), (
            {v: stack.als.samples(SERVICE, v, since).summary() for v in ("v1", "v2")},
            expect,
        )
        # Everything since the start: both batches, errors included, per version.
        total = {"v1": (stack.v1.count(), 0), "v2": (stack.v2.count(), stack.v2.count("live", 500))}
        assert _matches(stack, t_start, total)
        assert second["status:500"] == expect["v2"][1]

        v1 = stack.als.samples(SERVICE, "v1", since)
        v2 = stack.als.samples(SERVICE, "v2", since)
        # Below the thinning cap: one latency sample per successful request.
        assert v1.latencies_ms.size == v1.successes and v2.latencies_ms.size == v2.successes
        # Plausible: at least the backend's sleep, not wildly more.
        assert v1.latencies_ms.min() >= 2.0 and np.median(v1.latencies_ms) < 2.0 + 20
        assert v2.latencies_ms.min() >= 8.0 and np.median(v2.latencies_ms) < 8.0 + 20
        assert np.median(v2.latencies_ms) > np.median(v1.latencies_ms) + 4

        # Attributed to the endpoint that served them.
        by_ep = stack.als.samples_by_endpoint(SERVICE, "v2", since)
        assert list(by_ep) == [stack.v2.address]
        assert by_ep[stack.v2.address].requests == expect["v2"][0]

        cov = await stack.als.coverage(SERVICE, since)
        assert cov.complete, cov.reasons
        assert await stack.als.is_online()
        # Nothing was mirrored, nothing pinned.
        assert stack.als.samples(SERVICE, "v2", t_start, traffic=SHADOW).requests == 0
        assert stack.als.samples(SERVICE, "v2", t_start, traffic=PINNED).requests == 0
    finally:
        await stack.close()


async def test_mirrored_requests_land_in_the_shadow_arm():
    """100% live to v1, 50% mirrored to v2 (which fails 1 in 4): the mirror's entries are shadow, never live."""
    stack = await SourcesStack(split=(100, 0), mirror=50, v2={"error_every": 4}).start()
    try:
        since = time.time()
        sent = await stack.send(400)
        assert sent == {"v1": 400}  # clients never see shadow responses
        shadow_n = stack.v2.count("shadow")
        shadow_err = stack.v2.count("shadow", 500)
        assert 120 < shadow_n < 280 and shadow_err == shadow_n // 4
        assert stack.v2.count("live") == 0

        async def settled():
            sh = await stack.als.arm_samples(SERVICE, "v2", since, shadow=True)
            live = await stack.als.arm_samples(SERVICE, "v1", since)
            return (sh.requests, sh.errors, live.requests) == (shadow_n, shadow_err, 400)

        assert await eventually(settled), (
            stack.als.samples(SERVICE, "v2", since, traffic=SHADOW).summary(),
            stack.als.samples(SERVICE, "v1", since).summary(),
            stack.als.counters,
        )
        sh = await stack.als.arm_samples(SERVICE, "v2", since, shadow=True)
        assert sh.latencies_ms.size == shadow_n - shadow_err
        assert (await stack.als.arm_samples(SERVICE, "v2", since)).requests == 0  # no live v2 traffic
        # The upstream attempts of live requests are skipped, not double-counted.
        assert stack.als.counters["skipped"] >= 400
        cov = await stack.als.coverage(SERVICE, since, shadow=True)
        assert cov.complete, cov.reasons
    finally:
        await stack.close()


async def test_a_receiver_outage_is_a_gap_never_zero_errors():
    """Envoy drops entries while its access-log stream is down: the source counts what
    arrived, and coverage says the window is incomplete until a new window starts."""
    stack = await SourcesStack(split=(100, 0), v1={"error_every": 10}, separate_als=True).start()
    try:
        since = time.time()
        await stack.send(50)
        assert await eventually(lambda: stack.als.samples(SERVICE, "v1", since).requests == 50)
        assert (await stack.als.coverage(SERVICE, since)).complete

        await stack.stop_als()  # the receiver goes away
        assert await eventually(lambda: stack.als.open_streams == 0, 5)
        await stack.send(50)  # served, errors included, but their entries are lost
        await asyncio.sleep(0.3)
        await stack.start_als()  # back: Envoy opens a new stream at a later flush
        after = time.time()
        await stack.send(50)
        assert await eventually(lambda: stack.als.samples(SERVICE, "v1", after).requests == 50, 10), stack.als.counters

        s = stack.als.samples(SERVICE, "v1", since)
        served_errors = stack.v1.count("live", 500)
        assert stack.v1.count() == 150 and served_errors == 15
        assert 100 <= s.requests < 150 and s.errors < served_errors  # what arrived, no more
        cov = await stack.als.coverage(SERVICE, since)
        assert not cov.complete and any("gap" in r for r in cov.reasons), cov.reasons
        gap = cov.details["gaps"][0]
        assert gap["node"] == "envoy-1" and gap["to"] is not None and since < gap["from"] < gap["to"] <= after + 5
        # Envoy itself does not count them as dropped (field notes): only the gap tells.
        written = stack.envoy.stat("access_logs.grpc_access_log.logs_written")
        assert written >= 150
        # A window that starts after the stream came back is whole.
        assert (await stack.als.coverage(SERVICE, gap["to"] + 0.001)).complete
    finally:
        await stack.close()
