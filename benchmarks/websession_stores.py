"""websession's stores as the benchmarks build them, and a store that counts its calls."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from websession.stores import CookieStore, Entry, MemoryStore, Meta

from . import network
from .common import SECRET, bench_loop, needs

#: The SQLite durability websession uses by default, stated with every figure.
SQLITE_SYNCHRONOUS = "NORMAL"
#: The network store built last, per kind: the case being measured, whose connection the
#: raw PostgreSQL reference shares (see ``raw_network.store_connection``).
latest: dict[str, Any] = {}


def make_store(kind: str, workdir: Path, label: str) -> Any:
    """A fresh websession store of ``kind`` with its own file or directory under ``workdir``.

    Network stores get a key prefix of their own (Redis) or the run's schema
    (PostgreSQL), and are closed after the case (see :mod:`benchmarks.network`).
    """
    if kind == "memory":
        return MemoryStore()
    if kind == "cookie":
        return CookieStore(secret_keys=[SECRET])
    if kind == "file":
        with needs("websession FileStore not importable"):
            from websession.stores import FileStore
        directory = workdir / f"ws-files-{label}"
        directory.mkdir()
        return FileStore(str(directory))
    if kind == "sqlite":
        with needs("websession SQLiteStore not importable"):
            from websession.stores import SQLiteStore
        return SQLiteStore(str(workdir / f"ws-{label}.db"), synchronous=SQLITE_SYNCHRONOUS)
    if kind == "redis":
        network.require("redis")
        from websession.stores import RedisStore

        redis_store = RedisStore(network.REDIS_URL, prefix=network.redis_prefix(f"ws-{label}"))
        network.on_close(redis_store.close)
        return redis_store
    if kind == "postgresql":
        network.require("postgresql")
        from websession.stores import SQLStore

        sql_store = SQLStore(network.POSTGRES_URL, table=network.WS_TABLE, schema=network.PG_SCHEMA)
        sql_store.create_table()
        network.on_close(sql_store.close)
        latest[kind] = sql_store
        return sql_store
    raise ValueError(f"unknown store kind {kind!r}")


def make_async_store(kind: str, label: str) -> Any:
    """The async form of a network store, bound to the benchmark's event loop."""
    if kind == "redis":
        network.require("redis")
        from websession.stores import AsyncRedisStore

        redis_store = AsyncRedisStore(
            network.REDIS_URL, prefix=network.redis_prefix(f"ws-async-{label}")
        )
        network.on_aclose(redis_store.aclose)
        return redis_store
    if kind == "postgresql":
        network.require("postgresql")
        from websession.stores import AsyncSQLStore

        sql_store = AsyncSQLStore(
            network.POSTGRES_URL, table=network.WS_TABLE, schema=network.PG_SCHEMA
        )
        bench_loop().run_until_complete(sql_store.create_table())
        network.on_aclose(sql_store.aclose)
        latest[kind] = sql_store
        return sql_store
    raise ValueError(f"{kind!r} has no async store here")


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
        #: The key of the last save, so a benchmark can find the record a request wrote.
        self.last_saved: str | None = None

    def load(self, key: str) -> Entry | None:
        self.calls += 1
        entry: Entry | None = self._store.load(key)
        return entry

    def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        self.calls += 1
        self.last_saved = key
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
