"""`python -m devtools.model_servers --rest-port P --grpc-port Q [--knob value ...]`.

Prints one JSON line once both ports accept connections
(`{"rest_port": P, "grpc_port": Q, "pid": ...}`; port 0 picks a free port),
then serves until SIGTERM or SIGINT. Every knob is a flag (`--latency-ms 20`,
`--grpc-error-code UNAVAILABLE`, `--defer-headers`); the launcher in
launcher.py parses that line.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys

from devtools.model_servers.knobs import Knobs, grpc_code
from devtools.model_servers.server import ModelServer


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m devtools.model_servers", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--rest-port", type=int, default=0)
    p.add_argument("--grpc-port", type=int, default=0, help="-1 serves no gRPC")
    defaults = Knobs()
    for f in dataclasses.fields(Knobs):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            p.add_argument(flag, dest=f.name, action="store_true", default=default)
        elif f.name == "grpc_error_code":
            p.add_argument(flag, dest=f.name, type=grpc_code, default=default, help="number or name (INTERNAL)")
        else:
            p.add_argument(flag, dest=f.name, type=type(default), default=default, help=f"default {default!r}")
    return p


def knobs_from(args: argparse.Namespace) -> Knobs:
    return Knobs(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Knobs)})


async def serve(args: argparse.Namespace) -> None:
    server = ModelServer(knobs_from(args), host=args.host, rest_port=args.rest_port,
                         grpc_port=None if args.grpc_port < 0 else args.grpc_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ports = await server.start()
    print(json.dumps({"rest_port": ports.rest, "grpc_port": ports.grpc, "pid": os.getpid(),
                      "model_name": server.knobs.model_name, "model_version": server.knobs.model_version}),
          flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        knobs_from(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
