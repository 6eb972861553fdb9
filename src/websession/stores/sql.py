"""SQLStore and AsyncSQLStore: sessions in PostgreSQL, MySQL/MariaDB or SQLite (SQLAlchemy Core).

One row per session in one table (``websession_sessions`` by default)::

    session_key  VARCHAR(64) primary key   the hash of the session id, never the id
    payload      BYTEA / LONGBLOB / BLOB   the codec's bytes, returned untouched
    version      BIGINT                    compare-and-swap counter
    created_at   DOUBLE PRECISION          seconds since the epoch
    updated_at   DOUBLE PRECISION          last seen
    expires_at   DOUBLE PRECISION          indexed: load filters on it, gc deletes by it
    user_id      VARCHAR(255), indexed     the per-user index ("log out everywhere")
    ip           VARCHAR(255)
    user_agent   TEXT

Times are float epoch seconds, not TIMESTAMP columns, because every other
store and the session flow already speak epoch floats (``Entry.expires``):
no time-zone conversion, no driver-specific datetime types, the store's own
injectable clock decides "now" (so tests move time without sleeping), and a
DOUBLE keeps microseconds for the next quarter of a billion years.

The table is created only on request, never inside a web request:
``websession db init --store URL`` or :meth:`SQLStore.create_table`. A
second table, ``<table>_schema``, records the schema version, and
``websession db upgrade`` (:meth:`SQLStore.upgrade`) runs the steps in
:data:`MIGRATIONS` that the database has not had yet.

Every operation is one statement on the happy path: ``load`` is one
``SELECT ... WHERE session_key = :k AND expires_at > :now``; ``save`` is one
``INSERT`` (create) or one version-checked ``UPDATE ... SET version =
version + 1 WHERE session_key = :k AND version = :expected AND expires_at >
:now``. Only when that touches no row does a second statement find out why
(Conflict or Gone, or an expired row that a create may take over). The store
never parses a payload, so rows written by a newer websession load fine.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import inspect
import logging
import shlex
import threading
from collections.abc import AsyncIterator, Callable, Collection, Generator, Iterator
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, QueuePool
from sqlalchemy.util import greenlet_spawn

from ..errors import Conflict, Gone, SessionConfigError, StoreError, StoreUnavailable
from ..urls import mask_url
from .base import Clock, Entry, Meta, check_limit, default_clock, prefix_upper_bound

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "AsyncSQLStore",
    "SQLStore",
    "SchemaChange",
    "async_url",
    "is_sql_url",
    "sync_url",
]

log = logging.getLogger("websession")
_T = TypeVar("_T")

DEFAULT_TABLE = "websession_sessions"
#: Seconds to wait for a connection to a database server built from a URL.
DEFAULT_CONNECT_TIMEOUT = 5
#: MySQL/MariaDB: half the servers' default 16 MiB ``max_allowed_packet``, because the
#: driver sends a payload escaped inside the statement, up to twice its size.
MYSQL_MAX_PAYLOAD = 8 * 1024 * 1024
# 55 characters leave room for the "_schema" / "_expires_at" suffixes within the
# 63-character identifier limit of PostgreSQL.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_MAX_NAME = 52
_MYSQL = ("mysql", "mariadb")
# Schemes websession gives to other stores, even with a "+" (redis+cluster://).
_OTHER_SCHEMES = frozenset({"memory", "file", "cookie", "redis", "rediss", "memcached"})
_SYNC_DRIVERS = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
    "sqlite": "sqlite+pysqlite",
}
_ASYNC_DRIVERS = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg2": "postgresql+psycopg",
    "postgresql+pg8000": "postgresql+psycopg",
    "mysql": "mysql+asyncmy",
    "mysql+pymysql": "mysql+asyncmy",
    "mysql+mysqldb": "mysql+asyncmy",
    "mariadb": "mariadb+asyncmy",
    "mariadb+pymysql": "mariadb+asyncmy",
    "mariadb+mysqldb": "mariadb+asyncmy",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
}


def is_sql_url(url: str) -> bool:
    """Whether ``url`` names an SQLAlchemy database (and so :class:`SQLStore`).

    ``postgresql://``, ``mysql://``, ``mariadb://`` and any ``dialect+driver://``
    (``sqlite+pysqlite://``, ``postgresql+asyncpg://``) except websession's own
    schemes with a ``+`` (``redis+cluster://``). Plain ``sqlite://`` is the
    embedded :class:`~websession.stores.SQLiteStore`.
    """
    if not isinstance(url, str) or "://" not in url:
        return False
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("postgres", "postgresql", "mysql", "mariadb"):
        return True
    return "+" in scheme and scheme.split("+", 1)[0] not in _OTHER_SCHEMES


def sync_url(url: str) -> str:
    """``url`` with websession's sync driver when it names none (``postgresql://`` -> psycopg)."""
    return _with_driver(url, _SYNC_DRIVERS)


def async_url(url: str) -> str:
    """``url`` with an asyncio driver: psycopg stays; pymysql -> asyncmy, pysqlite -> aiosqlite."""
    return _with_driver(url, _ASYNC_DRIVERS)


def _with_driver(url: str, drivers: dict[str, str]) -> str:
    scheme, sep, rest = url.partition("://")
    replacement = drivers.get(scheme.lower())
    return f"{replacement}{sep}{rest}" if replacement else url


class SchemaChange(NamedTuple):
    """Schema versions before and after :meth:`SQLStore.create_table` or ``upgrade``.

    ``before == 0``: there was no session table.
    """

    before: int
    after: int


class _Schema:
    """The session table and its schema-version record, for one table name and schema."""

    def __init__(self, name: str, schema: str | None) -> None:
        self.metadata = sa.MetaData(schema=schema)
        # Hex keys compare byte-wise everywhere, so the prefix range in entries()
        # matches what startswith() would; user ids compare exactly (case matters).
        key_type = (
            sa.String(64)
            .with_variant(sa.String(64, collation="C"), "postgresql")
            .with_variant(mysql.VARCHAR(64, charset="ascii", collation="ascii_bin"), *_MYSQL)
        )
        user_type = sa.String(255).with_variant(
            mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"), *_MYSQL
        )
        self.sessions = sa.Table(
            name,
            self.metadata,
            sa.Column("session_key", key_type, primary_key=True),
            sa.Column(
                "payload",
                sa.LargeBinary().with_variant(mysql.LONGBLOB(), *_MYSQL),
                nullable=False,
            ),
            sa.Column("version", sa.BigInteger, nullable=False),
            sa.Column("created_at", sa.Double, nullable=False),
            sa.Column("updated_at", sa.Double, nullable=False),
            sa.Column("expires_at", sa.Double, nullable=False),
            sa.Column("user_id", user_type),
            sa.Column("ip", sa.String(255)),
            sa.Column("user_agent", sa.Text),
            sa.Index(f"{name}_expires_at", "expires_at"),
            sa.Index(f"{name}_user_id", "user_id"),
            mysql_engine="InnoDB",
            mysql_charset="utf8mb4",
        )
        self.record = sa.Table(
            f"{name}_schema",
            self.metadata,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("schema_version", sa.Integer, nullable=False),
            sa.Column("migrated_at", sa.Double, nullable=False),
            mysql_engine="InnoDB",
        )


# -- migrations ------------------------------------------------------------------------------


def _create_version_1(conn: Connection, schema: _Schema) -> None:
    schema.sessions.create(conn, checkfirst=True)


#: Schema migrations in order: entry ``n`` brings a database from version ``n`` to ``n + 1``.
#: A new schema version is one function appended here (it receives a connection and the
#: tables as the new version defines them); ``websession db upgrade`` runs the missing ones.
MIGRATIONS: list[Callable[[Connection, _Schema], None]] = [_create_version_1]
SCHEMA_VERSION = len(MIGRATIONS)


def _current_version(conn: Connection, schema: _Schema) -> int:
    inspector = sa.inspect(conn)
    sessions = schema.sessions
    if inspector.has_table(schema.record.name, schema=schema.record.schema):
        row = conn.execute(
            sa.select(schema.record.c.schema_version).where(schema.record.c.id == 1)
        ).first()
        if row is not None:
            return int(row[0])
    # A session table without a record was made by hand from version 1's definition.
    return 1 if inspector.has_table(sessions.name, schema=sessions.schema) else 0


def _migrate(conn: Connection, schema: _Schema, clock: Clock, *, upgrade: bool) -> SchemaChange:
    """Bring the schema to the current version (``upgrade``) or only create a missing one."""
    before = _current_version(conn, schema)
    if before > SCHEMA_VERSION:
        raise StoreError(
            f"the session table {schema.sessions.fullname!r} has schema version {before}, newer "
            f"than this websession knows ({SCHEMA_VERSION}); upgrade websession"
        )
    target = SCHEMA_VERSION if upgrade or before == 0 else before
    schema.record.create(conn, checkfirst=True)
    record = schema.record
    for number in range(before + 1, target + 1):
        MIGRATIONS[number - 1](conn, schema)
        _write_version(conn, record, number, clock())
        # Each step is committed on its own, so a failure later keeps the steps before it.
        conn.commit()
    if target == before:
        _write_version(conn, record, before, None)
        conn.commit()
    return SchemaChange(before, target)


def _write_version(conn: Connection, record: sa.Table, version: int, now: float | None) -> None:
    exists = conn.execute(sa.select(record.c.schema_version).where(record.c.id == 1)).first()
    if exists is None:
        conn.execute(sa.insert(record).values(id=1, schema_version=version, migrated_at=now or 0.0))
    elif now is not None:
        conn.execute(
            sa.update(record)
            .where(record.c.id == 1)
            .values(schema_version=version, migrated_at=now)
        )


# -- the statements ----------------------------------------------------------------------------

_ROWS = 0  # the step wants the rowcount
_FIRST = 1  # the first row, or None
_INSERT = 2  # True, or False on a unique violation
_ALL = 3  # every row
_FETCHING = (_FIRST, _ALL)  # the modes that read rows


class _Statement:
    """One statement: its Core form, and its SQL text compiled once for the engine's dialect.

    The text is what the direct path hands the driver; values still travel as
    bound parameters, never formatted into the SQL. ``text`` is None for a
    statement whose SQL depends on its values (an expanding ``IN``), which
    always goes through Core.
    """

    __slots__ = ("core", "fixed", "order", "pg", "text")

    def __init__(
        self,
        core: Any,
        dialect: sa.Dialect,
        *,
        direct: bool = True,
        numbered: sa.Dialect | None = None,
    ) -> None:
        self.core = core
        self.text: str | None = None
        #: The statement as sent on libpq directly (PostgreSQL with psycopg; see _pq).
        self.pg: Any = None
        self.order: tuple[str, ...] | None = None
        self.fixed: dict[str, Any] = {}
        if direct:
            compiled = core.compile(dialect=dialect)
            self.text = compiled.string
            # Constants in the statement (version = 1, version + 1) are parameters too.
            self.fixed = {
                name: bind.effective_value
                for bind, name in compiled.bind_names.items()
                if not bind.required and bind.effective_value is not None
            }
            if compiled.positional:
                self.order = tuple(compiled.positiontup or ())
            if numbered is not None:  # on libpq: the $n dialect of _pq.numbered
                from ._pq import pg_statement

                self.pg = pg_statement(core, numbered)

    def bind(self, params: dict[str, Any]) -> Any:
        """The parameters in the form the driver's paramstyle wants."""
        if self.fixed:
            params = {**self.fixed, **params}
        order = self.order
        if order is None:
            return params
        return tuple([params[name] for name in order])


#: One statement to run: (statement, params, mode). A plain tuple: a NamedTuple's
#: constructor costs ~3,000 instructions, paid on every load and save.
_Step = tuple[_Statement, dict[str, Any], int]


#: Yielded by a save's steps to ask the driver whether a step was retried after a disconnect.
_RETRIED = object()
#: What a failed attempt comes to when the step runs once more (see _SQLCommon._recover).
_AGAIN = object()


class _Statements:
    """Every statement the store runs, built (and compiled) once per store."""

    def __init__(self, table: sa.Table, dialect: sa.Dialect, *, pq: bool = False) -> None:
        numbered = None
        if pq:
            from ._pq import numbered as numbered_dialect

            numbered = numbered_dialect(dialect)
        c = table.c
        key = c.session_key == sa.bindparam("p_key")
        live = c.expires_at > sa.bindparam("p_now")
        self.columns = (
            c.payload, c.version, c.created_at, c.updated_at, c.expires_at,
            c.user_id, c.ip, c.user_agent,
        )  # fmt: skip

        def prepare(core: Any, *, direct: bool = True) -> _Statement:
            return _Statement(core, dialect, direct=direct, numbered=numbered)

        self.load = prepare(sa.select(*self.columns).where(key, live))
        self.live_version = prepare(sa.select(c.version).where(key, live))
        self.live_payload = prepare(sa.select(c.version, c.payload).where(key, live))
        values = {
            "payload": sa.bindparam("p_payload", type_=c.payload.type),
            "created_at": sa.bindparam("p_created", type_=c.created_at.type),
            "updated_at": sa.bindparam("p_seen", type_=c.updated_at.type),
            "expires_at": sa.bindparam("p_expires", type_=c.expires_at.type),
            "user_id": sa.bindparam("p_user", type_=c.user_id.type),
            "ip": sa.bindparam("p_ip", type_=c.ip.type),
            "user_agent": sa.bindparam("p_agent", type_=c.user_agent.type),
        }
        self.insert = prepare(
            sa.insert(table).values(
                session_key=sa.bindparam("p_key", type_=c.session_key.type), version=1, **values
            )
        )
        self.take_over = prepare(
            sa.update(table)
            .where(key, c.expires_at <= sa.bindparam("p_now"))
            .values(version=1, **values)
        )
        self.update = prepare(
            sa.update(table)
            .where(key, c.version == sa.bindparam("p_expected"), live)
            .values(version=c.version + 1, **values)
        )
        self.delete_version = prepare(
            sa.delete(table).where(key, c.version == sa.bindparam("p_expected"), live)
        )
        self.touch = prepare(
            sa.update(table)
            .where(key, live)
            .values(
                expires_at=sa.bindparam("p_expires", type_=c.expires_at.type),
                updated_at=sa.bindparam("p_seen", type_=c.updated_at.type),
            )
        )
        self.delete = prepare(sa.delete(table).where(key))
        self.delete_expired = prepare(self._delete_expired(table, dialect))
        # The per-user index: each one statement on the user_id index.
        user = c.user_id == sa.bindparam("p_user", type_=c.user_id.type)
        self.sessions_for = prepare(
            sa.select(c.session_key, *self.columns)
            .where(user, live)
            .order_by(c.updated_at.desc(), c.session_key)
        )
        self.revoke = prepare(sa.delete(table).where(key, live))
        self.revoke_user = prepare(
            sa.delete(table).where(
                user,
                live,
                c.session_key.not_in(sa.bindparam("p_keep", expanding=True)),
            ),
            direct=False,  # the SQL depends on how many keys are kept
        )

    @staticmethod
    def _delete_expired(table: sa.Table, dialect: sa.Dialect) -> Any:
        c = table.c
        if dialect.name in _MYSQL:
            # MySQL refuses LIMIT in an IN subquery, and its own DELETE ... LIMIT
            # walks the expires_at index, so each batch locks only what it deletes.
            name = dialect.identifier_preparer.format_table(table)
            return sa.text(  # the table name is checked and quoted; values are parameters
                f"DELETE FROM {name} WHERE expires_at <= :p_now ORDER BY expires_at LIMIT :p_limit"  # noqa: S608
            )
        batch = (
            sa.select(c.session_key)
            .where(c.expires_at <= sa.bindparam("p_now"))
            .order_by(c.expires_at)
            .limit(sa.bindparam("p_limit"))
        )
        if dialect.name == "postgresql":
            # Rows a request holds locked are left for the next run instead of waited for.
            batch = batch.with_for_update(skip_locked=True)
        return sa.delete(table).where(c.session_key.in_(batch.scalar_subquery()))


def _entry(row: Any) -> Entry:
    payload = row[0]
    if not isinstance(payload, bytes):
        payload = bytes(payload)  # some drivers hand out memoryview or bytearray
    return Entry(payload, row[1], row[2], row[3], row[4], row[5], row[6], row[7])


def _loaded(row: Any) -> Entry | None:
    if row is None or type(row) is Entry:  # on libpq the load reads its row into an Entry
        return row
    return _entry(row)


def _missing_table(exc: sa_exc.SQLAlchemyError) -> bool:
    orig = getattr(exc, "orig", None)
    if orig is None:
        return False
    if getattr(orig, "sqlstate", None) == "42P01":  # PostgreSQL undefined_table
        return True
    args = getattr(orig, "args", ())
    if args and args[0] == 1146:  # MySQL ER_NO_SUCH_TABLE
        return True
    text = str(orig)
    return "no such table" in text or "UndefinedTableError" in type(orig).__name__


def _reason(exc: sa_exc.SQLAlchemyError) -> str:
    """The driver's own message, first line only: SQLAlchemy's adds the statement."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_name(kind: str, option: str, value: Any) -> None:
    if (
        not isinstance(value, str)
        or not value
        or len(value) > _MAX_NAME
        or value[0].isdigit()
        or not set(value) <= _NAME_CHARS
    ):
        raise SessionConfigError(
            f"{kind} option {option}={value!r} is not a plain SQL identifier "
            f"(letters, digits and underscores, at most {_MAX_NAME}, not starting with a digit)"
        )


# -- what the two stores share -------------------------------------------------------------------


class _SQLCommon(abc.ABC):
    """Configuration, statements and every operation, written once.

    Each operation is a generator of steps (``_save_steps``, ``_touch_steps``,
    ...): it yields the statements to run and receives their results, so what a
    call does and decides is written once (``load`` is a single step,
    ``_load_step``). :class:`SQLStore` carries the steps out with :meth:`_drive`,
    :class:`AsyncSQLStore` with ``_adrive``; the two share the retry policy
    (:meth:`_recover`) and the handling of held connections.
    """

    inline = False
    max_payload_size: int | None = None
    #: The URL scheme drivers this form swaps in when a URL names none.
    _drivers = _SYNC_DRIVERS
    #: Drivers whose own asyncio connection the async store awaits directly (see _native).
    _native_drivers: frozenset[str] = frozenset()
    #: Whether an engine the store builds runs in autocommit (see _build_engine).
    _autocommits = False
    engine: Any

    def __init__(
        self,
        engine_or_url: Any,
        *,
        table: str = DEFAULT_TABLE,
        schema: str | None = None,
        clock: Clock = default_clock,
        max_payload_size: int | None = None,
        connect_timeout: float | None = None,
        **engine_options: Any,
    ) -> None:
        kind = type(self).__name__
        if isinstance(engine_or_url, str):
            url = self._parse(kind, engine_or_url)
            table = url.query.get("table", table)  # type: ignore[assignment]
            schema = url.query.get("schema", schema)  # type: ignore[assignment]
            url = url.difference_update_query(["table", "schema"])
            self.engine = self._build_engine(kind, url, connect_timeout, engine_options)
            self._owned = True
        else:
            if connect_timeout is not None or engine_options:
                raise SessionConfigError(
                    f"{kind}: connect_timeout and engine options apply only to an engine built "
                    "from a URL; set them on the engine you pass"
                )
            self._check_engine(engine_or_url)
            self.engine = engine_or_url
            self._owned = False
        _check_name(kind, "table", table)
        if schema is not None:
            _check_name(kind, "schema", schema)
        self.table_name = table
        self.schema = schema
        self._clock = clock
        dialect: sa.Dialect = self.engine.dialect
        self.dialect = dialect.name
        if dialect.name == "sqlite":
            self.inline = True  # a local file: a call costs less than a thread hop
        if max_payload_size is not None:
            if (
                isinstance(max_payload_size, bool)
                or not isinstance(max_payload_size, int)
                or (max_payload_size < 1)
            ):
                raise SessionConfigError(
                    f"{kind} option max_payload_size={max_payload_size!r} must be bytes > 0"
                )
            self.max_payload_size = max_payload_size
        elif dialect.name in _MYSQL:
            self.max_payload_size = MYSQL_MAX_PAYLOAD
        # Engines the store built run in autocommit (every operation is one atomic
        # statement, so BEGIN/COMMIT would only add round trips); an engine you pass,
        # or an isolation level you set, keeps its settings and each operation is a
        # transaction of its own.
        self._autocommit = self._owned and self._autocommits
        self._schema = _Schema(table, schema)
        #: The session table, for queries of your own (read-only use recommended).
        self.table = self._schema.sessions
        #: Both tables (sessions and schema record), e.g. for ``metadata.drop_all(engine)``.
        self.metadata = self._schema.metadata
        # Engines the store built run the hot statements on the pooled DBAPI connection
        # directly (see _direct_attempt), which commits nothing: in autocommit only. An
        # engine you pass goes through Core, so its events, instrumentation and
        # transaction settings see every statement.
        self._direct = self._autocommit
        #: The sync engine every operation runs on (the async store's ``sync_engine``).
        self._engine: Engine = self._sync_engine(self.engine)
        #: Connections held checked out between calls, each with its cursor (see _direct_attempt).
        self._idle: collections.deque[tuple[Any, Any, Any]] = collections.deque()
        pool = self._engine.pool
        size = getattr(pool, "size", None)
        # None for pools that keep nothing (NullPool) or that must check every
        # checkout (pool_pre_ping=True, if you ask for it): those always use the pool.
        self._keep = size() if callable(size) and not pool._pre_ping else 0
        #: How many callers are checking a connection out of the pool (see _hold).
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        # The async store awaits the asyncio driver's own connection for the direct
        # statements where it knows the driver and the pool never hands one connection
        # to two callers at once (StaticPool does); elsewhere it runs the sync code
        # in a greenlet, as SQLAlchemy's asyncio layer does.
        self._native = (
            self._direct
            and dialect.is_async
            and dialect.driver in self._native_drivers
            and isinstance(pool, QueuePool | NullPool)
        )
        # On PostgreSQL with psycopg the direct path goes one step further down: the
        # statements are prepared once per connection and sent on libpq (see _pq).
        # The async store does so only on its native path, where it awaits the socket;
        # not on a NullPool, whose every call is a new connection (preparing there
        # would add a round trip to each call).
        pq = (
            self._direct
            and dialect.name == "postgresql"
            and dialect.driver == "psycopg"
            and (self._native or not dialect.is_async)
            and not isinstance(pool, NullPool)
        )
        #: The class of the PgCursor the store holds on libpq (None: not on libpq).
        self._pgcursor: type[Any] | None = None
        if pq:
            from ._pq import PgCursor

            self._pgcursor = PgCursor
        self._sql = _Statements(self.table, dialect, pq=pq)
        self._dialect = dialect
        self._dbapi_error: type[Exception] = dialect.loaded_dbapi.Error
        self.url = self.engine.url.render_as_string(hide_password=True)
        query = [f"table={table}"] if table != DEFAULT_TABLE else []
        if schema is not None:
            query.append(f"schema={schema}")
        store_url = self.url
        if query:
            store_url += ("&" if "?" in store_url else "?") + "&".join(query)
        #: The store's URL as ``websession --store`` takes it, password masked.
        self.store_url = store_url

    @classmethod
    def _parse(cls, kind: str, url: str) -> URL:
        try:
            return make_url(cls._url(url))
        except (sa_exc.ArgumentError, ValueError) as exc:
            raise SessionConfigError(f"{kind}: bad database URL {mask_url(url)!r}: {exc}") from None

    @classmethod
    def _url(cls, url: str) -> str:
        return _with_driver(url, cls._drivers)

    def _build_engine(
        self, kind: str, url: URL, connect_timeout: float | None, options: dict[str, Any]
    ) -> Any:
        timeout = DEFAULT_CONNECT_TIMEOUT if connect_timeout is None else connect_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise SessionConfigError(
                f"{kind} option connect_timeout={timeout!r} must be seconds > 0"
            )
        backend = url.get_backend_name()
        connect_args: dict[str, Any] = {}
        if backend == "postgresql":
            connect_args["connect_timeout"] = max(1, round(timeout))  # libpq: whole seconds
        elif backend in _MYSQL:
            connect_args["connect_timeout"] = max(1, round(timeout))
        elif backend == "sqlite":
            connect_args["timeout"] = float(timeout)  # how long a writer waits for the lock
        connect_args.update(options.pop("connect_args", {}))
        settings: dict[str, Any] = {
            # No pre-ping round trip per checkout: a connection that died in the pool
            # fails its statement, which is retried once on a fresh one (see _run).
            "pool_pre_ping": False,
            "isolation_level": "AUTOCOMMIT",
            "hide_parameters": True,  # payloads must not end up in error messages and logs
        }
        if backend in ("postgresql", "sqlite", *_MYSQL):
            # In autocommit the pool's reset-on-return ROLLBACK is a wasted round trip.
            settings["skip_autocommit_rollback"] = True
        settings.update(options)
        # A level of your own (also as an execution option) means transactions, which
        # the direct path does not commit: every operation then goes through Core.
        levels = (
            settings.get("isolation_level"),
            settings.get("execution_options", {}).get("isolation_level", "AUTOCOMMIT"),
        )
        self._autocommits = all(str(level).upper() == "AUTOCOMMIT" for level in levels)
        try:
            engine = self._create_engine(url, connect_args=connect_args, **settings)
        except (sa_exc.ArgumentError, TypeError) as exc:
            raise SessionConfigError(f"{kind}: cannot build an engine for {url!r}: {exc}") from None
        except ImportError as exc:
            raise SessionConfigError(
                f"{kind}: the database driver for {url.drivername!r} is not installed ({exc}); "
                "pip install 'websession[postgresql]' or 'websession[mysql]'"
            ) from None
        if backend == "sqlite":
            _use_wal(self._sync_engine(engine))
        return engine

    @abc.abstractmethod
    def _create_engine(self, url: URL, **kwargs: Any) -> Any:
        """Done differently by the sync and the async form."""

    @abc.abstractmethod
    def _sync_engine(self, engine: Any) -> Engine:
        """Done differently by the sync and the async form."""

    @abc.abstractmethod
    def _check_engine(self, engine: Any) -> None:
        """Done differently by the sync and the async form."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.store_url!r})"

    def _error(self, exc: sa_exc.SQLAlchemyError) -> StoreError:
        if _missing_table(exc):
            command = f"websession db init --store {shlex.quote(self.store_url)}"
            return StoreUnavailable(
                f"the session table {self.table.fullname!r} does not exist in {self.url}; "
                f"create it with `{command}` (or store.create_table())"
            )
        if (
            isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError)
            or getattr(exc, "connection_invalidated", False)
            or isinstance(exc, sa_exc.DisconnectionError)
        ):
            return StoreUnavailable(f"the database at {self.url} is unavailable: {_reason(exc)}")
        return StoreError(f"the database at {self.url} refused a session statement: {_reason(exc)}")

    # -- carrying steps out --------------------------------------------------------------

    def _recover(self, step: _Step, exc: sa_exc.SQLAlchemyError, retried: bool) -> Any:
        """What a failed attempt at ``step`` comes to: :data:`_AGAIN`, a result, or an error.

        No pre-ping: a pooled connection that died while idle (database restart,
        failover, an idle timeout in a proxy) fails its statement with a
        disconnect, and the statement runs once more on a fresh connection; a
        second failure is StoreUnavailable. Running a statement twice is safe:

        - ``load``, ``sessions_for`` and ``touch`` read or set absolute values;
          ``delete``, ``revoke`` and ``revoke_user`` are idempotent;
        - a save's UPDATE / DELETE is version-checked. If the first attempt
          committed before the connection died, the retry matches no row, and
          the save's steps ask (``_RETRIED``) and find the row holding exactly
          this payload at the version this save gives: success. Otherwise the
          answer is the ordinary Conflict (someone else saved: the flow replays
          this request's changes) or Gone;
        - a create's INSERT that committed comes back from the retry as a unique
          violation; the same check finds the row with this payload at version 1;
        - ``delete_expired`` may report only the retry's count; it is a batch
          size, and the next run sees what is left.

        A connection that cannot be opened at all is not retried: a second
        attempt would only double the wait for a server that is down.
        """
        if isinstance(exc, sa_exc.IntegrityError):
            if step[2] == _INSERT:
                return False  # the key exists
        elif isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated and not retried:
            log.info("the database at %s dropped a connection; retrying once", self.url)
            return _AGAIN
        raise self._error(exc) from exc

    def _drive(self, steps: Generator[Any, Any, _T]) -> _T:
        """Carry out an operation's steps, one statement at a time (the sync driver)."""
        retried = False
        try:
            step = next(steps)
            while True:
                if step is _RETRIED:
                    value: Any = retried
                else:
                    value, again = self._run(step)
                    retried = retried or again
                step = steps.send(value)
        except StopIteration as done:
            result: _T = done.value
            return result

    def _run(self, step: _Step) -> tuple[Any, bool]:
        """The step's result, and whether it had to run twice (see :meth:`_recover`)."""
        retried = False
        while True:
            try:
                return self._attempt(step), retried
            except sa_exc.SQLAlchemyError as exc:
                value = self._recover(step, exc, retried)
            if value is not _AGAIN:
                return value, retried
            retried = True

    def _attempt(self, step: _Step) -> Any:
        statement, params, mode = step
        if self._direct and statement.text is not None:
            return self._direct_attempt(statement, params, mode)
        connect = self._engine.connect if self._autocommit else self._engine.begin
        with connect() as conn:
            result = conn.execute(statement.core, params)
            if mode == _FIRST:
                return result.first()
            if mode == _ROWS:
                return result.rowcount
            if mode == _ALL:
                return result.all()
            return True

    def _direct_attempt(self, statement: _Statement, params: dict[str, Any], mode: int) -> Any:
        """Run a precompiled statement on a pooled DBAPI connection, without Core's per-call work.

        Core's Connection, execution context and result objects, and the pool's
        own check-out and check-in, cost as much as the database round trip on a
        fast network. So a few connections (as many as the pool keeps) stay
        checked out with an open cursor, in a stack any thread pops one from
        without a lock (see :meth:`_hold`); the rest of the time the pool
        serves. The dialect's disconnect detection and SQLAlchemy's exception
        types are still used, so errors look exactly like the Core path's.
        """
        dbapi_error = self._dbapi_error
        pool = self._engine.pool
        held = self._take()
        if held is not None and held[0] is pool:
            conn, cursor = held[1], held[2]
        else:
            if held is not None:  # from a pool that close() disposed of meanwhile
                held[1].close()
            try:
                conn = self._checkout()
                cursor = self._cursor(conn, conn.cursor())
            except dbapi_error as exc:
                raise _wrap(
                    statement.text, exc, dbapi_error, self._dialect, disconnect=False
                ) from exc
        try:
            on_libpq = type(cursor) is self._pgcursor
            if on_libpq and statement.pg is not None:
                value = cursor.run(statement.pg, params, mode)
            else:
                plain = cursor.cursor if on_libpq else cursor
                plain.execute(statement.text, statement.bind(params))
                # fetchall, so the statement is finished (SQLite would otherwise keep
                # its read snapshot open while the cursor waits in the stack).
                value = _result(mode, plain, plain.fetchall() if mode in _FETCHING else None)
        except dbapi_error as exc:
            dialect = self._dialect
            disconnect = dialect.is_disconnect(exc, conn.dbapi_connection, cursor)  # type: ignore[arg-type]
            if disconnect:
                self._broken(conn, exc)
            else:
                with contextlib.suppress(dbapi_error):
                    cursor.close()
                conn.close()
            raise _wrap(statement.text, exc, dbapi_error, dialect, disconnect=disconnect) from exc
        except BaseException:
            # Interrupted mid-statement: the connection's state is unknown.
            conn.invalidate()
            raise
        if not self._hold(pool, conn, cursor):
            cursor.close()
            conn.close()
        return value

    # -- held connections, for both forms -------------------------------------------------

    def _cursor(self, conn: Any, cursor: Any) -> Any:
        """What the store holds with ``conn``: its cursor, or on libpq a PgCursor around it.

        What was prepared on a connection is kept in the pool's ``info`` of that
        connection, which follows it back into the pool and out again and is
        cleared when the connection is closed or invalidated: a statement is
        prepared once per connection, not once per checkout.
        """
        pgcursor = self._pgcursor
        if pgcursor is not None and pgcursor.usable(conn.driver_connection):
            prepared = conn.info.setdefault("websession_prepared", set())
            return pgcursor(conn.driver_connection, cursor, prepared)
        return cursor

    def _take(self) -> tuple[Any, Any, Any] | None:
        """A held (pool, connection, cursor), or None: then the caller checks one out."""
        try:
            return self._idle.pop()
        except IndexError:
            return None

    def _checkout(self) -> Any:
        """A connection from the pool, which may wait for one (counted: see :meth:`_hold`).

        The async store calls this in SQLAlchemy's greenlet, where the pool can
        open a connection and wait on its asyncio queue.
        """
        with self._waiting_lock:
            self._waiting += 1
        try:
            return self._engine.raw_connection()
        finally:
            with self._waiting_lock:
                self._waiting -= 1

    def _hold(self, pool: Any, conn: Any, cursor: Any) -> bool:
        """Keep ``conn`` checked out with its cursor for the next call, if that is right.

        Not beyond what the pool keeps, not for a pool that close() replaced,
        and not while another caller waits for a connection from a pool that
        has none left: a held connection would sit unused while that caller
        runs into the pool's timeout.
        """
        idle = self._idle
        if (
            len(idle) < self._keep
            and pool is self._engine.pool
            and not (self._waiting and _exhausted(pool))
        ):
            idle.append((pool, conn, cursor))
            return True
        return False

    def _broken(self, conn: Any, exc: BaseException) -> None:
        """After a disconnect on ``conn``: as Core does, the pool renews every connection
        as old as this one, and the held ones go too, so the retry gets a live connection."""
        self._engine.pool._invalidate(conn, exc)
        self._release_idle(invalidate=True)

    def _release_idle(self, *, invalidate: bool = False) -> None:
        """Hand the held connections back to the pool (or close them, after a disconnect).

        Sync: the async store runs it in a greenlet, and closes cursors of its
        driver's own (whose close is awaited) itself before handing them back.
        """
        while True:
            held = self._take()
            if held is None:
                return
            _pool, conn, cursor = held
            if invalidate:
                conn.invalidate()
            else:
                with contextlib.suppress(self._dbapi_error):
                    cursor.close()
                conn.close()

    def _migrate_sync(self, *, upgrade: bool) -> SchemaChange:
        try:
            with self._engine.connect() as conn:
                return _migrate(conn, self._schema, self._clock, upgrade=upgrade)
        except sa_exc.SQLAlchemyError as exc:
            raise self._error(exc) from exc

    # -- the operations, as steps: each yields its statements and gets their results ------

    def _load_step(self, key: str) -> _Step:
        # The call every request with a session makes, and one statement with nothing
        # to decide: the drivers run the step itself (a generator would cost ~2 µs).
        return (self._sql.load, {"p_key": key, "p_now": self._clock()}, _FIRST)

    def _touch_steps(self, key: str, ttl: float) -> Generator[Any, Any, bool]:
        now = self._clock()
        if ttl <= 0:
            yield (self._sql.delete, {"p_key": key}, _ROWS)
            return False
        params = {"p_key": key, "p_now": now, "p_expires": now + ttl, "p_seen": now}
        rows = yield (self._sql.touch, params, _ROWS)
        return bool(rows == 1)

    def _delete_steps(self, key: str) -> Generator[Any, Any, None]:
        yield (self._sql.delete, {"p_key": key}, _ROWS)

    def _delete_expired_steps(self, limit: int) -> Generator[Any, Any, int]:
        check_limit(limit)
        params = {"p_now": self._clock(), "p_limit": limit}
        return int((yield (self._sql.delete_expired, params, _ROWS)))

    def _entries_steps(
        self, prefix: str, user_id: str | None, limit: int | None
    ) -> Generator[Any, Any, list[tuple[str, Entry]]]:
        c = self.table.c
        stmt = sa.select(c.session_key, *self._sql.columns).where(c.expires_at > self._clock())
        if user_id is not None:
            stmt = stmt.where(c.user_id == user_id)
        if prefix:
            # A range on the primary key rather than LIKE, which treats % and _ as wildcards.
            stmt = stmt.where(c.session_key >= prefix)
            upper = prefix_upper_bound(prefix)
            if upper is not None:
                stmt = stmt.where(c.session_key < upper)
        stmt = stmt.order_by(c.updated_at.desc(), c.session_key)
        if limit is not None:
            stmt = stmt.limit(check_limit(limit))
        rows = yield (_Statement(stmt, self._dialect, direct=False), {}, _ALL)
        return [(row[0], _entry(row[1:])) for row in rows if row[0].startswith(prefix)]

    def _sessions_for_steps(self, user_id: str) -> Generator[Any, Any, list[tuple[str, Entry]]]:
        params = {"p_user": user_id, "p_now": self._clock()}
        rows = yield (self._sql.sessions_for, params, _ALL)
        return [(row[0], _entry(row[1:])) for row in rows]

    def _revoke_steps(self, key: str) -> Generator[Any, Any, bool]:
        rows = yield (self._sql.revoke, {"p_key": key, "p_now": self._clock()}, _ROWS)
        return bool(rows == 1)

    def _revoke_user_steps(self, user_id: str, keep: Collection[str]) -> Generator[Any, Any, int]:
        if isinstance(keep, str):
            raise SessionConfigError("keep= takes a collection of keys, not one key as a string")
        params = {"p_user": user_id, "p_now": self._clock(), "p_keep": sorted(set(keep))}
        return int((yield (self._sql.revoke_user, params, _ROWS)))

    def _save_steps(
        self, key: str, payload: bytes, expected_version: int | None, ttl: float, meta: Meta
    ) -> Generator[Any, Any, int]:
        sql = self._sql
        now = self._clock()
        if ttl <= 0:
            if expected_version is None:
                live = yield (sql.live_version, {"p_key": key, "p_now": now}, _FIRST)
                if live is not None:
                    raise Conflict("a session with this key already exists")
                return 1
            deleted = yield (
                sql.delete_version,
                {"p_key": key, "p_expected": expected_version, "p_now": now},
                _ROWS,
            )
            if deleted == 1:
                return expected_version + 1
            raise (yield from self._why_not(key, now))
        params = {
            "p_key": key,
            "p_payload": payload,
            "p_created": meta.created,
            "p_seen": meta.last_seen,
            "p_expires": now + ttl,
            "p_user": meta.user_id,
            "p_ip": meta.ip,
            "p_agent": meta.user_agent,
            "p_now": now,
        }
        if expected_version is None:
            if (yield (sql.insert, params, _INSERT)):
                return 1
            # The key exists: an expired row may be taken over, a live one may not.
            if (yield (sql.take_over, params, _ROWS)) == 1:
                return 1
            if (yield from self._landed(key, payload, 1, now)):
                return 1
            raise Conflict("a session with this key already exists")
        params["p_expected"] = expected_version
        if (yield (sql.update, params, _ROWS)) == 1:
            return expected_version + 1
        if (yield from self._landed(key, payload, expected_version + 1, now)):
            return expected_version + 1
        raise (yield from self._why_not(key, now))

    def _landed(
        self, key: str, payload: bytes, version: int, now: float
    ) -> Generator[Any, Any, bool]:
        """After a retried step: did the first attempt commit before its connection died?"""
        if not (yield _RETRIED):
            return False
        row = yield (self._sql.live_payload, {"p_key": key, "p_now": now}, _FIRST)
        return row is not None and row[0] == version and bytes(row[1]) == payload

    def _why_not(self, key: str, now: float) -> Generator[Any, Any, StoreError]:
        """The error for a write that touched no row: Gone, or Conflict when the row lives."""
        # The write already failed; this read only tells the caller why. Its answer
        # may be a moment newer than the write's, which is harmless: either way the
        # save is refused.
        live = yield (self._sql.live_version, {"p_key": key, "p_now": now}, _FIRST)
        if live is None:
            return Gone("the session was deleted meanwhile")
        return Conflict("the session was saved by another request")


def _wrap(
    statement: str | None,
    exc: Exception,
    dbapi_error: type[Exception],
    dialect: sa.Dialect,
    *,
    disconnect: bool,
) -> sa_exc.DBAPIError:
    """A driver's exception as the SQLAlchemy exception Core would have raised for it."""
    wrapped: sa_exc.DBAPIError = sa_exc.DBAPIError.instance(  # type: ignore[assignment]
        statement,
        None,
        exc,
        dbapi_error,
        hide_parameters=True,
        connection_invalidated=disconnect,
        dialect=dialect,
    )
    return wrapped


def _result(mode: int, cursor: Any, rows: Any) -> Any:
    """A step's result, from its cursor and (for the ``_FETCHING`` modes) all its rows."""
    if mode == _FIRST:
        return rows[0] if rows else None
    if mode == _ROWS:
        return cursor.rowcount
    if mode == _ALL:
        return rows
    return True


def _exhausted(pool: Any) -> bool:
    """Whether a QueuePool can give out no connection without waiting for one to come back."""
    limit = getattr(pool, "_max_overflow", -1)  # -1: no limit (and not a QueuePool)
    return bool(limit >= 0 and pool.checkedin() == 0 and pool.overflow() >= limit)


def _adapted(conn: Any, error: Exception) -> Exception:
    """``error`` as SQLAlchemy's adaptation of the asyncio driver raises it.

    asyncmy reports a lost connection as an AttributeError and aiosqlite a
    closed one as a ValueError; the adapted connection turns those into the
    DBAPI errors that the dialect's disconnect detection knows.
    """
    handle = getattr(conn.dbapi_connection, "_handle_exception", None)
    if handle is None:
        return error
    try:
        handle(error)
    except Exception as translated:  # it raises what it maps the error to
        return translated
    return error


async def _in_greenlet(function: Callable[..., Any], *args: Any) -> Any:
    """Pool work that may do I/O (check-in, invalidation) in SQLAlchemy's greenlet.

    Shielded, so a cancelled caller still leaves the pool in order.
    """
    return await asyncio.shield(greenlet_spawn(function, *args))


def _use_wal(engine: Engine) -> None:
    """SQLite files built from a URL use WAL, as SQLiteStore does: readers never block writers."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()


# -- the sync store ------------------------------------------------------------------------------


class SQLStore(_SQLCommon):
    """Sessions in an SQL database through SQLAlchemy 2 (PostgreSQL, MySQL/MariaDB, SQLite).

    ``engine_or_url`` is a URL such as ``postgresql+psycopg://user:pw@host/db``
    or ``mysql+pymysql://user:pw@host/db`` (``postgresql://`` and ``mysql://``
    pick psycopg and PyMySQL; ``?table=`` and ``?schema=`` in the URL set those
    options), from which the store builds an engine with a connect timeout
    (5 s) and autocommit and runs its statements on the pooled connections
    directly; or an :class:`~sqlalchemy.engine.Engine` you built, which the
    store uses through Core as it is and never disposes. Extra keyword
    arguments go to :func:`sqlalchemy.create_engine`.

    The table must exist first: ``websession db init --store URL`` or
    :meth:`create_table`. Unreachable databases and a missing table raise
    :class:`~websession.errors.StoreUnavailable` naming the database (password
    masked). A statement that fails because its pooled connection died is
    retried once on a fresh connection, so a database restart costs no request.

    Also a :class:`~websession.stores.UserIndex`: ``sessions_for``, ``revoke``
    and ``revoke_user`` are one statement each on the ``user_id`` index.
    """

    engine: Engine

    def _create_engine(self, url: URL, **kwargs: Any) -> Engine:
        return sa.create_engine(url, **kwargs)

    def _sync_engine(self, engine: Engine) -> Engine:
        return engine

    def _check_engine(self, engine: Any) -> None:
        if not isinstance(engine, Engine):
            hint = (
                "; use AsyncSQLStore for an AsyncEngine" if isinstance(engine, AsyncEngine) else ""
            )
            raise SessionConfigError(
                f"SQLStore needs a database URL or a sqlalchemy Engine, not {engine!r}{hint}"
            )

    # -- the store protocol --------------------------------------------------------------

    def load(self, key: str) -> Entry | None:
        """The live entry for ``key``; None when unknown or expired. One SELECT."""
        return _loaded(self._run(self._load_step(key))[0])

    def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        """Compare-and-swap write: one INSERT or one version-checked UPDATE when all goes well."""
        return self._drive(self._save_steps(key, payload, expected_version, ttl, meta))

    def touch(self, key: str, ttl: float) -> bool:
        """Extend the expiry to now + ``ttl`` and set last seen; False if the key is gone."""
        return self._drive(self._touch_steps(key, ttl))

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when absent). One DELETE."""
        self._drive(self._delete_steps(key))

    def delete_expired(self, limit: int = 1000) -> int:
        """Remove up to ``limit`` expired rows in one short statement; return how many went.

        PostgreSQL skips rows other transactions hold locked (``SKIP LOCKED``),
        so a collection run never waits on a request.
        """
        return self._drive(self._delete_expired_steps(limit))

    def entries(
        self, *, prefix: str = "", user_id: str | None = None, limit: int | None = None
    ) -> Iterator[tuple[str, Entry]]:
        """Live entries whose key starts with ``prefix`` (and belong to ``user_id``).

        Newest ``last_seen`` first; uses the primary key or the user_id index.
        Fetched in full before the first is yielded, so no connection is held
        while the caller loops.
        """
        yield from self._drive(self._entries_steps(prefix, user_id, limit))

    # -- the per-user index --------------------------------------------------------------

    def sessions_for(self, user_id: str) -> list[tuple[str, Entry]]:
        """The live sessions of ``user_id``, most recently seen first. One SELECT on the index."""
        return self._drive(self._sessions_for_steps(user_id))

    def revoke(self, key: str) -> bool:
        """Delete one session; False if it was not there (or had expired). One DELETE."""
        return self._drive(self._revoke_steps(key))

    def revoke_user(self, user_id: str, *, keep: Collection[str] = ()) -> int:
        """Delete every live session of ``user_id`` except the keys in ``keep``. One DELETE."""
        return self._drive(self._revoke_user_steps(user_id, keep))

    # -- schema --------------------------------------------------------------------------

    def create_table(self) -> SchemaChange:
        """Create the session table (and its schema record) if missing; never alters one.

        Returns the schema versions before and after (before 0: it was created).
        What ``websession db init`` runs.
        """
        return self._migrate_sync(upgrade=False)

    def upgrade(self) -> SchemaChange:
        """Create the table or run the migrations it has not had yet; idempotent.

        What ``websession db upgrade`` runs.
        """
        return self._migrate_sync(upgrade=True)

    def close(self) -> None:
        """Close the pooled connections of an engine the store built (yours stays as it is).

        Safe while other threads still use the store: the next call opens a new connection.
        """
        if self._owned:
            self._release_idle()
            self.engine.dispose()


