"""The floor for a network store: the raw client round trips a session store cannot avoid.

A read request has to fetch the session (one Redis ``GET``, one PostgreSQL
``SELECT`` by primary key); a write request fetches it and stores it back
(``GET`` + ``SET``, ``SELECT`` + ``UPDATE``). These are timed with the plain
clients (redis-py with hiredis, psycopg 3 in autocommit) on a record with the
very bytes websession wrote for the benchmark's payload, so the size on the
wire is the same. websession's figures are reported as multiples of them,
store-level (the store's own calls) and request-level (a whole request's
overhead over its framework's baseline), with sync clients for the WSGI
families and asyncio clients, on the benchmark's event loop, for the ASGI ones.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from websession.stores import Entry

from . import network
from .common import Looped, Unavailable, wsgi_environ, wsgi_request
from .websession_stores import CountingStore

#: The idle timeout (seconds) both websession and the raw writes give a record.
TTL = 1800
#: The raw reference row's key: 64 characters, like websession's hashed ids, but not hex.
RAW_KEY = "raw-reference-" + "r" * 50


@dataclass
class StorePair:
    """One store-level comparison: the raw client's work and websession's store doing the same."""

    store: str
    form: str  # "sync" or "async"
    operation: str  # "load", "save", "load + save"
    raw_name: str
    raw: Callable[[], None]
    ours: Callable[[], None]


def _seed(store: Any) -> str:
    """Make one real 'new' request through websession's WSGI middleware; the key it saved."""
    from websession.wsgi import SessionMiddleware

    from .wsgi_family import plain_app

    recorder = CountingStore(store)
    app = SessionMiddleware(
        plain_app(lambda environ: environ["websession.session"]), store=recorder
    )
    status = wsgi_request(app, wsgi_environ("/new"))[0]
    if not status.startswith("200") or recorder.last_saved is None:
        raise RuntimeError(f"seeding {store!r} gave {status} and saved nothing")
    return recorder.last_saved


class _Saver:
    """Saves one record again and again, each time with the version the last save gave.

    The version is read on the first call, so the pairs timed before it may
    move the record on meanwhile.
    """

    def __init__(self, store: Any, key: str) -> None:
        self.store = store
        self.key = key
        self.entry: Entry | None = None

    def save(self) -> None:
        entry = self.entry
        if entry is None:
            entry = self.entry = _must(self.store.load(self.key))
        entry.version = self.store.save(
            self.key, entry.payload, expected_version=entry.version, ttl=TTL, meta=entry.meta
        )

    async def asave(self) -> None:
        entry = self.entry
        if entry is None:
            entry = self.entry = _must(await self.store.load(self.key))
        entry.version = await self.store.save(
            self.key, entry.payload, expected_version=entry.version, ttl=TTL, meta=entry.meta
        )


def _ours(store: Any, astore: Any, key: str) -> dict[str, Callable[[], None]]:
    """websession's stores (sync and async) doing each operation on the seeded ``key``."""

    def load() -> None:
        store.load(key)

    def load_save() -> None:
        entry = _must(store.load(key))
        store.save(key, entry.payload, expected_version=entry.version, ttl=TTL, meta=entry.meta)

    async def aload() -> None:
        await astore.load(key)

    async def aload_save() -> None:
        entry = _must(await astore.load(key))
        await astore.save(
            key, entry.payload, expected_version=entry.version, ttl=TTL, meta=entry.meta
        )

    return {
        "sync load": load,
        "sync save": _Saver(store, key).save,
        "sync load + save": load_save,
        "async load": Looped(aload),
        "async save": Looped(_Saver(astore, key).asave),
        "async load + save": Looped(aload_save),
    }


def _pairs(
    name: str,
    raw_names: tuple[str, str, str],
    raw: dict[str, Callable[[], None]],
    araw: dict[str, Callable[[], None]],
    ours: dict[str, Callable[[], None]],
) -> list[StorePair]:
    """The six comparisons of a store: load, save, load + save; sync, then async.

    ``raw_names`` names the raw work of each operation: the keys of ``raw``
    (sync) and ``araw`` (async, :class:`Looped`).
    """
    return [
        StorePair(name, form, operation, raw_name, work[raw_name], ours[f"{form} {operation}"])
        for form, work in (("sync", raw), ("async", araw))
        for operation, raw_name in zip(("load", "save", "load + save"), raw_names, strict=True)
    ]


