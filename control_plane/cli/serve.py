"""`weir serve`: the xDS server, the rollout engine and the REST API in one process.

Everything shares one asyncio loop: grpc.aio for xDS, uvicorn for the API,
the engine's tick loop, and (with --policies DIR) a GitOps watcher that applies
every policy file in the directory and re-applies a file when it changes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ipaddress
import logging
import sys
from pathlib import Path

from policies import PolicyValidationError, parse_policy, policy_hash
from xds.routing import RoutingError

from ..assembly import start_control_plane
from ..rollouts.engine import Engine
from ..rollouts.model import RolloutConflict, RolloutNotFound

log = logging.getLogger("weir.serve")

POLICY_SUFFIXES = (".yaml", ".yml", ".json")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PolicyDirectory:
    """GitOps: apply every policy file in a directory, again whenever its content changes."""

    def __init__(self, engine: Engine, directory: str | Path, interval_s: float = 2.0):
        self.engine = engine
        self.directory = Path(directory)
        self.interval_s = interval_s
        self._seen: dict[Path, str] = {}

    async def scan(self) -> None:
        files = sorted(p for p in self.directory.iterdir() if p.suffix in POLICY_SUFFIXES and p.is_file())
        for path in files:
            try:
                text = await asyncio.to_thread(path.read_text)
            except OSError as err:
                log.error("%s: cannot read: %s", path, err)
                continue
            digest = hashlib.sha256(text.encode()).hexdigest()
            if self._seen.get(path) == digest:
                continue
            self._seen[path] = digest
            await self.apply(path, text)

    async def apply(self, path: Path, text: str) -> None:
        try:
            policy = parse_policy(text, source=str(path))
        except PolicyValidationError as err:
            log.error("%s: invalid policy, not applied:\n%s", path, err)
            return
        try:
            current = await self.engine.get(policy.metadata.name)
        except RolloutNotFound:
            current = None
        if current is not None and current.policy_hash == policy_hash(policy):
            return  # already applied (e.g. after a restart)
        try:
            rollout = await self.engine.submit(policy)
        except RolloutConflict as err:
            log.error("%s: not applied: %s", path, err)
            return
        except RoutingError as err:
            log.error("%s: not applied, its routing conflicts with other policies:\n%s", path, err)
            return
        log.info("%s: applied as rollout %s (revision %d)", path, rollout.name, rollout.revision)

    async def run(self) -> None:
        while True:
            try:
                await self.scan()
            except Exception:
                log.exception("scanning %s failed", self.directory)
            await asyncio.sleep(self.interval_s)


async def serve(args: argparse.Namespace) -> int:
    from ..api.app import create_app
    from ..api.auth import TokenAuth

    import uvicorn

    if not is_loopback(args.api_host) and not args.allow_remote:
        print(f"error: --api-host {args.api_host} is not a loopback address; add --allow-remote to expose the API", file=sys.stderr)
        return 2
    auth = TokenAuth.from_file(args.tokens) if args.tokens else None
    if auth is None and not is_loopback(args.api_host):
        print("error: an API reachable from other hosts needs --tokens FILE", file=sys.stderr)
        return 2
    cp = await start_control_plane(
        db=args.db, xds_host=args.xds_host, xds_port=args.xds_port, analyzer=getattr(args, "analyzer", None),
        listen_address=args.listen_address, tick_s=args.tick, envoy_admins=getattr(args, "envoy_admin", None) or (),
    )
    engine = cp.engine
    app = create_app(engine, cp.registry, auth, metrics=cp.metrics)
    config = uvicorn.Config(app, host=args.api_host, port=args.api_port, log_level="warning", lifespan="off")
    api = uvicorn.Server(config)
    tasks = []
    if args.policies:
        tasks.append(asyncio.create_task(PolicyDirectory(engine, args.policies).run(), name="weir-policies"))
    print(
        f"weir: xDS on {args.xds_host}:{cp.xds_port}, API on http://{args.api_host}:{args.api_port}, store {args.db}"
        + (f", policies from {args.policies}" if args.policies else ""),
        flush=True,
    )
    try:
        await api.serve()
    finally:
        for task in tasks:
            task.cancel()
        await cp.stop()
    return 0


def main(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 0
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
