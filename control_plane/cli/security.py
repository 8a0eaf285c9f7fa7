"""The command line's security options: ``weir certs``, TLS for ``weir bootstrap`` and ``weir serve``, webhooks.

Kept apart from :mod:`control_plane.cli.main` so the parser there only hooks
them in; what each option means is in docs/security.md and docs/webhooks.md.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ServeSecurity",
    "add_bootstrap_tls_options",
    "add_certs_command",
    "add_serve_security_options",
    "bootstrap_tls",
    "serve_security",
]


# --------------------------------------------------------------------------- weir certs


def add_certs_command(sub: Any) -> None:
    p = sub.add_parser("certs", help="write a development CA, a server certificate and client certificates (mTLS)")
    p.add_argument("--dir", required=True, metavar="DIR",
                   help="where to write ca.crt/ca.key, server.crt/server.key, client-NAME.crt/.key (an existing "
                        "CA there is reused)")
    p.add_argument("--server-name", action="append", default=[], metavar="NAME",
                   help="a DNS name of the server certificate (repeatable), e.g. localhost or weir.weir-system.svc")
    p.add_argument("--server-ip", action="append", default=[], metavar="IP",
                   help="an IP address of the server certificate (repeatable), e.g. 127.0.0.1")
    p.add_argument("--client", action="append", default=[], metavar="NAME",
                   help="issue client-NAME.crt/.key for one Envoy or fleet (repeatable)")
    p.add_argument("--days", type=int, default=365, help="validity of the issued certificates (default 365)")
    p.add_argument("--force", action="store_true", help="replace existing certificate files of the same names")
    p.set_defaults(func=_cmd_certs)


def _cmd_certs(args: argparse.Namespace) -> int:
    from ..tls import CertError, issue_dev_certs

    if not (args.server_name or args.server_ip or args.client):
        print("error: nothing to issue: give --server-name/--server-ip and/or --client", file=sys.stderr)
        return 2
    try:
        issued = issue_dev_certs(args.dir, server_names=args.server_name, server_ips=args.server_ip,
                                 clients=args.client, days=args.days, force=args.force)
    except CertError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: {args.dir}: {err.strerror or err}", file=sys.stderr)
        return 1
    print(f"{'created' if issued.created_ca else 'reused'} CA {issued.ca_cert} (key {issued.ca_key}, mode 0600)")
    for path in issued.written:
        print(f"wrote {path}")
    print("development CA only: keep ca.key private, use your own CA in production")
    return 0


# --------------------------------------------------------------------------- weir bootstrap --tls-*


def add_bootstrap_tls_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-cert", metavar="FILE", help="mTLS: this Envoy's client certificate (from weir certs)")
    p.add_argument("--tls-key", metavar="FILE", help="mTLS: its private key")
    p.add_argument("--tls-ca", metavar="FILE", help="mTLS: the CA that signed Weir's server certificate")
    p.add_argument("--tls-server-name", metavar="NAME",
                   help="the name (or IP) to verify in Weir's certificate; default the --xds host")


def bootstrap_tls(args: argparse.Namespace):
    """The ClientTls of ``weir bootstrap``, None without --tls-*; ValueError when only some are given."""
    from xds.tls import ClientTls

    given = {name: getattr(args, name, None) for name in ("tls_cert", "tls_key", "tls_ca")}
    if not any(given.values()):
        if getattr(args, "tls_server_name", None):
            raise ValueError("--tls-server-name needs --tls-cert, --tls-key and --tls-ca")
        return None
    missing = ["--" + name.replace("_", "-") for name, value in given.items() if not value]
    if missing:
        raise ValueError(f"mTLS needs --tls-cert, --tls-key and --tls-ca; missing {', '.join(missing)}")
    from ..tls import read_pem_files

    read_pem_files(given["tls_cert"], given["tls_key"])  # CertError (a ValueError) names the bad file
    if not Path(given["tls_ca"]).is_file():
        raise ValueError(f"--tls-ca {given['tls_ca']}: no such file")
    return ClientTls(Path(given["tls_cert"]), Path(given["tls_key"]), Path(given["tls_ca"]),
                     getattr(args, "tls_server_name", None))


# --------------------------------------------------------------------------- weir serve


def add_serve_security_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="without --tokens: a Host name the API answers besides localhost, 127.0.0.1 and ::1 "
                        "(repeatable)")
    p.add_argument("--public-metrics", action="store_true",
                   help="with --tokens: serve /metrics without a token (for a Prometheus without credentials)")
    p.add_argument("--api-tls-cert", metavar="FILE", help="serve the API over HTTPS with this certificate")
    p.add_argument("--api-tls-key", metavar="FILE", help="the API certificate's private key")
    p.add_argument("--xds-tls-cert", metavar="FILE", help="serve xDS (and the access-log service) over TLS")
    p.add_argument("--xds-tls-key", metavar="FILE", help="the xDS certificate's private key")
    p.add_argument("--xds-tls-client-ca", metavar="FILE",
                   help="mTLS: every proxy must present a client certificate signed by this CA")
    p.add_argument("--webhook-secret-file", metavar="FILE",
                   help="sign every webhook with HMAC-SHA256 using the secret in FILE (header Weir-Signature; "
                        "docs/webhooks.md)")
    p.add_argument("--webhook-allow", action="append", default=[], metavar="CIDR|HOST",
                   help="only send webhooks to these networks or host names (repeatable); link-local and "
                        "metadata addresses are refused unless a CIDR here covers them")


@dataclass
class ServeSecurity:
    """What ``weir serve`` builds from its security options."""

    xds_credentials: Any = None
    xds_relay_credentials: Any = None  # a replica's relay to the leader's xDS port (docs/ha.md)
    webhooks: Any = None
    api_ssl: dict[str, str] | None = None  # uvicorn ssl_certfile/ssl_keyfile
    allowed_hosts: tuple[str, ...] = ()
    public_metrics: bool = False


def serve_security(args: argparse.Namespace) -> ServeSecurity:
    """Check and load the options; ValueError (CertError included) says which option or file is wrong."""
    from ..rollouts.webhooks import Destinations, WebhookClient, load_webhook_secret
    from ..tls import ServerTls, read_pem_files

    out = ServeSecurity(allowed_hosts=tuple(getattr(args, "allowed_host", ()) or ()),
                        public_metrics=bool(getattr(args, "public_metrics", False)))
    cert, key, ca = (getattr(args, n, None) for n in ("xds_tls_cert", "xds_tls_key", "xds_tls_client_ca"))
    if cert or key or ca:
        if not (cert and key):
            raise ValueError("xDS TLS needs --xds-tls-cert and --xds-tls-key (and --xds-tls-client-ca for mTLS)")
        from xds.tls import relay_credentials, server_credentials

        files = ServerTls(Path(cert), Path(key), Path(ca) if ca else None).read()
        out.xds_credentials = server_credentials(*files)
        out.xds_relay_credentials = relay_credentials(*files)
    api_cert, api_key = getattr(args, "api_tls_cert", None), getattr(args, "api_tls_key", None)
    if api_cert or api_key:
        if not (api_cert and api_key):
            raise ValueError("API TLS needs both --api-tls-cert and --api-tls-key")
        read_pem_files(api_cert, api_key)
        out.api_ssl = {"ssl_certfile": str(api_cert), "ssl_keyfile": str(api_key)}
    secret_file = getattr(args, "webhook_secret_file", None)
    secret = load_webhook_secret(secret_file) if secret_file else None
    out.webhooks = WebhookClient(secret=secret, destinations=Destinations(getattr(args, "webhook_allow", ()) or ()))
    return out
