"""Defaults of the Istio objects Weir renders, in a module with no imports so the CLI can show them cheaply.

:mod:`.render` documents and uses them; the retry policy and the idle timeout
stand in for policy fields that do not exist yet.
"""

DEFAULT_VERSION_LABEL = "version"
"""Pod label whose value names the version; each subset selects pods by it."""

DEFAULT_RETRY_ATTEMPTS = 2
DEFAULT_RETRY_ON = "connect-failure,reset"
"""Retries on every route: a request that never reached a model server (connect
failure) or whose connection was reset is tried again, twice in all. Inference
requests are idempotent (same input, same answer, no side effects); for a model
that is not, set the attempts to 0."""

DEFAULT_IDLE_TIMEOUT_S = 300.0
"""Upstream connections idle this long are closed (Istio's default is one hour).
Five minutes stays below the idle limits of common cloud load balancers and NAT
gateways, which drop idle connections without telling either end; the next
request on such a connection would fail instead."""

DEFAULT_PORT = 10000
"""Envoy listener port of an imported policy when none is given (the gateway port in manifests/)."""