class RedisReferences:
    """Raw redis-py GET / SET on a copy of a websession record, and the store doing the same."""

    def __init__(self) -> None:
        network.require("redis")
        import redis
        import redis.asyncio

        from websession.stores import AsyncRedisStore, RedisStore

        prefix = network.redis_prefix("reference")
        self.store = RedisStore(network.REDIS_URL, prefix=prefix)
        self.key = _seed(self.store)
        self.client = redis.Redis.from_url(network.REDIS_URL)
        value = self.client.get(prefix + self.key)
        if not isinstance(value, bytes):
            raise RuntimeError("the seeded websession record is not in Redis")
        self.value = value
        self.raw_key = prefix + "raw"
        self.client.set(self.raw_key, value, ex=TTL)
        self.async_store = AsyncRedisStore(network.REDIS_URL, prefix=prefix)
        self.async_client = redis.asyncio.Redis.from_url(network.REDIS_URL)
        network.on_close(self.store.close, at_end=True)
        network.on_close(self.client.close, at_end=True)
        network.on_aclose(self.async_store.aclose, at_end=True)
        network.on_aclose(self.async_client.aclose, at_end=True)

    # raw work, sync and async
    def get(self) -> None:
        self.client.get(self.raw_key)

    def set(self) -> None:
        self.client.set(self.raw_key, self.value, ex=TTL)

    def get_set(self) -> None:
        self.client.get(self.raw_key)
        self.client.set(self.raw_key, self.value, ex=TTL)

    async def aget(self) -> None:
        await self.async_client.get(self.raw_key)

    async def aset(self) -> None:
        await self.async_client.set(self.raw_key, self.value, ex=TTL)

    async def aget_set(self) -> None:
        await self.async_client.get(self.raw_key)
        await self.async_client.set(self.raw_key, self.value, ex=TTL)

    def request_reference(self, scenario: str, *, asynchronous: bool) -> Callable[[], None] | None:
        """The raw work a request of ``scenario`` cannot avoid (None: nothing to compare)."""
        if asynchronous:
            table: dict[str, Callable[[], Awaitable[None]]] = {
                "read": self.aget,
                "write": self.aget_set,
                "new": self.aset,
            }
            make = table.get(scenario)
            return Looped(make) if make is not None else None
        return {"read": self.get, "write": self.get_set, "new": self.set}.get(scenario)

    def pairs(self) -> list[StorePair]:
        raw = {"GET": self.get, "SET": self.set, "GET+SET": self.get_set}
        araw = {
            "GET": Looped(self.aget),
            "SET": Looped(self.aset),
            "GET+SET": Looped(self.aget_set),
        }
        ours = _ours(self.store, self.async_store, self.key)
        return _pairs("redis", ("GET", "SET", "GET+SET"), raw, araw, ours)


_SELECT = (
    "SELECT payload, version, created_at, updated_at, expires_at, user_id, ip, user_agent "
    'FROM "{schema}"."{table}" WHERE session_key = %s'
)
_UPDATE = (
    'UPDATE "{schema}"."{table}" SET payload = %s, version = version + 1, updated_at = %s, '
    "expires_at = %s WHERE session_key = %s"
)
_COPY = (
    'INSERT INTO "{schema}"."{table}" (session_key, payload, version, created_at, updated_at, '
    "expires_at, user_id, ip, user_agent) SELECT %s, payload, version, created_at, updated_at, "
    'expires_at, user_id, ip, user_agent FROM "{schema}"."{table}" WHERE session_key = %s'
)


def store_connection(store: Any) -> Any:
    """The psycopg connection a websession SQL store holds between calls, or None.

    The raw PostgreSQL reference runs on that very connection, so on the same
    server backend process: on a small machine a connection's round trip
    depends on where the scheduler puts its backend relative to the client
    (two connections answered an identical ``SELECT 1`` in 22 µs and 65 µs on
    the development machine), and a reference on a connection of its own would
    measure that luck instead of the store. ``_idle`` is SQLStore's stack of
    held connections: a private detail, read here and nowhere else.
    """
    held = getattr(store, "_idle", None)
    if not held:
        return None
    return held[-1][1].driver_connection