# -- the async store -------------------------------------------------------------------------------


class AsyncSQLStore(_SQLCommon):
    """The asyncio form of :class:`SQLStore`, for the ASGI middleware.

    Same arguments; a URL that names a sync driver gets its asyncio
    counterpart (psycopg serves both, ``pymysql`` becomes ``asyncmy``,
    ``pysqlite`` becomes ``aiosqlite``), and an engine you pass must be an
    :class:`~sqlalchemy.ext.asyncio.AsyncEngine`. ``await store.aclose()``
    disposes of an engine the store built.

    The operations are the same steps as :class:`SQLStore`'s, carried out with
    ``await``. On an engine the store built with psycopg, asyncmy or aiosqlite,
    the hot statements are awaited on the driver's own asyncio connection
    (held between calls as the sync store holds its connections), so a call
    costs about what the driver's own call costs; only taking a connection
    from the pool or giving one back goes through SQLAlchemy's greenlet. Other
    drivers, an engine you pass, and the statements that go through Core run
    the sync code in a greenlet, the way SQLAlchemy's asyncio layer runs Core.
    """

    engine: AsyncEngine
    _drivers = _ASYNC_DRIVERS
    _native_drivers = frozenset({"psycopg", "asyncmy", "aiosqlite"})

    def _create_engine(self, url: URL, **kwargs: Any) -> AsyncEngine:
        return create_async_engine(url, **kwargs)

    def _sync_engine(self, engine: AsyncEngine) -> Engine:
        return engine.sync_engine

    def _check_engine(self, engine: Any) -> None:
        if not isinstance(engine, AsyncEngine):
            hint = "; use SQLStore for a sync Engine" if isinstance(engine, Engine) else ""
            raise SessionConfigError(
                f"AsyncSQLStore needs a database URL or a sqlalchemy AsyncEngine, "
                f"not {engine!r}{hint}"
            )

    async def load(self, key: str) -> Entry | None:
        """The live entry for ``key``; None when unknown or expired. One SELECT."""
        row, _ = await self._arun(self._load_step(key))
        return _loaded(row)

    async def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        """Compare-and-swap write: one INSERT or one version-checked UPDATE when all goes well."""
        return await self._adrive(self._save_steps(key, payload, expected_version, ttl, meta))

    async def touch(self, key: str, ttl: float) -> bool:
        """Extend the expiry to now + ``ttl`` and set last seen; False if the key is gone."""
        return await self._adrive(self._touch_steps(key, ttl))

    async def delete(self, key: str) -> None:
        """Remove ``key`` (no error when absent). One DELETE."""
        await self._adrive(self._delete_steps(key))

    async def delete_expired(self, limit: int = 1000) -> int:
        """Remove up to ``limit`` expired rows in one short statement (see SQLStore)."""
        return await self._adrive(self._delete_expired_steps(limit))

    async def entries(
        self, *, prefix: str = "", user_id: str | None = None, limit: int | None = None
    ) -> AsyncIterator[tuple[str, Entry]]:
        """Live entries whose key starts with ``prefix`` (and belong to ``user_id``)."""
        for item in await self._adrive(self._entries_steps(prefix, user_id, limit)):
            yield item

    async def sessions_for(self, user_id: str) -> list[tuple[str, Entry]]:
        """The live sessions of ``user_id``, most recently seen first. One SELECT on the index."""
        return await self._adrive(self._sessions_for_steps(user_id))

    async def revoke(self, key: str) -> bool:
        """Delete one session; False if it was not there (or had expired). One DELETE."""
        return await self._adrive(self._revoke_steps(key))

    async def revoke_user(self, user_id: str, *, keep: Collection[str] = ()) -> int:
        """Delete every live session of ``user_id`` except the keys in ``keep``. One DELETE."""
        return await self._adrive(self._revoke_user_steps(user_id, keep))

    async def create_table(self) -> SchemaChange:
        """Create the session table if missing (see :meth:`SQLStore.create_table`)."""
        return await greenlet_spawn(self._migrate_sync, upgrade=False)

    async def upgrade(self) -> SchemaChange:
        """Create or migrate the table to the current schema (see :meth:`SQLStore.upgrade`)."""
        return await greenlet_spawn(self._migrate_sync, upgrade=True)

    async def aclose(self) -> None:
        """Dispose of an engine the store built (an engine you passed stays open)."""
        if self._owned:
            if self._native:
                while (held := self._take()) is not None:
                    await self._give_back(held[1], held[2])
            else:
                await greenlet_spawn(self._release_idle)
            await self.engine.dispose()

    # -- carrying steps out, awaited ------------------------------------------------------

    async def _adrive(self, steps: Generator[Any, Any, _T]) -> _T:
        """Carry out an operation's steps, one statement at a time (the asyncio driver)."""
        retried = False
        try:
            step = next(steps)
            while True:
                if step is _RETRIED:
                    value: Any = retried
                else:
                    value, again = await self._arun(step)
                    retried = retried or again
                step = steps.send(value)
        except StopIteration as done:
            result: _T = done.value
            return result

    async def _arun(self, step: _Step) -> tuple[Any, bool]:
        """The step's result, and whether it had to run twice (see :meth:`_recover`)."""
        retried = False
        while True:
            try:
                return await self._aattempt(step), retried
            except sa_exc.SQLAlchemyError as exc:
                value = self._recover(step, exc, retried)
            if value is not _AGAIN:
                return value, retried
            retried = True

    async def _aattempt(self, step: _Step) -> Any:
        statement, params, mode = step
        if self._native and statement.text is not None:
            return await self._native_attempt(statement, params, mode)
        return await greenlet_spawn(self._attempt, step)

    async def _native_attempt(
        self, statement: _Statement, params: dict[str, Any], mode: int
    ) -> Any:
        """:meth:`_direct_attempt`, awaited on the asyncio driver's own connection.

        A connection serves one statement at a time: it is popped from the
        stack of held ones, or checked out, for the whole statement (fetch
        included), and only then held again or given back. Errors go through
        the adapted connection's translation, the dialect's disconnect
        detection and SQLAlchemy's exception types, as on the other paths; a
        fresh connection whose cursor cannot be opened fails like a statement.
        """
        dialect = self._dialect
        dbapi_error = self._dbapi_error
        text = statement.text
        pool = self._engine.pool
        cursor: Any = None
        held = self._take()
        if held is not None and held[0] is pool:
            conn, cursor = held[1], held[2]
        else:
            if held is not None:  # from a pool that aclose() disposed of meanwhile
                await self._give_back(held[1], held[2])
            try:
                conn = await greenlet_spawn(self._checkout)
            except dbapi_error as exc:
                raise _wrap(text, exc, dbapi_error, dialect, disconnect=False) from exc
        try:
            if cursor is None:
                cursor = conn.driver_connection.cursor()
                if inspect.isawaitable(cursor):  # aiosqlite opens it on its own thread
                    cursor = await cursor
                cursor = self._cursor(conn, cursor)
            on_libpq = type(cursor) is self._pgcursor
            if on_libpq and statement.pg is not None:
                value = await cursor.arun(statement.pg, params, mode)
            else:
                plain = cursor.cursor if on_libpq else cursor
                await plain.execute(text, statement.bind(params))
                value = _result(mode, plain, await plain.fetchall() if mode in _FETCHING else None)
        except Exception as error:
            failure = _adapted(conn, error)
            if not isinstance(failure, dbapi_error):
                await _in_greenlet(conn.invalidate)
                raise
            disconnect = dialect.is_disconnect(failure, conn.dbapi_connection, None)  # type: ignore[arg-type]
            if disconnect:
                await _in_greenlet(self._broken, conn, failure)
            else:
                await self._give_back(conn, cursor)
            raise _wrap(text, failure, dbapi_error, dialect, disconnect=disconnect) from failure
        except BaseException as interrupted:
            if isinstance(interrupted, GeneratorExit):  # the coroutine was closed: no await left
                raise
            # Cancelled mid-statement: the connection's state is unknown.
            await _in_greenlet(conn.invalidate)
            raise
        if not self._hold(pool, conn, cursor):
            await self._give_back(conn, cursor)
        return value

    async def _give_back(self, conn: Any, cursor: Any) -> None:
        """Close a cursor of the driver's own and return its connection to the pool."""
        if cursor is not None:
            with contextlib.suppress(self._dbapi_error):
                await cursor.close()
        await _in_greenlet(conn.close)
