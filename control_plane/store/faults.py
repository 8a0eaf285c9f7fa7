"""What can go wrong under a store file, said plainly: gone, replaced, corrupt, full, unwritable.

Why a module: SQLite reports these as terse codes ("database or disk is full",
"file is not a database") from deep inside a transaction, and a store that
keeps running on a deleted file accepts writes that no restart will ever see.
The SQLite store checks for each of these and raises :class:`StoreUnavailable`
(503 in the API) with the cause and what to do; ``/readyz`` reports the same.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass

from ..errors import Unavailable

__all__ = ["FileIdentity", "StoreUnavailable", "describe_sqlite_error"]

# SQLite primary result codes (the low byte of an extended code).
SQLITE_PERM = 3
SQLITE_READONLY = 8
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_NOTADB = 26


class StoreUnavailable(Unavailable):
    """The store cannot serve: the message names the file, the cause and what to do."""

    kind = "store-unavailable"
    title = "Store unavailable"


@dataclass(frozen=True)
class FileIdentity:
    """Which file a path named when the store opened it (device and inode)."""

    device: int
    inode: int

    @classmethod
    def of(cls, path: str) -> "FileIdentity":
        st = os.stat(path)
        return cls(st.st_dev, st.st_ino)

    def check(self, path: str) -> str | None:
        """None while ``path`` is still this file; otherwise what happened to it."""
        try:
            now = FileIdentity.of(path)
        except FileNotFoundError:
            return f"the database file {path} was deleted while Weir was running"
        except OSError as err:
            return f"the database file {path} cannot be checked: {err.strerror or err}"
        if now != self:
            return f"the database file {path} was replaced by another file while Weir was running"
        return None


def is_corruption(err: BaseException) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)


def describe_sqlite_error(err: sqlite3.Error, path: str) -> str | None:
    """A sentence for a storage fault (full, corrupt, I/O, read-only); None for other errors (bugs, constraints)."""
    code = getattr(err, "sqlite_errorcode", None)
    primary = code & 0xFF if code is not None else None
    cause = f"SQLite: {err}"
    if primary == SQLITE_FULL:
        return (f"the disk holding {path} is full ({cause}); nothing was written. Free space on that disk: "
                "Weir retries by itself")
    if primary in (SQLITE_CORRUPT, SQLITE_NOTADB):
        return (f"the database file {path} is corrupt ({cause}); stop Weir and restore the file from a backup, "
                f"or move it aside (mv {path} {path}.corrupt) to start with an empty store")
    if primary == SQLITE_IOERR:
        return f"cannot read or write {path}: disk I/O error ({cause}); check the disk and its mount"
    if primary in (SQLITE_READONLY, SQLITE_PERM, SQLITE_CANTOPEN):
        return f"cannot write {path} ({cause}); check that the file and its directory are writable by Weir"
    return None
