"""websession's stores as the benchmarks build them, and a store that counts its calls."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from websession.stores import CookieStore, Entry, MemoryStore, Meta

from .common import SECRET, Unavailable

#: The SQLite durability websession uses by default, stated with every figure.
SQLITE_SYNCHRONOUS = "NORMAL"


def make_store(kind: str, workdir: Path, label: str) -> Any:
    """A fresh websession store of ``kind`` with its own file or directory under ``workdir``."""
    if kind == "memory":
        return MemoryStore()
    if kind == "cookie":
        return CookieStore(secret_keys=[SECRET])
    if kind == "file":
        try:
            from websession.stores import FileStore
        except ImportError as exc:
            raise Unavailable(f"websession FileStore not importable: {exc}") from None
        directory = workdir / f"ws-files-{label}"
        directory.mkdir()
        return FileStore(str(directory))
    if kind == "sqlite":
        try:
            from websession.stores import SQLiteStore
        except ImportError as exc:
            raise Unavailable(f"websession SQLiteStore not importable: {exc}") from None
        return SQLiteStore(str(workdir / f"ws-{label}.db"), synchronous=SQLITE_SYNCHRONOUS)
    raise ValueError(f"unknown store kind {kind!r}")


def journal_mode(path: Path) -> str:
    """The journal mode recorded in an SQLite file (WAL persists in the file itself)."""
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("PRAGMA journal_mode").fetchone()
    finally:
        conn.close()
    return str(row[0])


class CountingStore:
    """Wraps a sync store and counts every call, to prove an untouched request makes none."""

    inline = True

    def __init__(self, store: Any) -> None:
        self._store = store
        self.max_payload_size = store.max_payload_size
        self.calls = 0

    def load(self, key: str) -> Entry | None:
        self.calls += 1
        entry: Entry | None = self._store.load(key)
        return entry

    def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        self.calls += 1
        version: int = self._store.save(
            key, payload, expected_version=expected_version, ttl=ttl, meta=meta
        )
        return version

    def touch(self, key: str, ttl: float) -> bool:
        self.calls += 1
        alive: bool = self._store.touch(key, ttl)
        return alive

    def delete(self, key: str) -> None:
        self.calls += 1
        self._store.delete(key)

    def delete_expired(self, limit: int = 1000) -> int:
        self.calls += 1
        removed: int = self._store.delete_expired(limit)
        return removed
