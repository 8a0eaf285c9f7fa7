"""`weir serve --store etcd://...`: the flags of a replica and how they become one.

Kept apart from ``control_plane/cli`` so the one-replica command stays as it
is: these flags matter only with ``--store``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .replica import Replica

__all__ = ["DEFAULT_LEASE_TTL_S", "add_options", "start_from_args"]

#: Why 3 s (docs/ha.md): a dead leader's key expires 3 s after its last
#: keep-alive at most (etcd checks expiries every 0.5 s), and the new leader's
#: first decision follows within a tick, so failover stays under the 5 s
#: target; keep-alives every 1 s let one lost keep-alive and an etcd leader
#: election (1 s by default) pass without a needless failover.
DEFAULT_LEASE_TTL_S = 3


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("several replicas (etcd)")
    g.add_argument("--store", metavar="etcd://HOST:PORT[,HOST:PORT...]",
                   help="keep state in etcd instead of --db, so several `weir serve` replicas share it: one leads "
                        "(drives the rollouts), every one serves xDS and the API (docs/ha.md)")
    g.add_argument("--etcd-cacert", metavar="FILE", type=Path,
                   help="talk TLS to etcd, trusting this CA (PEM); needed when the members listen on https")
    g.add_argument("--etcd-cert", metavar="FILE", type=Path, help="client certificate for etcd (with --etcd-key)")
    g.add_argument("--etcd-key", metavar="FILE", type=Path, help="client key for etcd (with --etcd-cert)")
    g.add_argument("--etcd-prefix", default="/weir", metavar="PREFIX",
                   help="key prefix in etcd (default /weir); one per Weir installation sharing the cluster")
    g.add_argument("--replica-id", metavar="NAME", help="this replica's name (default HOSTNAME:XDS_PORT)")
    g.add_argument("--advertise-api", metavar="URL",
                   help="the URL other replicas use to forward writes to this one when it leads "
                        "(default http://API_HOST:API_PORT; required when --api-host is 0.0.0.0 or ::)")
    g.add_argument("--advertise-xds", metavar="HOST:PORT",
                   help="where the other replicas relay their proxies' access logs while this one leads (default "
                        "--xds-host:PORT, or the --advertise-api host when --xds-host is 0.0.0.0 or ::)")
    g.add_argument("--lease-ttl", type=int, default=DEFAULT_LEASE_TTL_S, metavar="SECONDS",
                   help=f"leadership lease TTL (default {DEFAULT_LEASE_TTL_S}): a dead leader is replaced after at "
                        "most this long")


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad replica flags before anything starts (a ValueError naming the flag)."""
    from ..etcd.client import parse_etcd_url

    parse_etcd_url(args.store)
    if (args.etcd_cert or args.etcd_key) and not args.etcd_cacert:
        raise ValueError("--etcd-cert/--etcd-key need --etcd-cacert (the CA that signed the etcd members)")
    if args.lease_ttl < 2:
        raise ValueError(f"--lease-ttl must be at least 2 seconds (got {args.lease_ttl})")
    advertise_xds = getattr(args, "advertise_xds", None)
    if advertise_xds is not None:
        host, sep, port = advertise_xds.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--advertise-xds {advertise_xds!r}: expected HOST:PORT (e.g. 10.0.1.5:18000)")
    if args.api_host in ("0.0.0.0", "::") and not args.advertise_api:
        raise ValueError(f"--api-host {args.api_host} is no address other replicas can reach: "
                         "give --advertise-api http://THIS-HOST:PORT")


async def start_from_args(args: argparse.Namespace, api_host: str, api_port: int, *, security=None) -> "Replica":
    """``security``: the checked TLS and webhook options of ``weir serve`` (control_plane.cli.security)."""
    from ..etcd.client import TlsFiles
    from .replica import start_replica

    check_args(args)
    tls = TlsFiles(args.etcd_cacert, args.etcd_cert, args.etcd_key) if args.etcd_cacert else None
    host = f"[{api_host}]" if ":" in api_host else api_host
    scheme = "https" if security is not None and security.api_ssl else "http"
    return await start_replica(
        store_url=args.store, tls=tls, prefix=args.etcd_prefix, replica_id=args.replica_id,
        advertise_api=args.advertise_api or f"{scheme}://{host}:{api_port}", lease_ttl_s=args.lease_ttl,
        xds_host=args.xds_host, xds_port=args.xds_port, analyzer=getattr(args, "analyzer", None),
        listen_address=args.listen_address, tick_s=args.tick, envoy_admins=getattr(args, "envoy_admin", None) or (),
        xds_credentials=None if security is None else security.xds_credentials,
        advertise_xds=getattr(args, "advertise_xds", None),
        relay_credentials=None if security is None else security.xds_relay_credentials,
        webhooks=None if security is None else security.webhooks,
        router=getattr(args, "router", "xds"), istio_namespace=getattr(args, "istio_namespace", "default"),
        istio_gateways=tuple(getattr(args, "istio_gateway", None) or ()),
    )
