"""A fixture exporter of Istio's standard metrics, for a real Prometheus to scrape (127.0.0.1).

It serves ``/metrics`` in the Prometheus text format with the series an Istio
sidecar exports for HTTP traffic: ``istio_requests_total`` and the
``istio_request_duration_milliseconds`` histogram (Istio's default bucket
bounds), labelled with ``reporter``, ``destination_service_name``,
``destination_version``, ``response_code`` and the other standard labels.
Every request is recorded twice, once per reporter (``source`` and
``destination``), as both sidecars of a mesh call report it - so a query that
forgets the reporter counts double.
"""

from __future__ import annotations

import collections
import http.server
import threading
from typing import Any

#: Istio's default bounds for istio_request_duration_milliseconds (ms).
ISTIO_BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000)
REPORTERS = ("source", "destination")


class IstioExporter:
    """``record()`` requests; Prometheus sees them at its next scrape of :attr:`address`."""

    def __init__(self, namespace: str = "models") -> None:
        self.namespace = namespace
        self._lock = threading.Lock()
        self._requests: collections.Counter = collections.Counter()  # (reporter, service, version, code) -> n
        self._buckets: dict[tuple[str, str, str, str], list[int]] = {}  # same key -> count per bound (+Inf last)
        self._sums: collections.Counter = collections.Counter()
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = exporter.text().encode()
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> "IstioExporter":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def record(self, service: str, version: str, code: int, latency_ms: float, n: int = 1) -> None:
        """``n`` requests to ``service`` ``version`` answered ``code`` in ``latency_ms`` (n=0 declares the series)."""
        with self._lock:
            for reporter in REPORTERS:
                key = (reporter, service, version, str(code))
                self._requests[key] += n
                counts = self._buckets.setdefault(key, [0] * (len(ISTIO_BUCKETS) + 1))
                index = next((i for i, bound in enumerate(ISTIO_BUCKETS) if latency_ms <= bound), len(ISTIO_BUCKETS))
                counts[index] += n
                self._sums[key] += latency_ms * n

    def _labels(self, reporter: str, service: str, version: str, code: str) -> str:
        labels = {
            "reporter": reporter,
            "source_workload": "gateway",
            "source_workload_namespace": "istio-system",
            "destination_service": f"{service}.{self.namespace}.svc.cluster.local",
            "destination_service_name": service,
            "destination_service_namespace": self.namespace,
            "destination_workload": f"{service}-{version}",
            "destination_version": version,
            "request_protocol": "http",
            "response_code": code,
            "response_flags": "-" if code != "0" else "UC",
            "connection_security_policy": "mutual_tls" if reporter == "destination" else "unknown",
        }
        return ",".join(f'{k}="{v}"' for k, v in labels.items())

    def text(self) -> str:
        lines = ["# TYPE istio_requests_total counter"]
        with self._lock:
            for key, n in sorted(self._requests.items()):
                lines.append(f"istio_requests_total{{{self._labels(*key)}}} {n}")
            lines.append("# TYPE istio_request_duration_milliseconds histogram")
            for key, counts in sorted(self._buckets.items()):
                labels = self._labels(*key)
                cumulative = 0
                for bound, count in zip((*ISTIO_BUCKETS, "+Inf"), counts):
                    cumulative += count
                    le = bound if bound == "+Inf" else f"{float(bound):g}"
                    lines.append(f'istio_request_duration_milliseconds_bucket{{{labels},le="{le}"}} {cumulative}')
                lines.append(f"istio_request_duration_milliseconds_sum{{{labels}}} {self._sums[key]:g}")
                lines.append(f"istio_request_duration_milliseconds_count{{{labels}}} {cumulative}")
        return "\n".join(lines) + "\n"
