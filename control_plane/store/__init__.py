"""Where rollouts, their events, releases and judge state live (SQLite by default)."""

from .protocol import StaleRollout, Store
from .sqlite import SQLiteStore

__all__ = ["SQLiteStore", "StaleRollout", "Store"]
