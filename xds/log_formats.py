"""What Weir's listeners log about each request, beyond the gRPC access log: one place for both ends.

``xds.translate`` configures Envoy's OpenTelemetry access logger with these
attributes; ``analysis.sources.timing_log`` reads them back. The gRPC access
log cannot carry formatted values, and only the formatter knows when the first
byte of a response *body* arrived (a streamed completion's first token).
"""

from __future__ import annotations

#: log_name of the OpenTelemetry access log (the gRPC access log's is "weir").
TIMING_LOG_NAME = "weir-timing"

#: Attribute key -> Envoy format string, per request.
TIMING_ATTRIBUTES: dict[str, str] = {
    "c": "%UPSTREAM_CLUSTER%",
    "t": "%START_TIME(%s.%6f)%",
    "fb": "%COMMON_DURATION(DS_RX_BEG:US_RX_BODY_BEG:us)%",
    "d": "%COMMON_DURATION(DS_RX_BEG:US_RX_END:us)%",
    "code": "%RESPONSE_CODE%",
    "g": "%GRPC_STATUS(NUMBER)%",
    "f": "%RESPONSE_FLAGS%",
    "a": "%REQ(:AUTHORITY)%",
    "r": "%ROUTE_NAME%",
    "k": "%ACCESS_LOG_TYPE%",
    "tok": "%RESP(x-output-tokens)%",
}
