"""The `weir` command line.

Sub-commands are thin: each parses its flags and calls one function that
does the work, so everything here can also be used from Python.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Sequence

import yaml


def _cmd_bootstrap(args: argparse.Namespace) -> int:
    from xds.bootstrap import render_bootstrap

    host, _, port = args.xds.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        print(f"error: --xds: expected HOST:PORT with a port 1-65535 (got {args.xds!r})", file=sys.stderr)
        return 2
    config = render_bootstrap(
        args.node_id, args.cluster, host, int(port), delta=args.delta, admin_port=args.admin_port
    )
    if args.output == "json":
        json.dump(config, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        yaml.safe_dump(config, sys.stdout, sort_keys=False)
    return 0


def _cmd_xds_serve(args: argparse.Namespace) -> int:
    from xds.routing import RoutingError
    from xds.static_server import serve_routing_file

    try:
        return asyncio.run(serve_routing_file(args.config, host=args.host, port=args.port, group=args.group))
    except RoutingError as err:
        print(f"error: {args.config}: invalid routing, nothing served:\n{err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from policies import cmd_validate

    return cmd_validate(args.files)


def _cmd_schema(args: argparse.Namespace) -> int:
    from policies import cmd_schema

    return cmd_schema()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="weir", description="Progressive delivery for model serving on Envoy.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("bootstrap", help="print an Envoy bootstrap that connects to Weir's xDS server")
    p.add_argument("--node-id", required=True, help="this Envoy's node id (unique per proxy)")
    p.add_argument("--cluster", required=True, help="node cluster = the proxy group (policy spec.proxyGroup)")
    p.add_argument("--xds", required=True, metavar="HOST:PORT", help="Weir's xDS (gRPC) address")
    p.add_argument("--delta", action="store_true", help="use incremental (delta) ADS instead of state-of-the-world")
    p.add_argument("--admin-port", type=int, default=9901, help="Envoy admin port, bound to 127.0.0.1 (default 9901)")
    p.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    p.set_defaults(func=_cmd_bootstrap)

    p = sub.add_parser("xds", help="the xDS server alone")
    xsub = p.add_subparsers(dest="xds_command", required=True, metavar="SUBCOMMAND")
    s = xsub.add_parser("serve", help="serve a static desired-routing file (reloaded when it changes)")
    s.add_argument("--config", required=True, metavar="ROUTING.yaml")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=18000, help="xDS gRPC port (default 18000)")
    s.add_argument("--group", default="*", help="node group served (default '*': every proxy)")
    s.set_defaults(func=_cmd_xds_serve)

    p = sub.add_parser("validate", help="validate rollout policy files; exit 1 if any is invalid")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("schema", help="print the RolloutPolicy JSON Schema")
    p.set_defaults(func=_cmd_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
