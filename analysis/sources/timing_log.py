"""Per-request timings Envoy's gRPC access log cannot carry: time to first body byte and time per output token.

The gRPC access log (:mod:`.access_log`) has byte timings only for the first
byte of the upstream's *response*: its headers. Streaming model servers
(vLLM's OpenAI server, most SSE servers) send headers at once and the first
token later, so that is not the time to first token. Envoy's formatter knows
the first *body* byte (``%COMMON_DURATION(DS_RX_BEG:US_RX_BODY_BEG:us)%``), and
its OpenTelemetry access logger can send formatted values. So Weir's listeners
also send, per request, an OTLP log record with a few attributes
(:data:`TIMING_ATTRIBUTES`) to Weir's own OTLP logs service
(``/opentelemetry.proto.collector.logs.v1.LogsService/Export``, on the xDS
port), decoded here with our own protobuf-upb messages.

What is measured, per successful request (never for errors):

* ``ttfb_ms``: request start to the first byte of the upstream's response
  *body* - for a streamed completion, the first token (chunk) leaving the
  model server; for a unary call, about the whole response time;
* ``tpot_ms``: total time divided by the output tokens, when the response
  names them in an ``x-output-tokens`` header (non-streamed answers; a
  streamed answer's count is only in its body, which the proxy cannot see).

Counts, errors and coverage stay with the gRPC access log; this keeps only
timing samples, attributed like it (cluster = ``<service>-<version>``;
shadow, pinned and live traffic apart; by request start time), kept for
``retention_s`` and thinned per service above ``max_samples_per_s`` with one
keep-probability for all arms of a service (so the split stays unbiased).
"""

from __future__ import annotations

import math
import re
import time
from array import array
from typing import Callable, Iterable, NamedTuple

import grpc
import numpy as np

from xds.log_formats import TIMING_ATTRIBUTES, TIMING_LOG_NAME  # noqa: F401  (re-exported)
from xds.wire import otlp_logs_pb2 as otlp

from .totals import ArmTotals


__all__ = ["OTLP_LOGS_METHOD_PATH", "TIMING_ATTRIBUTES", "TIMING_LOG_NAME", "TimingLog", "TimingRecord", "decode_export"]

OTLP_LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
OTLP_LOGS_METHOD_PATH = f"/{OTLP_LOGS_SERVICE}/Export"

LIVE, SHADOW, PINNED = "live", "shadow", "pinned"
_HEADER_ROUTE = re.compile(r"^(?P<service>.+)-header-\d+$")


class TimingRecord(NamedTuple):
    cluster: str
    start: float
    ttfb_ms: float
    tpot_ms: float  # NaN when the response named no token count
    traffic: str


def _number(text: str) -> float | None:
    if not text or text == "-":
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _is_shadow(authority: str) -> bool:
    host = authority
    colon = authority.rfind(":")
    if colon > authority.rfind("]") and authority[colon + 1:].isdigit():
        host = authority[:colon]
    return host.endswith("-shadow")


def decode_export(request: otlp.ExportLogsServiceRequest) -> tuple[list[TimingRecord], int]:
    """(timing records of successful requests, records skipped) of one OTLP export."""
    out: list[TimingRecord] = []
    skipped = 0
    for resource_logs in request.resource_logs:
        for scope in resource_logs.scope_logs:
            for record in scope.log_records:
                attrs = {kv.key: kv.value.string_value for kv in record.attributes}
                cluster = attrs.get("c", "")
                authority = attrs.get("a", "")
                kind = attrs.get("k", "")
                shadow = "-shadow" in authority and _is_shadow(authority)
                if not cluster or cluster == "-" or (kind == "UpstreamEnd" and not shadow):
                    skipped += 1  # no upstream, or one attempt of a live request (its DownstreamEnd counts)
                    continue
                code = _number(attrs.get("code", ""))
                grpc_status = attrs.get("g", "")
                flags = attrs.get("f", "")
                ttfb_us = _number(attrs.get("fb", ""))
                start = _number(attrs.get("t", ""))
                failed = (code is None or code == 0 or code >= 500 or (flags not in ("", "-"))
                          or (grpc_status not in ("", "-", "0")))
                if failed or ttfb_us is None or start is None:
                    skipped += 1
                    continue
                total_us = _number(attrs.get("d", ""))
                tokens = _number(attrs.get("tok", ""))
                tpot = (total_us / 1000.0 / tokens) if total_us is not None and tokens and tokens > 0 else math.nan
                route = attrs.get("r", "")
                traffic = SHADOW if shadow else (PINNED if "-header-" in route and _HEADER_ROUTE.match(route) else LIVE)
                out.append(TimingRecord(cluster, start, ttfb_us / 1000.0, tpot, traffic))
    return out, skipped


class _Arm:
    __slots__ = ("t", "ttfb", "tpot")

    def __init__(self) -> None:
        self.t = array("d")
        self.ttfb = array("f")
        self.tpot = array("f")


