"""Where rollouts and their events live: one interface, SQLite by default.

Every change is one transaction that updates the rollout row and appends its
event rows, guarded by the rollout's generation (optimistic concurrency), so
a crash leaves either the whole transition or none of it. SQLite runs in WAL
mode on its own thread: the asyncio loop never blocks on the disk. An
etcd-backed store for several control-plane replicas implements the same
:class:`Store` protocol.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from ..rollouts.model import ACTIVE, Event, Rollout, RolloutConflict, RolloutNotFound


class StaleRollout(Exception):
    """The rollout changed since it was read (another writer won)."""


class Store(Protocol):
    async def create(self, rollout: Rollout, events: list[Event]) -> Rollout: ...
    async def update(self, rollout: Rollout, events: list[Event]) -> Rollout: ...
    async def get(self, name: str) -> Rollout: ...
    async def list(self) -> list[Rollout]: ...
    async def events(self, name: str, after_seq: int = 0, limit: int = 1000) -> list[Event]: ...
    async def close(self) -> None: ...


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
"""


class SQLiteStore:
    """The default store: one SQLite file in WAL mode, written from one thread."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="weir-store")
        self._conn: sqlite3.Connection | None = None
        self._executor.submit(self._open).result()

    def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable against a process crash (kill -9) in WAL mode; only
        # an OS crash may lose the last commits.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(_SCHEMA)
        self._conn = conn

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

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

    def _create(self, rollout: Rollout, events: list[Event]) -> Rollout:
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
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return rollout

    def _update(self, rollout: Rollout, events: list[Event]) -> Rollout:
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
            conn.execute("COMMIT")
        except BaseException:
            rollout.generation = expected
            conn.execute("ROLLBACK")
            raise
        return rollout

    async def create(self, rollout: Rollout, events: list[Event]) -> Rollout:
        return await self._run(self._create, rollout, events)

    async def update(self, rollout: Rollout, events: list[Event]) -> Rollout:
        return await self._run(self._update, rollout, events)

    # -- reads -------------------------------------------------------------------------
    def _get(self, name: str) -> Rollout:
        row = self._conn.execute("SELECT data FROM rollouts WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise RolloutNotFound(name)
        return Rollout.from_json(json.loads(row[0]))

    def _list(self) -> list[Rollout]:
        rows = self._conn.execute("SELECT data FROM rollouts ORDER BY name").fetchall()
        return [Rollout.from_json(json.loads(r[0])) for r in rows]

    def _events(self, name: str, after_seq: int, limit: int) -> list[Event]:
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