class _PgRaw:
    """SELECT and UPDATE by primary key of the reference row, on one given psycopg connection."""

    def __init__(self, select_sql: str, update_sql: str, payload: bytes) -> None:
        self.select_sql = select_sql
        self.update_sql = update_sql
        self.payload = payload

    def _update_params(self) -> tuple[Any, ...]:
        now = time.time()
        return (self.payload, now, now + TTL, RAW_KEY)

    def sync(self, conn: Any) -> dict[str, Callable[[], None]]:
        cursor = conn.cursor()
        select_sql, update_sql, params = self.select_sql, self.update_sql, self._update_params

        def select() -> None:
            cursor.execute(select_sql, (RAW_KEY,)).fetchone()

        def update() -> None:
            cursor.execute(update_sql, params())

        def select_update() -> None:
            cursor.execute(select_sql, (RAW_KEY,)).fetchone()
            cursor.execute(update_sql, params())

        return {"SELECT": select, "UPDATE": update, "SELECT+UPDATE": select_update}

    def asynchronous(self, conn: Any) -> dict[str, Callable[[], None]]:
        cursor = conn.cursor()
        select_sql, update_sql, params = self.select_sql, self.update_sql, self._update_params

        async def select() -> None:
            await (await cursor.execute(select_sql, (RAW_KEY,))).fetchone()

        async def update() -> None:
            await cursor.execute(update_sql, params())

        async def select_update() -> None:
            await (await cursor.execute(select_sql, (RAW_KEY,))).fetchone()
            await cursor.execute(update_sql, params())

        return {
            "SELECT": Looped(select),
            "UPDATE": Looped(update),
            "SELECT+UPDATE": Looped(select_update),
        }


class PostgresReferences:
    """Raw psycopg SELECT / UPDATE of one row of websession's table, and the store doing the same.

    The raw row is a copy of a row websession wrote (same table, same columns,
    same bytes), read and written by primary key in autocommit, as the store
    does, on the connection of the store it is compared with (see
    :func:`store_connection`).
    """

    def __init__(self) -> None:
        network.require("postgresql")
        from websession.stores import AsyncSQLStore, SQLStore

        names = {"schema": network.PG_SCHEMA, "table": network.WS_TABLE}
        self.store = SQLStore(
            network.POSTGRES_URL, table=network.WS_TABLE, schema=network.PG_SCHEMA
        )
        self.store.create_table()
        self.key = _seed(self.store)
        with network.pg_connect() as conn:
            conn.execute(_COPY.format(**names), (RAW_KEY, self.key))
            row = conn.execute(_SELECT.format(**names), (RAW_KEY,)).fetchone()
        if row is None:
            raise RuntimeError("the seeded websession row is not in PostgreSQL")
        self.raw = _PgRaw(_SELECT.format(**names), _UPDATE.format(**names), bytes(row[0]))
        self.async_store = AsyncSQLStore(
            network.POSTGRES_URL, table=network.WS_TABLE, schema=network.PG_SCHEMA
        )
        network.on_close(self.store.close, at_end=True)
        network.on_aclose(self.async_store.aclose, at_end=True)

    def _raw_for(self, store: Any, *, asynchronous: bool) -> dict[str, Callable[[], None]]:
        conn = store_connection(store)
        if conn is None:
            raise Unavailable(f"{store!r} holds no connection to run the raw reference on")
        return self.raw.asynchronous(conn) if asynchronous else self.raw.sync(conn)

    def request_reference(self, scenario: str, *, asynchronous: bool) -> Callable[[], None] | None:
        """The raw work a request of ``scenario`` cannot avoid, on the case's own connection."""
        name = {"read": "SELECT", "write": "SELECT+UPDATE"}.get(scenario)
        if name is None:
            return None
        from .websession_stores import latest

        return self._raw_for(latest["postgresql"], asynchronous=asynchronous)[name]

    def pairs(self) -> list[StorePair]:
        ours = _ours(self.store, self.async_store, self.key)
        # One call each first, so both stores hold the connection the raw work shares.
        ours["sync load"]()
        ours["async load"]()
        raw = self._raw_for(self.store, asynchronous=False)
        araw = self._raw_for(self.async_store, asynchronous=True)
        return _pairs("postgresql", ("SELECT", "UPDATE", "SELECT+UPDATE"), raw, araw, ours)


def _must(entry: Entry | None) -> Entry:
    if entry is None:
        raise RuntimeError("the seeded websession session vanished during the benchmark")
    return entry


_references: dict[str, Any] = {}


def references(kind: str) -> Any:
    """The (shared, built once) references for ``kind``; raises Unavailable without a server."""
    if kind not in _references:
        if kind == "redis":
            _references[kind] = RedisReferences()
        elif kind == "postgresql":
            _references[kind] = PostgresReferences()
        else:
            raise Unavailable(f"no raw reference for the {kind} store")
    return _references[kind]


def forget() -> None:
    """Drop the shared references (their clients are closed by ``network.cleanup``)."""
    _references.clear()
