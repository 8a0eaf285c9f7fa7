"""`weir serve`: the xDS server, the rollout engine and the REST API in one process.

Everything shares one asyncio loop: grpc.aio for xDS, uvicorn for the API,
the engine's tick loop, and (with --policies DIR) a GitOps watcher that applies
every policy file in the directory and re-applies a file when it changes.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import socket
import sys

from xds.corelog import CoreLogBridge

from ..assembly import start_control_plane
from ..errors import WeirError
from .security import serve_security
from ..gitops import PolicyDirectory

log = logging.getLogger("weir.serve")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(args: argparse.Namespace) -> int:
    from ..api.auth import TokenAuth

    if not is_loopback(args.api_host) and not args.allow_remote:
        print(f"error: --api-host {args.api_host} is not a loopback address; add --allow-remote to expose the API", file=sys.stderr)
        return 2
    auth = TokenAuth.from_file(args.tokens) if args.tokens else None
    if auth is None and not is_loopback(args.api_host):
        print("error: an API reachable from other hosts needs --tokens FILE", file=sys.stderr)
        return 2
    security = serve_security(args)  # TLS files and webhook secret, checked before anything starts
    # With mTLS, gRPC's core reports each refused handshake on stderr: rate-limited Weir lines instead.
    bridge = CoreLogBridge().install(asyncio.get_running_loop()) if security.xds_credentials is not None else None
    try:
        return await _serve(args, auth, security)
    finally:
        if bridge is not None:
            bridge.uninstall()


async def _serve(args: argparse.Namespace, auth, security) -> int:
    from ..api.app import create_app

    import uvicorn

    from ..notify.config import load_targets

    targets = load_targets(args)  # a bad --notify is an error before anything starts
    # Bind the API before anything starts: a taken port is an error now, not after a success line.
    api_socket = bind_api(args.api_host, args.api_port)
    store = getattr(args, "store", None)
    try:
        if store:  # several replicas over etcd (control_plane/ha)
            from ..ha.cli import start_from_args

            cp = await start_from_args(args, *api_socket.getsockname()[:2], security=security)
        else:
            cp = await start_control_plane(
                db=args.db, xds_host=args.xds_host, xds_port=args.xds_port, analyzer=getattr(args, "analyzer", None),
                listen_address=args.listen_address, tick_s=args.tick,
                envoy_admins=getattr(args, "envoy_admin", None) or (),
                xds_credentials=security.xds_credentials, webhooks=security.webhooks,
                router=getattr(args, "router", "xds"), istio_namespace=getattr(args, "istio_namespace", "default"),
                istio_gateways=tuple(getattr(args, "istio_gateway", None) or ()),
            )
    except BaseException:
        api_socket.close()
        raise
    engine = cp.engine
    if targets:
        from ..notify import Notifier
        from ..rollouts.observers import add_observer

        add_observer(engine, Notifier(targets, security.webhooks))
    app = create_app(engine, cp.registry, auth, metrics=cp.metrics, allowed_hosts=security.allowed_hosts,
                     balancer=cp.balancer, public_metrics=security.public_metrics,
                     readiness=getattr(cp, "readiness", None), access_log=cp.access_log)
    serve_api = getattr(cp, "serve_api", None)
    # Open event streams (the dashboard) would hold a graceful shutdown forever: give them 2 s.
    config = uvicorn.Config(serve_api(app) if serve_api else app, log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=2,
                            **(security.api_ssl or {}))
    api = uvicorn.Server(config)
    from ..ui.stream import end_streams_on_exit

    end_streams_on_exit(api, app.state.event_hub)  # Ctrl-C with a dashboard open: its stream ends first
    tasks = []
    if args.policies:
        tasks.append(asyncio.create_task(PolicyDirectory(engine, args.policies).run(), name="weir-policies"))
    api_host, api_port = api_socket.getsockname()[:2]
    print(
        f"weir: xDS on {args.xds_host}:{cp.xds_port}{' (mTLS)' if security.xds_credentials else ''}, "
        f"API on {'https' if security.api_ssl else 'http'}://{api_host}:{api_port}, store {store or args.db}"
        + (f", policies from {args.policies}" if args.policies else "")
        + f"; dashboard at {'https' if security.api_ssl else 'http'}://{api_host}:{api_port}/ui/"
        + (f", {len(targets)} notification target(s)" if targets else ""),
        flush=True,
    )
    try:
        await api.serve(sockets=[api_socket])
    finally:
        for task in tasks:
            task.cancel()
        await cp.stop()
    return 0


def bind_api(host: str, port: int) -> socket.socket:
    """A listening socket for the REST API, or an OSError that says what to do."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only; never shares a live port
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as err:
        sock.close()
        raise OSError(
            f"cannot listen for the API on {host}:{port}: {err.strerror or err} "
            "(is another `weir serve` running? pick another port with --api-port)"
        ) from None
    sock.setblocking(False)
    return sock


def main(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 0
    except (ValueError, OSError, WeirError) as err:  # a bad flag, a taken port, a corrupt store: no traceback
        print(f"error: {err}", file=sys.stderr)
        return 1
