"""Defaults of the Istio objects Weir renders, in a module with no imports so the CLI can show them cheaply.

:mod:`.render` and :mod:`.importer` use them; retries and the idle timeout come from the policy
(``spec.service.retries``, ``spec.service.idleTimeout``), as for Weir's own xDS.
"""

DEFAULT_VERSION_LABEL = "version"
"""Pod label whose value names the version; each subset selects pods by it."""

DEFAULT_PORT = 10000
"""Envoy listener port of an imported policy when none is given (the gateway port in manifests/)."""
