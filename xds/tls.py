"""mTLS between Envoy and the xDS server: gRPC server credentials and Envoy's UpstreamTlsContext.

Why mutual TLS: whoever can open an ADS stream learns every route, cluster and
endpoint of its proxy group, and whoever can reach the access-log service can
feed the analysis made-up traffic. With ``require_client_auth`` a connection
without a client certificate from the configured CA never reaches Python; the
access-log service shares the port and so the same check.

The bootstrap side pins the server by the CA *and* by the name (or IP) Envoy
dials, so a certificate for some other host of the same CA is refused too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from policies.endpoints import is_ip_literal

__all__ = ["ClientTls", "relay_credentials", "server_credentials", "upstream_tls_transport_socket"]

_TLS_SOCKET = "envoy.transport_sockets.tls"
_UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


def server_credentials(cert_chain: bytes, private_key: bytes, client_ca: bytes | None) -> grpc.ServerCredentials:
    """TLS credentials for the xDS port; with ``client_ca`` every client must present a certificate it signed."""
    return grpc.ssl_server_credentials(
        [(private_key, cert_chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def relay_credentials(cert_chain: bytes, private_key: bytes, client_ca: bytes | None) -> grpc.ChannelCredentials:
    """How one Weir replica dials another's xDS port (the access-log relay) with the same files.

    With mTLS (``client_ca``) the replica presents its own xDS certificate, which must then
    also allow client authentication (``weir certs`` issues it so), and trusts that CA for
    the other replica's certificate. With TLS alone it presents nothing and trusts the
    system's roots (``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`` names others).
    """
    if client_ca is None:
        return grpc.ssl_channel_credentials()
    return grpc.ssl_channel_credentials(root_certificates=client_ca, private_key=private_key,
                                        certificate_chain=cert_chain)


@dataclass(frozen=True)
class ClientTls:
    """An Envoy's side of the mTLS: its certificate and key, the CA of the server, the name to verify.

    ``server_name`` defaults to the host Envoy dials; it is sent as SNI when it is
    a name (SNI carries no IP addresses) and must be a subject alternative name of
    the server's certificate.
    """

    cert: Path
    key: Path
    ca: Path
    server_name: str | None = None


def upstream_tls_transport_socket(tls: ClientTls, xds_host: str) -> dict[str, Any]:
    """The ``transport_socket`` of the bootstrap's control-plane cluster (paths made absolute)."""
    name = tls.server_name or xds_host
    san_type = "IP_ADDRESS" if is_ip_literal(name) else "DNS"
    context: dict[str, Any] = {
        "@type": _UPSTREAM_TLS,
        "common_tls_context": {
            # gRPC servers negotiate HTTP/2 by ALPN.
            "alpn_protocols": ["h2"],
            "tls_certificates": [{
                "certificate_chain": {"filename": str(Path(tls.cert).resolve())},
                "private_key": {"filename": str(Path(tls.key).resolve())},
            }],
            "validation_context": {
                "trusted_ca": {"filename": str(Path(tls.ca).resolve())},
                "match_typed_subject_alt_names": [{"san_type": san_type, "matcher": {"exact": name}}],
            },
        },
    }
    if san_type == "DNS":
        context["sni"] = name
    return {"name": _TLS_SOCKET, "typed_config": context}
