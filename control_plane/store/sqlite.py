"""The default store: one SQLite file (WAL mode), written from one thread.

Every change is one transaction that updates the rollout row, appends its
event rows and, when the decision moves the live version, writes the
service's release, guarded by the rollout's generation (optimistic
concurrency): a crash leaves either the whole transition or none of it.
Judge state is saved per (rollout, analysis run, step) after every look.
SQLite runs on its own thread: the asyncio loop never blocks on the disk.

Storage faults are refused with the cause (:mod:`.faults`), never hidden:
a file that is corrupt at start stops Weir with what to do; a file deleted or
replaced while running (its device and inode changed) makes every write fail
with 503, and Weir first saves what it has to ``FILE.rescued-TIME``; a full
disk fails the write with "the disk is full", nothing half-written. :meth:`health`
(``/readyz``) reports each of these, including corruption found on disk by a
fresh connection.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..rollouts.model import ACTIVE, Event, Release, Rollout, RolloutConflict, RolloutNotFound
from .faults import FileIdentity, StoreUnavailable, describe_sqlite_error, is_corruption
from .protocol import StaleRollout

_MAGIC = b"SQLite format 3\x00"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    name TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    active INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS one_active_per_service ON rollouts(service) WHERE active = 1;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout TEXT NOT NULL,
    revision INTEGER NOT NULL,
    at REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_rollout ON events(rollout, seq);
CREATE TABLE IF NOT EXISTS releases (
    service TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS judge_states (
    rollout TEXT NOT NULL,
    run INTEGER NOT NULL,
    step INTEGER NOT NULL,
    at REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (rollout, run, step)
);
"""


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open; SQLite ends one itself on some errors (a full disk).

    Without the check, ROLLBACK raised "cannot rollback - no transaction is active",
    which replaced the real cause (SQLITE_FULL) in the error the caller saw.
    """
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the original error is the one to report


class SQLiteStore:
    """The default store for one replica (see the module docstring)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._memory = self.path == ":memory:"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="weir-store")
        self._conn: sqlite3.Connection | None = None
        self._identity: FileIdentity | None = None
        self._fault: str | None = None  # latched: the file is gone, replaced or corrupt
        self._write_fault: str | None = None  # the last write's storage fault (disk full), until one succeeds
        self.rescued: Path | None = None  # where the data went when the file was deleted under us
        try:
            self._executor.submit(self._open).result()
        except BaseException:
            self._executor.shutdown(wait=False)
            raise

    def _open(self) -> None:
        if not self._memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        except sqlite3.Error as err:
            raise StoreUnavailable(describe_sqlite_error(err, self.path) or
                                   f"cannot open the database file {self.path} (SQLite: {err})") from None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against a process crash (kill -9) in WAL mode; only
            # an OS crash may lose the last commits.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            if not self._memory:
                problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
                if problems != ["ok"]:
                    raise StoreUnavailable(self._corrupt("; ".join(problems)))
            conn.executescript(_SCHEMA)
        except sqlite3.Error as err:
            conn.close()
            if is_corruption(err):
                raise StoreUnavailable(self._corrupt(str(err))) from None
            raise StoreUnavailable(describe_sqlite_error(err, self.path) or
                                   f"cannot open the database file {self.path} (SQLite: {err})") from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        if not self._memory:
            self._identity = FileIdentity.of(self.path)

    def _corrupt(self, detail: str) -> str:
        detail = "; ".join(p.strip() for p in detail.splitlines() if p.strip() and not p.startswith("***"))
        return (f"the database file {self.path} is corrupt (SQLite: {detail}); restore it from a backup, "
                f"or move it aside (mv {self.path} {self.path}.corrupt) to start with an empty store")

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._guarded, fn, args, False)

    async def _write(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._guarded, fn, args, True)

    def _guarded(self, fn, args: tuple, write: bool):
        """Run ``fn`` on the store thread; storage faults become StoreUnavailable with their cause."""
        if write:
            self._check_writable()
        try:
            result = fn(*args)
        except sqlite3.Error as err:
            message = describe_sqlite_error(err, self.path)
            if message is None:
                raise
            if is_corruption(err):
                self._fault = message
            elif write:
                self._write_fault = message
            raise StoreUnavailable(message) from None
        if write:
            self._write_fault = None
        return result

    def _check_writable(self) -> None:
        self._check_file()
        if self._fault is not None:
            raise StoreUnavailable(f"{self._fault}; writes are refused")

    def _check_file(self) -> None:
        """Latch a fault if the file is gone, replaced, or no longer starts like an SQLite database."""
        if self._memory or self._fault is not None or self._identity is None:
            return
        problem = self._identity.check(self.path)
        if problem is not None:
            self._fault = f"{problem}; {self._rescue()}"
            return
        try:
            with open(self.path, "rb") as f:
                head = f.read(len(_MAGIC))
        except OSError as err:
            self._fault = f"cannot read the database file {self.path}: {err.strerror or err}"
            return
        if head and head != _MAGIC:
            self._fault = self._corrupt("the file no longer starts with the SQLite header")

    def _rescue(self) -> str:
        """Save what the open connection still sees of a deleted or replaced file (it keeps the old inode)."""
        target = f"{self.path}.rescued-{time.strftime('%Y%m%dT%H%M%S')}"
        try:
            self._conn.execute("VACUUM INTO ?", (target,))
        except sqlite3.Error as err:
            return f"Weir could not save a copy of its data to {target} (SQLite: {err})"
        self.rescued = Path(target)
        return f"Weir saved all it had to {target}: stop Weir, move that file to {self.path}, and start it again"

    def _health(self) -> str | None:
        self._check_file()
        if self._fault is None and not self._memory:
            # A fresh connection reads the disk, not this connection's page cache.
            try:
                check = sqlite3.connect(f"file:{quote(self.path)}?mode=ro", uri=True, timeout=2)
                try:
                    problems = [row[0] for row in check.execute("PRAGMA quick_check(3)")]
                finally:
                    check.close()
                if problems != ["ok"]:
                    self._fault = self._corrupt("; ".join(problems))
            except sqlite3.Error as err:
                if is_corruption(err):
                    self._fault = self._corrupt(str(err))
                else:
                    return describe_sqlite_error(err, self.path) or f"the store does not answer (SQLite: {err})"
        return self._fault or self._write_fault

    async def health(self) -> str | None:
        """None when the store can serve reads and writes; otherwise the cause and what to do."""
        return await self._run(self._health)

    # -- writes ------------------------------------------------------------------------
    def _insert_events(self, conn: sqlite3.Connection, events: list[Event]) -> None:
        for event in events:
            data = event.to_json()
            data.pop("seq", None)
            cur = conn.execute(
                "INSERT INTO events(rollout, revision, at, data) VALUES (?, ?, ?, ?)",
                (event.rollout, event.revision, event.at, json.dumps(data)),
            )
            event.seq = cur.lastrowid

    @staticmethod
    def _write_release(conn: sqlite3.Connection, release: Release | None) -> None:
        if release is not None:
            release.generation += 1
            conn.execute("INSERT OR REPLACE INTO releases(service, data) VALUES (?, ?)",
                         (release.service, json.dumps(release.to_json())))

    def _create(self, rollout: Rollout, events: list[Event], release: Release | None) -> Rollout:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT active, data FROM rollouts WHERE name = ?", (rollout.name,)).fetchone()
            if row is not None and row[0]:
                raise RolloutConflict(f"rollout {rollout.name!r} is already active; abort it first")
            other = conn.execute(
                "SELECT name FROM rollouts WHERE service = ? AND active = 1 AND name != ?", (rollout.service, rollout.name)
            ).fetchone()
            if other is not None:
                raise RolloutConflict(
                    f"service {rollout.service!r} already has an active rollout {other[0]!r}; abort it first"
                )
            if row is not None:
                rollout.revision = Rollout.from_json(json.loads(row[1])).revision + 1
                for event in events:
                    event.revision = rollout.revision
            rollout.generation = 1
            conn.execute(
                "INSERT OR REPLACE INTO rollouts(name, service, active, generation, data) VALUES (?, ?, ?, ?, ?)",
                (rollout.name, rollout.service, int(rollout.active), rollout.generation, json.dumps(rollout.to_json())),
            )
            self._insert_events(conn, events)
            self._write_release(conn, release)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        return rollout

    def _update(self, rollout: Rollout, events: list[Event], release: Release | None) -> Rollout:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            expected = rollout.generation
            rollout.generation = expected + 1
            try:
                cur = conn.execute(
                    "UPDATE rollouts SET active = ?, generation = ?, data = ?, service = ? WHERE name = ? AND generation = ?",
                    (int(rollout.active), rollout.generation, json.dumps(rollout.to_json()), rollout.service, rollout.name, expected),
                )
            except sqlite3.IntegrityError as err:
                raise RolloutConflict(f"service {rollout.service!r} already has an active rollout") from err
            if cur.rowcount != 1:
                raise StaleRollout(f"rollout {rollout.name!r} changed concurrently (generation {expected})")
            self._insert_events(conn, events)
            self._write_release(conn, release)
            conn.execute("COMMIT")
        except BaseException:
            rollout.generation = expected
            _rollback(conn)
            raise
        return rollout

    async def create(self, rollout: Rollout, events: list[Event], *, release: Release | None = None) -> Rollout:
        return await self._write(self._create, rollout, events, release)

    async def update(self, rollout: Rollout, events: list[Event], *, release: Release | None = None) -> Rollout:
        return await self._write(self._update, rollout, events, release)

    def _put_release(self, release: Release, events: list[Event]) -> Release:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._write_release(conn, release)
            self._insert_events(conn, events)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return release

    async def put_release(self, release: Release, events: list[Event]) -> Release:
        """Write a release (and the events that explain it) when no rollout decision goes with it."""
        return await self._run(self._put_release, release, events)

    def _save_judge_state(self, rollout: str, run: int, step: int, state: dict[str, Any]) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO judge_states(rollout, run, step, at, data) VALUES (?, ?, ?, ?, ?)",
            (rollout, run, step, time.time(), json.dumps(state)),
        )

    async def save_judge_state(self, rollout: str, run: int, step: int, state: dict[str, Any]) -> None:
        await self._write(self._save_judge_state, rollout, run, step, state)

    # -- reads -------------------------------------------------------------------------
    def _get(self, name: str) -> Rollout:
        row = self._conn.execute("SELECT data FROM rollouts WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise RolloutNotFound(name)
        return Rollout.from_json(json.loads(row[0]))

    def _list(self) -> list[Rollout]:
        rows = self._conn.execute("SELECT data FROM rollouts ORDER BY name").fetchall()
        return [Rollout.from_json(json.loads(r[0])) for r in rows]

    def _judge_state(self, rollout: str, run: int, step: int) -> dict[str, Any] | None:
        row = self._conn.execute(
            "SELECT data FROM judge_states WHERE rollout = ? AND run = ? AND step = ?", (rollout, run, step)
        ).fetchone()
        return json.loads(row[0]) if row is not None else None

    async def judge_state(self, rollout: str, run: int, step: int) -> dict[str, Any] | None:
        return await self._run(self._judge_state, rollout, run, step)

    def _releases(self) -> list[Release]:
        rows = self._conn.execute("SELECT data FROM releases ORDER BY service").fetchall()
        return [Release.from_json(json.loads(r[0])) for r in rows]

    async def releases(self) -> list[Release]:
        return await self._run(self._releases)

    async def release(self, service: str) -> Release | None:
        return next((r for r in await self.releases() if r.service == service), None)

    def _events(self, name: str | None, after_seq: int, limit: int) -> list[Event]:
        if after_seq >= 2**63 - 1:  # past SQLite's INTEGER range: no event can follow it
            return []
        after_seq = max(after_seq, -(2**63))
        if name is None:
            rows = self._conn.execute(
                "SELECT seq, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
            ).fetchall()
        else:
            rows = self._conn.execute(
                "SELECT seq, data FROM events WHERE rollout = ? AND seq > ? ORDER BY seq LIMIT ?", (name, after_seq, limit)
            ).fetchall()
        out = []
        for seq, data in rows:
            event = Event(**json.loads(data))
            event.seq = seq
            out.append(event)
        return out

    async def get(self, name: str) -> Rollout:
        return await self._run(self._get, name)

    async def list(self) -> list[Rollout]:
        return await self._run(self._list)

    async def active(self) -> list[Rollout]:
        return [r for r in await self.list() if r.phase in ACTIVE]

    async def events(self, name: str, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        return await self._run(self._events, name, after_seq, limit)

    async def all_events(self, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        """Every rollout's events in global order: the feed for watchers (dashboard, replicas)."""
        return await self._run(self._events, None, after_seq, limit)

    async def close(self) -> None:
        """Close the database; safe to call twice."""
        if self._conn is None:
            return

        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._run(_close)
        self._executor.shutdown(wait=True)
