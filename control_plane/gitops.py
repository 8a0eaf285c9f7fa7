"""GitOps mode: a directory of policy files is the desired state; Weir applies each file, again when it changes.

Files follow exactly the rules of the REST API (:mod:`control_plane.rollouts.apply`):
the same file applied twice changes nothing, a changed file updates its active
rollout in place or restarts its canary, a file whose canary is live is a
no-op, one whose ``stable`` is not live is refused with the live version
named. A bad file is reported and changes nothing; the last good state stays.
Reading, hashing and parsing happen off the event loop (a large file must not stall xDS),
and a file over :data:`MAX_POLICY_BYTES` (the API's body limit) is refused unread.
With several replicas (docs/ha.md) every replica may watch the same directory:
a replica that does not lead is refused and tries the file again at the next
scan, so whichever replica leads applies it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

from policies import PolicyValidationError, parse_policy

from .errors import Unavailable, WeirError
from .rollouts.engine import Engine
from .store.protocol import NotLeader

log = logging.getLogger("weir.gitops")

POLICY_SUFFIXES = (".yaml", ".yml", ".json")
MAX_POLICY_BYTES = 1_048_576
"""A policy is a few kilobytes; a file larger than the API accepts is a mistake, not a policy."""

__all__ = ["MAX_POLICY_BYTES", "PolicyDirectory", "POLICY_SUFFIXES"]


class _TooLarge(Exception):
    pass


def _read(path: Path) -> tuple[str, str]:
    """The file's text and its SHA-256 (both CPU and disk work: called in a thread)."""
    size = path.stat().st_size
    if size > MAX_POLICY_BYTES:
        raise _TooLarge(f"{size / 1_048_576:.1f} MiB")
    text = path.read_text(encoding="utf-8-sig")
    return text, hashlib.sha256(text.encode()).hexdigest()


class PolicyDirectory:
    """Apply every policy file in a directory, again whenever its content changes."""

    def __init__(self, engine: Engine, directory: str | Path, interval_s: float = 2.0):
        self.engine = engine
        self.directory = Path(directory)
        self.interval_s = interval_s
        self._seen: dict[Path, str] = {}

    async def scan(self) -> None:
        files = await asyncio.to_thread(
            lambda: sorted(p for p in self.directory.iterdir() if p.suffix in POLICY_SUFFIXES and p.is_file())
        )
        for path in files:
            try:
                text, digest = await asyncio.to_thread(_read, path)
            except _TooLarge as err:
                if self._seen.get(path) != f"too large {err}":
                    self._seen[path] = f"too large {err}"
                    log.error("%s: not applied: the file is %s; a policy file is at most %d bytes",
                              path, err, MAX_POLICY_BYTES)
                continue
            except (OSError, UnicodeDecodeError) as err:
                log.error("%s: cannot read: %s", path, err)
                continue
            if self._seen.get(path) == digest:
                continue
            self._seen[path] = digest
            await self.apply(path, text)

    async def apply(self, path: Path, text: str) -> None:
        try:
            policy = await asyncio.to_thread(parse_policy, text, source=str(path))
        except PolicyValidationError as err:
            log.error("%s: invalid policy, not applied:\n%s", path, err)
            return
        try:
            applied = await self.engine.apply(policy)
        except PolicyValidationError as err:
            log.error("%s: not applied:\n%s", path, err)
            return
        except Unavailable as err:
            # Another replica leads (it applies the same directory), or the store is down:
            # look again at the next scan, so this replica applies it once it can.
            self._seen.pop(path, None)
            log.log(logging.DEBUG if isinstance(err, NotLeader) else logging.WARNING, "%s: not applied now: %s",
                    path, err)
            return
        except WeirError as err:
            log.error("%s: not applied: %s", path, err)
            return
        level = logging.INFO if applied.plan.changes_anything else logging.DEBUG
        log.log(level, "%s: %s", path, applied.plan.message)

    async def run(self) -> None:
        while True:
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scanning %s failed", self.directory)
            await asyncio.sleep(self.interval_s)
