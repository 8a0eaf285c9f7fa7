"""Where rollouts, their events, releases and judge state live (SQLite by default)."""

from .sqlite import SQLiteStore, StaleRollout, Store

__all__ = ["SQLiteStore", "StaleRollout", "Store"]
