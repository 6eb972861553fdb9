"""Run every SQLAlchemy-backed peer on SQLite in the mode websession uses: WAL, synchronous=NORMAL.

Comparing stores only means something when they make the same durability
promise, so peers get the same journal and sync settings as websession's
SQLiteStore, on every connection their engine opens.
"""

from __future__ import annotations

from typing import Any

_installed = False


def use_wal_normal_for_sqlalchemy() -> bool:
    """Register the pragmas on every SQLAlchemy SQLite connection; False without SQLAlchemy."""
    global _installed
    if _installed:
        return True
    try:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
    except ImportError:
        return False

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        if type(dbapi_connection).__module__.startswith("sqlite3"):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    event.listen(Engine, "connect", on_connect)
    _installed = True
    return True