class TimingLog:
    """Receives the timing records and answers per-arm timing samples (see the module docstring)."""

    def __init__(self, *, retention_s: float = 3600.0, max_samples_per_s: int = 500,
                 service_of: Callable[[str], str] | None = None, clock: Callable[[], float] = time.time):
        self.retention_s = retention_s
        self.max_samples_per_s = max_samples_per_s
        self.service_of = service_of or (lambda cluster: cluster.rsplit("-", 1)[0])
        self.clock = clock
        self._arms: dict[tuple[str, str], _Arm] = {}
        self._rates: dict[str, tuple[int, int, float, float]] = {}  # service -> (second, count, p, acc)
        self.counters = {"exports": 0, "records": 0, "kept": 0, "skipped": 0, "thinned": 0}
        self._newest = 0.0
        #: (cluster, traffic) -> time-to-first-byte histogram since the process started (/metrics)
        self.totals: dict[tuple[str, str], ArmTotals] = {}
        #: Called with each export's bytes from this process's own proxies (the relay to the leader).
        self.export_taps: list[Callable[[bytes], None]] = []

    # -- receiving ------------------------------------------------------------------------------
    def handler(self) -> grpc.GenericRpcHandler:
        empty = otlp.ExportLogsServiceResponse().SerializeToString()

        async def export(raw: bytes, context) -> bytes:
            self.ingest_export(otlp.ExportLogsServiceRequest.FromString(raw))
            for tap in self.export_taps:  # the bytes as received: the relay to the leader forwards them as they are
                tap(raw)
            return empty

        return grpc.method_handlers_generic_handler(OTLP_LOGS_SERVICE, {
            "Export": grpc.unary_unary_rpc_method_handler(
                export,
                request_deserializer=None,  # raw bytes, parsed here (and relayed unparsed)
                response_serializer=None,
            ),
        })

    def ingest_export(self, request: otlp.ExportLogsServiceRequest) -> int:
        records, skipped = decode_export(request)
        self.counters["exports"] += 1
        self.counters["skipped"] += skipped
        return self.ingest(records)

    def ingest(self, records: Iterable[TimingRecord]) -> int:
        kept = 0
        cap = self.max_samples_per_s
        for rec in records:
            self.counters["records"] += 1
            service = self.service_of(rec.cluster)
            sec = int(self.clock())
            last_sec, count, p, acc = self._rates.get(service, (-1, 0, 1.0, 0.0))
            if sec != last_sec:  # the previous second's rate sets this second's keep-probability
                rate = count if sec == last_sec + 1 else 0
                p, count = (1.0 if rate <= cap else cap / rate), 0
            count += 1
            acc += p
            if acc < 1.0:
                self._rates[service] = (sec, count, p, acc)
                self.counters["thinned"] += 1
                continue
            self._rates[service] = (sec, count, p, acc - 1.0)
            arm = self._arms.get((rec.cluster, rec.traffic))
            if arm is None:
                arm = self._arms[(rec.cluster, rec.traffic)] = _Arm()
            arm.t.append(rec.start)
            arm.ttfb.append(rec.ttfb_ms)
            arm.tpot.append(rec.tpot_ms)
            totals = self.totals.get((rec.cluster, rec.traffic))
            if totals is None:
                totals = self.totals[(rec.cluster, rec.traffic)] = ArmTotals()
            totals.requests += 1
            totals.observe(rec.ttfb_ms)
            self._newest = max(self._newest, rec.start)
            kept += 1
        self.counters["kept"] += kept
        self._expire()
        return kept

    def _expire(self) -> None:
        horizon = self._newest - self.retention_s
        for arm in self._arms.values():
            if arm.t and arm.t[0] < horizon:
                t = np.frombuffer(arm.t, dtype=np.float64)
                cut = int(np.searchsorted(t, horizon)) if np.all(np.diff(t) >= 0) else int(np.count_nonzero(t < horizon))
                for name in ("t", "ttfb", "tpot"):
                    old = getattr(arm, name)
                    setattr(arm, name, array(old.typecode, old[cut:]))

    # -- reading ------------------------------------------------------------------------------------
    def _window(self, cluster: str, traffic: str, since: float, until: float | None):
        """(the arm or None when it has no record, its start times, the mask of [since, until))."""
        arm = self._arms.get((cluster, traffic))
        if arm is None or not arm.t:
            return None, None, None
        t = np.frombuffer(arm.t, dtype=np.float64)
        mask = t >= since
        if until is not None:
            mask &= t < until
        return arm, t, mask

    def timed(self, cluster: str, traffic: str, since: float, until: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(start times, ttfb_ms) of the arm's records in [since, until): copies, for plots."""
        arm, t, mask = self._window(cluster, traffic, since, until)
        if arm is None:
            return np.empty(0), np.empty(0)
        return t[mask].copy(), np.frombuffer(arm.ttfb, dtype=np.float32)[mask].astype(np.float64)

    def samples(self, cluster: str, traffic: str, since: float, until: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ttfb_ms, tpot_ms) of the arm's successful requests that started in [since, until), arrival order."""
        arm, _, mask = self._window(cluster, traffic, since, until)
        if arm is None:
            return np.empty(0), np.empty(0)
        ttfb = np.frombuffer(arm.ttfb, dtype=np.float32)[mask].astype(np.float64)
        tpot = np.frombuffer(arm.tpot, dtype=np.float32)[mask].astype(np.float64)
        return ttfb, tpot[~np.isnan(tpot)]
