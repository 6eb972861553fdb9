"""SQLStore and AsyncSQLStore against real PostgreSQL and MariaDB/MySQL servers, and SQLite.

Servers: ``WEBSESSION_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``) and ``WEBSESSION_MYSQL_URL``
(default ``mysql+pymysql://root@127.0.0.1:3306/test``). Every store here works
on a table of its own, ``websession_test_<run>_<n>``, which the test drops at
the end together with its ``_schema`` record; nothing else in the database is
touched. A server that cannot be reached skips its tests, except under CI
(``CI=true``), where that is a failure. SQLite runs on a file in ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers import (
    assert_concurrent_writers_survive,
    call_wsgi,
    cookie_value,
    set_cookies,
    wsgi_app,
)
from websession.errors import Conflict, Gone, SessionConfigError, StoreError, StoreUnavailable
from websession.session import Session
from websession.stores.base import AsyncUserIndex, Entry, InspectableStore, Meta, UserIndex
from websession.testing import AsyncStoreContract, FakeClock, StoreContract, make_key
from websession.urls import mask_url
from websession.wsgi import SessionMiddleware as WSGIMiddleware

try:
    import sqlalchemy as sa
    from click.testing import CliRunner
    from sqlalchemy.ext.asyncio import create_async_engine

    from websession.cli_db import db
    from websession.stores import sql as sql_module
    from websession.stores.sql import (
        SCHEMA_VERSION,
        AsyncSQLStore,
        SchemaChange,
        SQLStore,
        async_url,
        is_sql_url,
        sync_url,
    )
except ImportError:
    if os.environ.get("CI") == "true":
        raise
    pytest.skip(
        "SQLAlchemy or a driver is not installed (pip install 'websession[postgresql,mysql]')",
        allow_module_level=True,
    )

POSTGRES_ENV = "WEBSESSION_POSTGRES_URL"
MYSQL_ENV = "WEBSESSION_MYSQL_URL"
POSTGRES_URL = os.environ.get(POSTGRES_ENV, "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get(MYSQL_ENV, "mysql+pymysql://root@127.0.0.1:3306/test")
RUN_ID = uuid.uuid4().hex[:8]
_numbers = itertools.count()
TTL = 600.0
BACKENDS = ["postgresql", "mysql", "sqlite"]


def fresh_table() -> str:
    """A table name no one else uses: this run's id and a counter."""
    return f"websession_test_{RUN_ID}_{next(_numbers)}"


def meta(now: float = 1_700_000_000.0, **changes: Any) -> Meta:
    fields: dict[str, Any] = {
        "created": now,
        "last_seen": now,
        "user_id": "u1",
        "ip": "203.0.113.9",
    }
    fields.update(changes)
    return Meta(**fields)


def with_query(url: str, **params: str) -> str:
    joiner = "&" if "?" in url else "?"
    return url + joiner + "&".join(f"{k}={v}" for k, v in params.items())


@dataclass
class Database:
    """One backend for one test: its URL and an admin engine that creates and drops tables."""

    name: str
    url: str
    admin: sa.Engine
    tables: list[sa.MetaData]

    def store(self, clock: Callable[[], float] = time.time, **options: Any) -> SQLStore:
        """A store on a fresh table, created now and dropped after the test."""
        store = SQLStore(self.url, table=fresh_table(), clock=clock, **options)
        self.created(store)
        store.create_table()
        return store

    def created(self, store: SQLStore | AsyncSQLStore) -> None:
        self.tables.append(store.metadata)

    def new_table(self) -> str:
        """Create a fresh table through the admin engine and return its name."""
        table = fresh_table()
        setup = SQLStore(self.admin, table=table)
        self.created(setup)
        setup.create_table()
        return table

    def drop(self) -> None:
        for metadata in self.tables:
            metadata.drop_all(self.admin, checkfirst=True)


_reachable: dict[str, BaseException | None] = {}


def _require_server(name: str, url: str, env: str) -> None:
    if name not in _reachable:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 2})
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            _reachable[name] = None
        except sa.exc.SQLAlchemyError as exc:
            _reachable[name] = exc
        finally:
            engine.dispose()
    problem = _reachable[name]
    if problem is not None:
        message = (
            f"no {name} server at {env}={mask_url(url)!r} ({str(problem).splitlines()[0]}); "
            f"start one or point {env} at a database the tests may create tables in"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def open_database(name: str, tmp_path: Path) -> Iterator[Database]:
    if name == "postgresql":
        _require_server(name, POSTGRES_URL, POSTGRES_ENV)
        url = POSTGRES_URL
    elif name == "mysql":
        _require_server(name, MYSQL_URL, MYSQL_ENV)
        url = MYSQL_URL
    else:
        url = f"sqlite+pysqlite:///{tmp_path / 'sessions.db'}"
    admin = sa.create_engine(url)
    database = Database(name, url, admin, [])
    try:
        yield database
    finally:
        database.drop()
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """Each backend in turn; tables the test made are dropped afterwards."""
    yield from open_database(request.param, tmp_path)


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[Database]:
    yield from open_database("postgresql", tmp_path)


@pytest.fixture
def mariadb(tmp_path: Path) -> Iterator[Database]:
    yield from open_database("mysql", tmp_path)


# -- the contract, on every backend ---------------------------------------------------------


class _OnDatabase:
    backend: str
    database: Database

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> Iterator[None]:
        # Autouse, so it is set up before (and torn down after) the contract's store fixture.
        for database in open_database(self.backend, tmp_path):
            self.database = database
            yield


class _SyncContract(_OnDatabase, StoreContract):
    def make_store(self, clock: Callable[[], float]) -> SQLStore:
        return self.database.store(clock)


class _AsyncContract(_OnDatabase, AsyncStoreContract):
    def make_store(self, clock: Callable[[], float]) -> AsyncSQLStore:
        # The table comes from the sync admin engine; the store derives its async
        # driver from the sync URL (pymysql -> asyncmy, pysqlite -> aiosqlite).
        table = self.database.new_table()
        return AsyncSQLStore(self.database.url, table=table, clock=clock)


class TestPostgresContract(_SyncContract):
    backend = "postgresql"


class TestMariaDBContract(_SyncContract):
    backend = "mysql"


class TestSQLiteContract(_SyncContract):
    backend = "sqlite"


class TestAsyncPostgresContract(_AsyncContract):
    backend = "postgresql"


class TestAsyncMariaDBContract(_AsyncContract):
    backend = "mysql"


class TestAsyncSQLiteContract(_AsyncContract):
    backend = "sqlite"


# -- statements and table contents ----------------------------------------------------------


class CursorLog:
    """The statements on one table as the driver receives them.

    Counted below SQLAlchemy, so statements the store sends on the DBAPI
    connection directly count as much as those that go through Core: with a
    cursor class given to the driver through ``connect_args`` (MySQL, SQLite),
    and on PostgreSQL on the wire itself, from libpq's protocol trace of each
    connection (:meth:`attach`), since the store sends its statements on
    libpq without a cursor.
    """

    def __init__(self, table: str) -> None:
        self.table = table
        self._statements: list[str] = []
        self._trace: Path | None = None
        self._read = 0  # how much of the trace has been counted
        self._names: dict[str, str] = {}  # prepared statement name -> SQL, from Parse
        self._bound: str | None = None  # the SQL of the last Bind

    @property
    def statements(self) -> list[str]:
        self._drain()
        return self._statements

    def record(self, sql: Any) -> None:
        text = str(sql)
        if self.table in text:
            self._statements.append(text.split(None, 1)[0].upper())

    def during(self, operation: Callable[[], Any]) -> list[str]:
        self.statements.clear()
        operation()
        return list(self.statements)

    def attach(self, engine: Any, trace: Path) -> None:
        """Trace the protocol of each PostgreSQL connection ``engine`` opens into ``trace``."""
        from psycopg import pq

        self._trace = trace
        trace.touch()

        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            pgconn = getattr(dbapi_connection, "driver_connection", dbapi_connection).pgconn
            pgconn.trace(os.open(trace, os.O_WRONLY | os.O_APPEND))
            pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)

        sa.event.listen(getattr(engine, "sync_engine", engine), "connect", on_connect)

    def _drain(self) -> None:
        """Count the statements executed on the table since the last look at the trace."""
        if self._trace is None:
            return
        with self._trace.open("rb") as f:
            f.seek(self._read)
            text = f.read().decode()
        complete = text.rfind("\n") + 1  # a message still being written waits for next time
        self._read += len(text[:complete].encode())
        # Messages start a line with F (frontend) or B, their length and name; SQL may span lines.
        for message in re.split(r"\n(?=[FB]\t\d+\t)", text[:complete]):
            fields = message.split("\t", 3)
            if len(fields) < 4 or fields[0] != "F":
                continue
            kind, rest = fields[2], fields[3]
            if kind == "Parse":
                parsed = re.match(r' "([^"]*)" "(.*)" [\dN ]+$', rest.rstrip("\n"), re.S)
                if parsed:
                    self._names[parsed.group(1)] = parsed.group(2)
            elif kind == "Bind":
                bound = re.match(r' "[^"]*" "([^"]*)"', rest)
                self._bound = self._names.get(bound.group(1)) if bound else None
            elif kind == "Execute" and self._bound is not None:
                self.record(self._bound)
            elif kind == "Query":
                self.record(rest.strip()[1:-1])

    def connect_args(self, backend: str, *, asynchronous: bool = False) -> dict[str, Any]:
        log = self
        if backend == "postgresql":
            return {}  # traced on the wire: see attach
        if backend == "mysql":
            if asynchronous:
                pytest.skip("asyncmy's cursor classes are compiled and cannot be subclassed")
            import pymysql.cursors

            class PyMySQLCursor(pymysql.cursors.Cursor):
                def execute(self, query: Any, args: Any = None) -> Any:
                    log.record(query)
                    return super().execute(query, args)

            return {"cursorclass": PyMySQLCursor}
        import sqlite3

        class SQLiteCursor(sqlite3.Cursor):
            def execute(self, sql: str, parameters: Any = (), /) -> Any:
                log.record(sql)
                return super().execute(sql, parameters)

        class SQLiteConnection(sqlite3.Connection):
            def cursor(self, factory: Any = SQLiteCursor) -> Any:
                return super().cursor(factory)

        return {"factory": SQLiteConnection}


@pytest.mark.parametrize("engine_kind", ["built", "yours"])
def test_one_statement_per_operation_on_the_happy_path(
    database: Database, engine_kind: str, tmp_path: Path
) -> None:
    # The store's own engine runs the hot statements on the DBAPI connection; an
    # engine you pass goes through Core. Either way one statement per operation.
    clock = FakeClock()
    table = database.new_table()
    log = CursorLog(table)
    connect_args = log.connect_args(database.name)
    if engine_kind == "built":
        store = SQLStore(database.url, table=table, clock=clock, connect_args=connect_args)
    else:
        engine = sa.create_engine(database.url, connect_args=connect_args)
        store = SQLStore(engine, table=table, clock=clock)
    if database.name == "postgresql":
        log.attach(store.engine, tmp_path / "trace")
    key = make_key("statements")
    version = 0

    def create() -> None:
        nonlocal version
        version = store.save(key, b"1", expected_version=None, ttl=TTL, meta=meta(clock()))

    assert log.during(create) == ["INSERT"]
    assert log.during(lambda: store.load(key)) == ["SELECT"]
    assert log.during(
        lambda: store.save(key, b"2", expected_version=version, ttl=TTL, meta=meta(clock()))
    ) == ["UPDATE"]
    assert log.during(lambda: store.touch(key, TTL)) == ["UPDATE"]
    assert log.during(lambda: store.delete_expired(10)) == ["DELETE"]
    assert log.during(lambda: store.sessions_for("u1")) == ["SELECT"]
    assert log.during(lambda: store.revoke_user("u1", keep=[key])) == ["DELETE"]
    assert log.during(lambda: store.revoke(key)) == ["DELETE"]
    assert log.during(lambda: store.delete(key)) == ["DELETE"]
    assert log.during(lambda: store.load(key)) == ["SELECT"]
    # A refused update costs one more statement, which tells Conflict from Gone.
    log.statements.clear()
    with pytest.raises(Gone):
        store.save(key, b"x", expected_version=version, ttl=TTL, meta=meta())
    assert log.statements == ["UPDATE", "SELECT"]
    store.close()
    if engine_kind == "yours":
        store.engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def async_counted(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """PostgreSQL and SQLite, whose asyncio drivers take a cursor class of ours."""
    yield from open_database(request.param, tmp_path)


def test_async_store_sends_one_statement_per_operation(
    async_counted: Database, tmp_path: Path
) -> None:
    database = async_counted
    table = database.new_table()
    log = CursorLog(table)

    async def main() -> list[list[str]]:
        store = AsyncSQLStore(
            database.url,
            table=table,
            connect_args=log.connect_args(database.name, asynchronous=True),
        )
        if database.name == "postgresql":
            log.attach(store.engine, tmp_path / "trace")
        key = make_key("async-statements")
        seen = []
        log.statements.clear()
        version = await store.save(key, b"1", expected_version=None, ttl=TTL, meta=meta())
        seen.append(list(log.statements))
        for operation in (
            lambda: store.load(key),
            lambda: store.save(key, b"2", expected_version=version, ttl=TTL, meta=meta()),
            lambda: store.sessions_for("u1"),
            lambda: store.revoke_user("u1", keep=[key]),
            lambda: store.delete(key),
        ):
            log.statements.clear()
            await operation()
            seen.append(list(log.statements))
        await store.aclose()
        return seen

    assert asyncio.run(main()) == [
        ["INSERT"], ["SELECT"], ["UPDATE"], ["SELECT"], ["DELETE"], ["DELETE"],
    ]  # fmt: skip


def test_the_raw_table_holds_no_session_id(database: Database) -> None:
    store = database.store()

    def view(session: Session, environ: dict[str, Any]) -> None:
        session["cart"] = ["apple"]

    app = WSGIMiddleware(wsgi_app(view), store=store)
    _, headers, _ = call_wsgi(app, "/", headers={"User-Agent": "dump-test"})
    token = cookie_value(set_cookies(headers)[0])
    with database.admin.connect() as conn:
        rows = conn.execute(sa.select(store.table)).all()
    assert len(rows) == 1
    dump = repr(rows).encode() + b"".join(
        value if isinstance(value, bytes) else str(value).encode() for value in rows[0]
    )
    assert b"apple" in dump  # the payload is there ...
    assert b"dump-test" in dump  # ... and the user agent beside it ...
    assert token.encode() not in dump  # ... but not the session id
    assert rows[0].session_key != token
    assert len(rows[0].session_key) == 64


def test_payloads_are_returned_untouched_whatever_their_format(database: Database) -> None:
    # A payload from a newer codec version: the store must hand it back byte for byte.
    store = database.store()
    key = make_key("future")
    future = b"\x09websession-format-99\x00\xff" + bytes(range(256))
    store.save(key, future, expected_version=None, ttl=TTL, meta=meta(time.time()))
    entry = store.load(key)
    assert entry is not None
    assert entry.payload == future
    assert [e.payload for _, e in store.entries(prefix=key)] == [future]


def test_metadata_is_kept_outside_the_payload(database: Database) -> None:
    store = database.store()
    key = make_key("columns")
    store.save(key, b"{}", expected_version=None, ttl=TTL, meta=meta(time.time(), user_id="Alice"))
    store.save(
        make_key("other"),
        b"{}",
        expected_version=None,
        ttl=TTL,
        meta=meta(time.time(), user_id="alice"),
    )
    with database.admin.connect() as conn:
        row = conn.execute(
            sa.select(store.table.c.user_id, store.table.c.ip).where(
                store.table.c.session_key == key
            )
        ).one()
    assert tuple(row) == ("Alice", "203.0.113.9")
    # User ids compare exactly, also on MySQL, whose default collation ignores case.
    assert [k for k, _ in store.entries(user_id="Alice")] == [key]


# -- the per-user index --------------------------------------------------------------------------


def test_the_user_index_lists_and_revokes_live_sessions(database: Database) -> None:
    clock = FakeClock()
    store = database.store(clock)
    assert isinstance(store, UserIndex)
    alice = [make_key(f"alice-{i}") for i in range(3)]
    for key in alice:
        store.save(key, b"a", expected_version=None, ttl=TTL, meta=meta(clock(), user_id="alice"))
        clock.advance(1)
    bob = make_key("bob")
    store.save(bob, b"b", expected_version=None, ttl=TTL, meta=meta(clock(), user_id="bob"))
    expired = make_key("alice-expired")
    store.save(expired, b"x", expected_version=None, ttl=0.5, meta=meta(clock(), user_id="alice"))
    clock.advance(1)
    # Touching makes a session the most recently seen.
    store.touch(alice[0], TTL)

    found = store.sessions_for("alice")
    assert [k for k, _ in found] == [alice[0], alice[2], alice[1]]
    assert all(e.user_id == "alice" and e.payload == b"a" for _, e in found)
    assert store.sessions_for("ALICE") == []  # user ids compare exactly
    assert store.revoke(expired) is False  # expired: not there any more
    assert store.revoke(alice[1]) is True
    assert store.revoke(alice[1]) is False
    assert store.load(alice[1]) is None
    assert store.revoke_user("alice", keep=[alice[0]]) == 1
    assert [k for k, _ in store.sessions_for("alice")] == [alice[0]]
    assert store.revoke_user("alice") == 1
    assert store.sessions_for("alice") == []
    assert store.revoke_user("nobody", keep=[]) == 0
    assert [k for k, _ in store.sessions_for("bob")] == [bob]  # other users untouched
    with pytest.raises(SessionConfigError, match="collection"):
        store.revoke_user("bob", keep=bob)  # type: ignore[arg-type]


def test_the_async_user_index(database: Database) -> None:
    table = database.new_table()

    async def main() -> None:
        clock = FakeClock()
        store = AsyncSQLStore(database.url, table=table, clock=clock)
        assert isinstance(store, AsyncUserIndex)
        keys = [make_key(f"async-user-{i}") for i in range(3)]
        for key in keys:
            await store.save(key, b"x", expected_version=None, ttl=TTL, meta=meta(clock()))
            clock.advance(1)
        assert [k for k, _ in await store.sessions_for("u1")] == list(reversed(keys))
        assert await store.revoke(keys[0]) is True
        assert await store.revoke(keys[0]) is False
        assert await store.revoke_user("u1", keep={keys[2]}) == 1
        assert [k for k, _ in await store.sessions_for("u1")] == [keys[2]]
        await store.aclose()

    asyncio.run(main())


def test_the_user_index_queries_use_the_user_id_index(postgres: Database) -> None:
    # Enough rows over enough users that a sequential scan would be the planner's
    # choice without the index; EXPLAIN then names the index the store's own SQL uses.
    store = postgres.store()
    rows = [
        {
            "session_key": make_key(f"plan-{i}"), "payload": b"x", "version": 1,
            "created_at": 0.0, "updated_at": float(i), "expires_at": 4e9,
            "user_id": f"user-{i % 500}", "ip": None, "user_agent": None,
        }
        for i in range(5000)
    ]  # fmt: skip
    index = f"{store.table_name}_user_id"
    with postgres.admin.begin() as conn:
        conn.execute(sa.insert(store.table), rows)
        conn.exec_driver_sql(f"ANALYZE {store.table_name}")
    statements = store._sql
    plans = {}
    with postgres.admin.connect() as conn:
        # The exact text and parameters the store sends on its direct path ...
        for name, statement, params in (
            ("sessions_for", statements.sessions_for, {"p_user": "user-7", "p_now": 1.0}),
            ("revoke", statements.revoke, {"p_key": make_key("plan-7"), "p_now": 1.0}),
        ):
            assert statement.text is not None
            rows = conn.exec_driver_sql("EXPLAIN " + statement.text, statement.bind(params))
            plans[name] = "\n".join(rows.scalars())
    # ... and revoke_user, which goes through Core (its IN list is rendered per call):
    # caught as sent, then explained with the same parameters.
    sent: list[tuple[str, Any]] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: sent.append((a[2], a[3])))
    store.revoke_user("user-nobody", keep=[make_key("plan-7"), make_key("plan-507")])
    [(sql, parameters)] = sent
    with postgres.admin.connect() as conn:
        plans["revoke_user"] = "\n".join(
            conn.exec_driver_sql("EXPLAIN " + sql, parameters).scalars()
        )
    assert index in plans["sessions_for"], plans["sessions_for"]
    assert index in plans["revoke_user"], plans["revoke_user"]
    assert "Seq Scan" not in plans["sessions_for"]
    assert f"{store.table_name}_pkey" in plans["revoke"]


# -- the table is created on request only ------------------------------------------------------


def test_a_missing_table_is_unavailable_and_says_how_to_create_it(database: Database) -> None:
    table = fresh_table()
    store = SQLStore(database.url, table=table)
    operations: list[Callable[[], Any]] = [
        lambda: store.load(make_key("x")),
        lambda: store.save(make_key("x"), b"x", expected_version=None, ttl=TTL, meta=meta()),
        lambda: store.touch(make_key("x"), TTL),
        lambda: store.delete_expired(),
        lambda: list(store.entries()),
    ]
    for operation in operations:
        with pytest.raises(StoreUnavailable, match="websession db init --store") as caught:
            operation()
        assert table in str(caught.value)
        assert isinstance(caught.value.__cause__, sa.exc.DBAPIError)
    with database.admin.connect() as conn:
        assert not sa.inspect(conn).has_table(table)  # nothing was created behind the user's back
    store.close()


def test_the_missing_table_hint_masks_the_password(postgres: Database) -> None:
    # Trust authentication ignores the password, so this URL still connects.
    url = sa.make_url(POSTGRES_URL).set(password="s3cret-pass").render_as_string(False)
    table = fresh_table()
    store = SQLStore(url, table=table)
    with pytest.raises(StoreUnavailable) as caught:
        store.load(make_key("x"))
    message = str(caught.value)
    assert "s3cret-pass" not in message
    assert "***" in message
    assert f"table={table}" in message
    assert "s3cret-pass" not in repr(store)
    store.close()


def test_async_store_reports_a_missing_table_too(database: Database) -> None:
    async def main() -> None:
        store = AsyncSQLStore(database.url, table=fresh_table())
        with pytest.raises(StoreUnavailable, match="websession db init"):
            await store.load(make_key("x"))
        await store.aclose()

    asyncio.run(main())


def test_create_table_and_upgrade_are_idempotent(database: Database) -> None:
    store = SQLStore(database.url, table=fresh_table())
    database.created(store)
    assert store.create_table() == SchemaChange(0, SCHEMA_VERSION)
    assert store.create_table() == SchemaChange(SCHEMA_VERSION, SCHEMA_VERSION)
    assert store.upgrade() == SchemaChange(SCHEMA_VERSION, SCHEMA_VERSION)
    with database.admin.connect() as conn:
        record = conn.execute(sa.select(store.metadata.tables[f"{store.table_name}_schema"])).all()
    assert [(r.id, r.schema_version) for r in record] == [(1, SCHEMA_VERSION)]
    store.close()


def test_upgrade_runs_each_missing_migration_once(
    postgres: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[int] = []

    def add_column(conn: sa.Connection, schema: Any) -> None:
        ran.append(2)
        conn.execute(sa.text(f"ALTER TABLE {schema.sessions.name} ADD COLUMN note TEXT"))

    store = postgres.store()
    store.save(make_key("kept"), b"data", expected_version=None, ttl=TTL, meta=meta(time.time()))
    monkeypatch.setattr(sql_module, "MIGRATIONS", [*sql_module.MIGRATIONS, add_column])
    monkeypatch.setattr(sql_module, "SCHEMA_VERSION", 2)
    assert store.create_table() == SchemaChange(1, 1)  # init never alters an existing table
    assert store.upgrade() == SchemaChange(1, 2)
    assert store.upgrade() == SchemaChange(2, 2)
    assert ran == [2]
    entry = store.load(make_key("kept"))
    assert entry is not None
    assert entry.payload == b"data"


def test_a_schema_newer_than_this_code_is_refused(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = database.store()
    monkeypatch.setattr(sql_module, "SCHEMA_VERSION", 0)
    with pytest.raises(StoreError, match="newer than this websession"):
        store.upgrade()


def test_a_table_made_without_a_record_counts_as_version_one(database: Database) -> None:
    store = SQLStore(database.url, table=fresh_table())
    database.created(store)
    store.table.create(database.admin)  # e.g. by the user's own metadata.create_all()
    assert store.upgrade() == SchemaChange(1, SCHEMA_VERSION)
    assert store.upgrade() == SchemaChange(SCHEMA_VERSION, SCHEMA_VERSION)


# -- websession db init / upgrade ------------------------------------------------------------------


def test_db_init_and_upgrade_from_the_command_line(database: Database) -> None:
    table = fresh_table()
    url = with_query(database.url, table=table)
    probe = SQLStore(url)
    database.created(probe)
    runner = CliRunner()

    first = runner.invoke(db, ["init", "--store", url])
    assert first.exit_code == 0, first.output
    assert f"Created table {table}" in first.output
    with database.admin.connect() as conn:
        assert sa.inspect(conn).has_table(table)
    again = runner.invoke(db, ["init", "--store", url])
    assert again.exit_code == 0, again.output
    assert "already exists" in again.output
    upgrade = runner.invoke(db, ["upgrade", "--store", url])
    assert upgrade.exit_code == 0, upgrade.output
    assert f"Table {table} is up to date (schema version {SCHEMA_VERSION})" in upgrade.output
    probe.save(make_key("cli"), b"x", expected_version=None, ttl=TTL, meta=meta(time.time()))
    assert probe.load(make_key("cli")) is not None
    probe.close()


def test_db_upgrade_creates_a_missing_table(database: Database) -> None:
    table = fresh_table()
    url = with_query(database.url, table=table)
    database.created(SQLStore(url))
    result = CliRunner().invoke(db, ["upgrade", "--store", url])
    assert result.exit_code == 0, result.output
    assert f"Created table {table}" in result.output


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("memory://", "not an SQL database URL"),
        ("redis+cluster://127.0.0.1:7000", "not an SQL database URL"),
        ("no-scheme", "is not a store URL"),
        ("postgresql+psycopg://postgres@127.0.0.1:5432/test?table=1bad", "not a plain SQL"),
        ("postgresql+nosuchdriver://h/db", "bad store URL"),
    ],
)
def test_db_commands_refuse_urls_they_cannot_use(url: str, message: str) -> None:
    result = CliRunner().invoke(db, ["init", "--store", url])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: ")
    assert message in lines[0]


def test_db_init_on_an_unreachable_server_is_one_line_with_the_password_masked() -> None:
    url = "postgresql+psycopg://user:hunter2-pw@127.0.0.1:1/db"
    started = time.monotonic()
    result = CliRunner().invoke(db, ["upgrade", "--store", url])
    assert time.monotonic() - started < 10
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: store postgresql+psycopg://user:***@127.0.0.1:1/db failed")
    assert "hunter2-pw" not in result.output


# -- delete_expired -------------------------------------------------------------------------------


def test_delete_expired_works_in_bounded_batches(database: Database) -> None:
    clock = FakeClock()
    store = database.store(clock)
    for i in range(7):
        store.save(make_key(f"old-{i}"), b"x", expected_version=None, ttl=1, meta=meta(clock()))
    store.save(make_key("live"), b"x", expected_version=None, ttl=TTL, meta=meta(clock()))
    clock.advance(2)
    assert [store.delete_expired(3) for _ in range(4)] == [3, 3, 1, 0]
    assert store.load(make_key("live")) is not None


def test_delete_expired_skips_rows_locked_by_another_transaction(postgres: Database) -> None:
    clock = FakeClock()
    store = postgres.store(clock)
    keys = [make_key(f"locked-{i}") for i in range(6)]
    for key in keys:
        store.save(key, b"x", expected_version=None, ttl=1, meta=meta(clock()))
    clock.advance(2)
    locked = keys[:2]
    table = store.table
    with postgres.admin.connect() as other:
        other.execute(
            sa.select(table.c.session_key).where(table.c.session_key.in_(locked)).with_for_update()
        )
        # In a thread, so a DELETE that waited for the lock fails the test instead of hanging it.
        with ThreadPoolExecutor(max_workers=1) as pool:
            removed = pool.submit(store.delete_expired, 100)
            try:
                assert removed.result(timeout=5) == 4  # the two locked rows are skipped
            finally:
                other.rollback()
    assert store.delete_expired(100) == 2
    with postgres.admin.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0


# -- failures and recovery -------------------------------------------------------------------------


def _check_unavailable(exc: StoreUnavailable, url: str) -> None:
    assert mask_url(url) in str(exc)
    assert "hunter2-pw" not in str(exc)
    assert isinstance(exc.__cause__, sa.exc.DBAPIError)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://user:hunter2-pw@127.0.0.1:1/db",
        "mysql+pymysql://user:hunter2-pw@127.0.0.1:1/db",
    ],
)
def test_an_unreachable_server_is_unavailable(url: str) -> None:
    store = SQLStore(url)
    assert "hunter2-pw" not in repr(store)
    for operation in (
        lambda: store.load(make_key("x")),
        lambda: store.save(make_key("x"), b"x", expected_version=None, ttl=TTL, meta=meta()),
        lambda: store.touch(make_key("x"), TTL),
        lambda: store.delete(make_key("x")),
        lambda: store.delete_expired(),
        lambda: list(store.entries()),
    ):
        with pytest.raises(StoreUnavailable) as caught:
            operation()
        _check_unavailable(caught.value, url)
    store.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://user:hunter2-pw@127.0.0.1:1/db",
        "mysql+pymysql://user:hunter2-pw@127.0.0.1:1/db",
    ],
)
def test_an_unreachable_server_is_unavailable_to_the_async_store(url: str) -> None:
    async def main() -> None:
        store = AsyncSQLStore(url)
        for operation in (
            lambda: store.load(make_key("x")),
            lambda: store.save(make_key("x"), b"x", expected_version=None, ttl=TTL, meta=meta()),
            lambda: store.touch(make_key("x"), TTL),
            lambda: store.delete(make_key("x")),
            lambda: store.sessions_for("u1"),
        ):
            with pytest.raises(StoreUnavailable) as caught:
                await operation()
            _check_unavailable(caught.value, async_url(url))
        await store.aclose()

    asyncio.run(main())


def _terminate(admin: sa.Engine, application_name: str) -> int:
    with admin.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :name"
            ),
            {"name": application_name},
        ).all()
    return len(killed)


@pytest.mark.parametrize("engine_kind", ["built", "yours"])
def test_a_killed_postgresql_connection_recovers_without_restart(
    postgres: Database, engine_kind: str
) -> None:
    name = f"websession-test-{uuid.uuid4().hex[:8]}"
    connect_args = {"application_name": name}
    if engine_kind == "built":
        store = postgres.store(connect_args=connect_args)
        assert store.engine.pool._pre_ping is False  # no extra round trip per call
    else:
        engine = sa.create_engine(POSTGRES_URL, connect_args=connect_args)
        store = SQLStore(engine, table=postgres.new_table())
    key = make_key("survivor")
    version = store.save(key, b"before", expected_version=None, ttl=TTL, meta=meta(time.time()))
    assert _terminate(postgres.admin, name) >= 1
    # The dead connection fails its statement, which is retried on a fresh one.
    entry = store.load(key)
    assert entry is not None
    assert (entry.payload, entry.version) == (b"before", version)
    assert _terminate(postgres.admin, name) >= 1
    version = store.save(key, b"after", expected_version=version, ttl=TTL, meta=meta(time.time()))
    entry = store.load(key)
    assert entry is not None
    assert (entry.payload, entry.version) == (b"after", version)
    store.close()
    store.engine.dispose()


def test_the_async_store_recovers_from_a_killed_connection_too(postgres: Database) -> None:
    name = f"websession-test-{uuid.uuid4().hex[:8]}"
    table = postgres.new_table()

    async def main() -> None:
        store = AsyncSQLStore(POSTGRES_URL, table=table, connect_args={"application_name": name})
        key = make_key("async-survivor")
        version = await store.save(key, b"v", expected_version=None, ttl=TTL, meta=meta())
        assert _terminate(postgres.admin, name) >= 1
        entry = await store.load(key)
        assert entry is not None
        assert entry.version == version
        await store.aclose()

    asyncio.run(main())


def _wait_until_gone(admin: sa.Engine, application_name: str) -> None:
    """Until the server has ended every backend of ``application_name`` (at most 5 s)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with admin.connect() as conn:
            left = conn.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"),
                {"name": application_name},
            ).scalar()
        if not left:
            return
        time.sleep(0.02)


def test_a_killed_server_costs_the_async_store_one_retry(
    postgres: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # Every connection the store holds dies at once (a database restart): the first
    # call retries once on a fresh connection, and the other held ones are dropped
    # with the dead one instead of failing the next calls one by one.
    name = f"websession-test-{uuid.uuid4().hex[:8]}"
    table = postgres.new_table()

    async def main() -> None:
        store = AsyncSQLStore(POSTGRES_URL, table=table, connect_args={"application_name": name})
        key = make_key("one-retry")
        version = await store.save(key, b"before", expected_version=None, ttl=TTL, meta=meta())
        await asyncio.gather(*(store.load(key) for _ in range(4)))  # several connections held
        assert len(store._idle) >= 2
        assert _terminate(postgres.admin, name) >= 2
        _wait_until_gone(postgres.admin, name)
        with caplog.at_level(logging.INFO, logger="websession"):
            version = await store.save(
                key, b"after", expected_version=version, ttl=TTL, meta=meta()
            )
            for _ in range(4):
                entry = await store.load(key)
                assert entry is not None
                assert (entry.payload, entry.version) == (b"after", version)
            assert await store.touch(key, TTL) is True
        retries = [r for r in caplog.records if "retrying once" in r.getMessage()]
        assert len(retries) == 1
        assert version == 2
        await store.aclose()

    asyncio.run(main())


def test_async_writers_survive_connections_killed_mid_run(postgres: Database) -> None:
    # Coroutines load and save their own sessions while the server keeps killing the
    # store's connections: nothing half-written, every landed save counted once, and a
    # save whose first attempt landed before its connection died is no Conflict.
    name = f"websession-test-{uuid.uuid4().hex[:8]}"
    table = postgres.new_table()
    outcomes = {"saved": 0, "unavailable": 0, "conflict": 0}

    async def main() -> None:
        store = AsyncSQLStore(POSTGRES_URL, table=table, connect_args={"application_name": name})
        keys = [make_key(f"mid-run-{i}") for i in range(8)]
        for key in keys:
            start = json.dumps({"n": 0}).encode()
            await store.save(key, start, expected_version=None, ttl=TTL, meta=meta())
        stop = asyncio.Event()

        async def writer(key: str) -> None:
            while not stop.is_set():
                try:
                    entry = await store.load(key)
                    assert entry is not None
                    data = json.loads(entry.payload)
                    data["n"] += 1
                    await store.save(
                        key, json.dumps(data).encode(), expected_version=entry.version,
                        ttl=TTL, meta=meta(),
                    )  # fmt: skip
                    outcomes["saved"] += 1
                except StoreUnavailable:
                    outcomes["unavailable"] += 1
                except (Conflict, Gone):
                    outcomes["conflict"] += 1

        async def killer() -> None:
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                await asyncio.to_thread(_terminate, postgres.admin, name)
            stop.set()

        await asyncio.gather(killer(), *(writer(key) for key in keys))
        for key in keys:
            entry = await store.load(key)
            assert entry is not None
            data = json.loads(entry.payload)  # whole JSON: nothing half-written
            assert data["n"] == entry.version - 1  # every landed save bumped both, in step
        pool = store.engine.sync_engine.pool
        assert pool.checkedout() == len(store._idle)  # no connection lost on the way
        await store.aclose()

    asyncio.run(main())
    assert outcomes["saved"] > 0
    assert outcomes["conflict"] == 0  # each key has one writer: a retried save that landed is ok


def test_a_killed_mariadb_connection_recovers_in_the_async_store(mariadb: Database) -> None:
    table = mariadb.new_table()

    async def kill_held(store: AsyncSQLStore) -> None:
        driver_connection = store._idle[-1][1].driver_connection
        cursor = driver_connection.cursor()
        await cursor.execute("SELECT CONNECTION_ID()")
        [(connection_id,)] = await cursor.fetchall()
        await cursor.close()
        with mariadb.admin.connect() as conn:
            conn.exec_driver_sql(f"KILL {int(connection_id)}")

    async def main() -> None:
        store = AsyncSQLStore(mariadb.url, table=table)
        key = make_key("mariadb-survivor")
        version = await store.save(key, b"before", expected_version=None, ttl=TTL, meta=meta())
        await kill_held(store)
        entry = await store.load(key)
        assert entry is not None
        assert (entry.payload, entry.version) == (b"before", version)
        await kill_held(store)
        version = await store.save(key, b"after", expected_version=version, ttl=TTL, meta=meta())
        entry = await store.load(key)
        assert entry is not None
        assert (entry.payload, entry.version) == (b"after", version)
        await store.aclose()

    asyncio.run(main())


def test_a_second_disconnect_in_a_row_is_unavailable(
    postgres: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = postgres.store()
    attempts = 0

    def always_disconnected(step: Any) -> Any:
        nonlocal attempts
        attempts += 1
        raise sa.exc.OperationalError(
            "SELECT", None, Exception("gone"), connection_invalidated=True
        )

    monkeypatch.setattr(store, "_attempt", always_disconnected)
    with pytest.raises(StoreUnavailable, match="unavailable"):
        store.load(make_key("x"))
    assert attempts == 2  # retried once, not more


def test_a_second_disconnect_in_a_row_is_unavailable_to_the_async_store(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = database.new_table()
    attempts = 0

    async def always_disconnected(step: Any) -> Any:
        nonlocal attempts
        attempts += 1
        raise sa.exc.OperationalError(
            "SELECT", None, Exception("gone"), connection_invalidated=True
        )

    async def main() -> None:
        store = AsyncSQLStore(database.url, table=table)
        monkeypatch.setattr(store, "_aattempt", always_disconnected)
        with pytest.raises(StoreUnavailable, match="unavailable"):
            await store.load(make_key("x"))
        await store.aclose()

    asyncio.run(main())
    assert attempts == 2  # retried once, not more


def test_an_unreachable_server_is_tried_once_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    # A connection that cannot be opened is not a dropped one: no retry doubles the wait.
    store = SQLStore("postgresql+psycopg://user@127.0.0.1:1/db")
    opened = 0
    connect = store.engine.raw_connection

    def counting() -> Any:
        nonlocal opened
        opened += 1
        return connect()

    monkeypatch.setattr(store.engine, "raw_connection", counting)
    with pytest.raises(StoreUnavailable):
        store.load(make_key("x"))
    assert opened == 1
    store.close()


class _CommitThenDrop:
    """Runs each statement, then (once, for the chosen kind) reports the connection dropped.

    The statement has committed, as when a server dies after COMMIT but before
    its reply arrives: the retry must not turn the landed write into an error.
    """

    def __init__(self, store: SQLStore, verb: str) -> None:
        self.real = store._attempt
        self.verb = verb
        self.dropped = False

    def __call__(self, step: Any) -> Any:
        result = self.real(step)
        text = step[0].text or ""
        if not self.dropped and text.startswith(self.verb):
            self.dropped = True
            raise sa.exc.OperationalError(
                text, None, Exception("server closed the connection"), connection_invalidated=True
            )
        return result


@pytest.mark.parametrize("verb", ["INSERT", "UPDATE"])
def test_a_save_that_landed_before_the_connection_died_succeeds(
    database: Database, monkeypatch: pytest.MonkeyPatch, verb: str
) -> None:
    store = database.store()
    key = make_key(f"landed-{verb}")
    version = None
    if verb == "UPDATE":
        version = store.save(key, b"one", expected_version=None, ttl=TTL, meta=meta(time.time()))
    dropper = _CommitThenDrop(store, verb)
    monkeypatch.setattr(store, "_attempt", dropper)
    new = store.save(key, b"two", expected_version=version, ttl=TTL, meta=meta(time.time()))
    assert dropper.dropped
    entry = store.load(key)
    assert entry is not None
    assert (entry.payload, entry.version) == (b"two", new)
    assert new == (1 if version is None else version + 1)


@pytest.mark.parametrize("verb", ["INSERT", "UPDATE"])
def test_an_async_save_that_landed_before_the_connection_died_succeeds(
    database: Database, monkeypatch: pytest.MonkeyPatch, verb: str
) -> None:
    table = database.new_table()

    async def main() -> None:
        store = AsyncSQLStore(database.url, table=table)
        key = make_key(f"async-landed-{verb}")
        version = None
        if verb == "UPDATE":
            version = await store.save(key, b"one", expected_version=None, ttl=TTL, meta=meta())
        real = store._aattempt
        dropped = False

        async def commit_then_drop(step: Any) -> Any:
            nonlocal dropped
            result = await real(step)
            text = step[0].text or ""
            if not dropped and text.startswith(verb):
                dropped = True
                raise sa.exc.OperationalError(
                    text, None, Exception("server closed the connection"),
                    connection_invalidated=True,
                )  # fmt: skip
            return result

        monkeypatch.setattr(store, "_aattempt", commit_then_drop)
        new = await store.save(key, b"two", expected_version=version, ttl=TTL, meta=meta())
        assert dropped
        entry = await store.load(key)
        assert entry is not None
        assert (entry.payload, entry.version) == (b"two", new)
        assert new == (1 if version is None else version + 1)
        await store.aclose()

    asyncio.run(main())


def test_a_retried_save_still_conflicts_with_someone_elses_write(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = database.store()
    key = make_key("retried-conflict")
    v1 = store.save(key, b"one", expected_version=None, ttl=TTL, meta=meta(time.time()))
    store.save(key, b"theirs", expected_version=v1, ttl=TTL, meta=meta(time.time()))
    real = store._attempt
    calls = 0

    def drop_first(step: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise sa.exc.OperationalError(
                "UPDATE", None, Exception("x"), connection_invalidated=True
            )
        return real(step)

    monkeypatch.setattr(store, "_attempt", drop_first)
    with pytest.raises(Conflict):
        store.save(key, b"mine", expected_version=v1, ttl=TTL, meta=meta(time.time()))
    entry = store.load(key)
    assert entry is not None
    assert entry.payload == b"theirs"


def test_a_connection_killed_mid_save_leaves_no_corrupt_session(postgres: Database) -> None:
    name = f"websession-test-{uuid.uuid4().hex[:8]}"
    store = postgres.store(connect_args={"application_name": name})
    key = make_key("mid-run")
    store.save(key, json.dumps({"n": 0}).encode(), expected_version=None, ttl=TTL, meta=meta())
    stop = threading.Event()
    outcomes = {"saved": 0, "unavailable": 0, "conflict": 0}

    def writer() -> None:
        while not stop.is_set():
            try:
                entry = store.load(key)
                assert entry is not None
                data = json.loads(entry.payload)
                data["n"] += 1
                store.save(
                    key, json.dumps(data).encode(), expected_version=entry.version, ttl=TTL,
                    meta=meta(),
                )  # fmt: skip
                outcomes["saved"] += 1
            except StoreUnavailable:
                outcomes["unavailable"] += 1
            except Conflict:
                outcomes["conflict"] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        time.sleep(0.05)
        _terminate(postgres.admin, name)
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    entry = store.load(key)
    assert entry is not None
    data = json.loads(entry.payload)  # whole JSON: nothing half-written
    # Every landed save bumped n by one and the version by one, in step.
    assert data["n"] == entry.version - 1
    assert data["n"] >= outcomes["saved"] - outcomes["unavailable"]
    assert outcomes["saved"] > 0
    store.close()


# -- the engine you pass ---------------------------------------------------------------------------


def test_a_users_engine_is_used_as_is_and_left_open(database: Database) -> None:
    # Transactions, not autocommit: every operation must still be correct.
    engine = sa.create_engine(database.url)
    table = database.new_table()
    clock = FakeClock()
    store = SQLStore(engine, table=table, clock=clock)
    assert store.engine is engine
    key = make_key("users-engine")
    v1 = store.save(key, b"1", expected_version=None, ttl=10, meta=meta(clock()))
    with pytest.raises(Conflict):
        store.save(key, b"x", expected_version=None, ttl=TTL, meta=meta(clock()))
    v2 = store.save(key, b"2", expected_version=v1, ttl=10, meta=meta(clock()))
    with pytest.raises(Conflict):
        store.save(key, b"x", expected_version=v1, ttl=TTL, meta=meta(clock()))
    clock.advance(11)
    with pytest.raises(Gone):
        store.save(key, b"x", expected_version=v2, ttl=TTL, meta=meta(clock()))
    assert store.save(key, b"3", expected_version=None, ttl=TTL, meta=meta(clock())) == 1
    entry = store.load(key)
    assert entry is not None
    assert entry.payload == b"3"
    store.close()
    with engine.connect() as conn:  # the pool still works: close() left it alone
        assert conn.execute(sa.select(sa.func.count()).select_from(store.table)).scalar() == 1
    engine.dispose()


def test_an_isolation_level_of_your_own_still_commits_every_save(database: Database) -> None:
    # Autocommit is what lets the store skip BEGIN/COMMIT; with a level of your own each
    # operation is a transaction of its own, committed, in both forms.
    table = database.new_table()
    reader = SQLStore(database.admin, table=table)
    store = SQLStore(database.url, table=table, isolation_level="SERIALIZABLE")
    key = make_key("isolated")
    version = store.save(key, b"1", expected_version=None, ttl=TTL, meta=meta(time.time()))
    version = store.save(key, b"2", expected_version=version, ttl=TTL, meta=meta(time.time()))
    entry = reader.load(key)
    assert entry is not None
    assert (entry.payload, entry.version) == (b"2", version)
    store.close()

    async def main() -> None:
        async_store = AsyncSQLStore(database.url, table=table, isolation_level="SERIALIZABLE")
        await async_store.save(key, b"3", expected_version=version, ttl=TTL, meta=meta())
        await async_store.aclose()

    asyncio.run(main())
    entry = reader.load(key)
    assert entry is not None
    assert (entry.payload, entry.version) == (b"3", version + 1)


def test_wrong_engines_and_options_are_refused() -> None:
    sync_engine = sa.create_engine("sqlite+pysqlite://")
    async_engine = create_async_engine("sqlite+aiosqlite://")
    with pytest.raises(SessionConfigError, match="use AsyncSQLStore"):
        SQLStore(async_engine)
    with pytest.raises(SessionConfigError, match="use SQLStore"):
        AsyncSQLStore(sync_engine)
    with pytest.raises(SessionConfigError, match="set them on the engine"):
        SQLStore(sync_engine, pool_size=3)
    with pytest.raises(SessionConfigError, match="table="):
        SQLStore(sync_engine, table="sessions; DROP TABLE users")
    with pytest.raises(SessionConfigError, match="schema="):
        SQLStore(sync_engine, schema="a.b")
    with pytest.raises(SessionConfigError, match="connect_timeout"):
        SQLStore("postgresql+psycopg://h/db", connect_timeout=0)
    with pytest.raises(SessionConfigError, match="bad database URL"):
        SQLStore("postgresql+psycopg://u:pw@h:notaport/db")
    sync_engine.dispose()


# -- URLs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg://h/db", True),
        ("postgresql://h/db", True),
        ("mysql://h/db", True),
        ("mariadb://h/db", True),
        ("mysql+asyncmy://h/db", True),
        ("sqlite+pysqlite:///x.db", True),
        ("sqlite:///x.db", False),
        ("redis+cluster://h", False),
        ("redis://h", False),
        ("memory://", False),
        ("plain", False),
    ],
)
def test_is_sql_url(url: str, expected: bool) -> None:
    assert is_sql_url(url) is expected


@pytest.mark.parametrize(
    ("url", "sync", "asynchronous"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://h/db", "postgresql+psycopg://h/db", "postgresql+psycopg://h/db"),
        ("postgresql+asyncpg://h/db", "postgresql+asyncpg://h/db", "postgresql+asyncpg://h/db"),
        ("mysql://h/db", "mysql+pymysql://h/db", "mysql+asyncmy://h/db"),
        ("mysql+pymysql://h/db", "mysql+pymysql://h/db", "mysql+asyncmy://h/db"),
        ("mariadb+pymysql://h/db", "mariadb+pymysql://h/db", "mariadb+asyncmy://h/db"),
        ("sqlite+pysqlite:///x.db", "sqlite+pysqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_drivers_are_chosen_for_each_form(url: str, sync: str, asynchronous: str) -> None:
    assert sync_url(url) == sync
    assert async_url(url) == asynchronous


def test_table_and_schema_can_come_from_the_url(tmp_path: Path) -> None:
    store = SQLStore(f"sqlite+pysqlite:///{tmp_path / 's.db'}?table=my_sessions&schema=main")
    assert (store.table_name, store.schema) == ("my_sessions", "main")
    assert store.table.fullname == "main.my_sessions"
    assert "table=my_sessions" in store.store_url
    assert "table" not in store.engine.url.query
    store.create_table()
    store.save(make_key("s"), b"x", expected_version=None, ttl=TTL, meta=meta(time.time()))
    assert store.load(make_key("s")) is not None
    store.close()


def test_protocol_attributes_per_dialect(tmp_path: Path) -> None:
    sqlite_store = SQLStore(f"sqlite+pysqlite:///{tmp_path / 's.db'}")
    assert sqlite_store.inline is True  # a local file: cheaper than a thread hop
    assert isinstance(sqlite_store, InspectableStore)
    network = [SQLStore("postgresql+psycopg://h/db"), SQLStore("mysql+pymysql://h/db")]
    assert [s.inline for s in network] == [False, False]
    assert network[0].max_payload_size is None
    assert network[1].max_payload_size == sql_module.MYSQL_MAX_PAYLOAD
    assert SQLStore("mysql+pymysql://h/db", max_payload_size=1000).max_payload_size == 1000


# -- no lost update through the WSGI middleware ----------------------------------------------------

REQUESTS = 50


@pytest.fixture(params=["postgresql", "mysql"])
def server_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    yield from open_database(request.param, tmp_path)


def test_fifty_concurrent_wsgi_writers_lose_no_update(server_database: Database) -> None:
    database = server_database
    conflicts = 0
    lock = threading.Lock()
    inner = database.store()

    class Counting(SQLStore):
        def save(
            self, key: str, payload: bytes, *, expected_version: int | None, ttl: float,
            meta: Meta,
        ) -> int:  # fmt: skip
            nonlocal conflicts
            try:
                return super().save(
                    key, payload, expected_version=expected_version, ttl=ttl, meta=meta
                )
            except Conflict:
                with lock:
                    conflicts += 1
                raise

    store = Counting(database.url, table=inner.table_name)

    assert_concurrent_writers_survive(store, REQUESTS)
    assert conflicts > 0  # the replay path really ran
    store.close()
    inner.close()


# -- the async store on its driver's own connection ----------------------------------------------


def test_the_async_store_awaits_its_driver_without_a_greenlet_per_call(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLAlchemy's greenlet serves the pool (taking and giving back a connection);
    # once a connection is held, a call's statements are awaited on the driver's own
    # asyncio connection, including the follow-up that tells Conflict from Gone.
    table = database.new_table()
    spawned: list[Any] = []
    real = sql_module.greenlet_spawn

    def counting(function: Any, *args: Any, **kwargs: Any) -> Any:
        spawned.append(function)
        return real(function, *args, **kwargs)

    monkeypatch.setattr(sql_module, "greenlet_spawn", counting)

    async def main() -> None:
        clock = FakeClock()
        store = AsyncSQLStore(database.url, table=table, clock=clock)
        key = make_key("native")
        version = await store.save(key, b"1", expected_version=None, ttl=TTL, meta=meta(clock()))
        assert spawned  # the first call took its connection from the pool
        # A failed statement gives its connection back to the pool, as the sync store does.
        with pytest.raises(Conflict):
            await store.save(key, b"x", expected_version=None, ttl=TTL, meta=meta(clock()))
        spawned.clear()
        entry = await store.load(key)
        assert entry is not None
        assert entry.payload == b"1"
        version = await store.save(key, b"2", expected_version=version, ttl=TTL, meta=meta(clock()))
        assert await store.touch(key, TTL) is True
        with pytest.raises(Conflict):
            await store.save(key, b"x", expected_version=version - 1, ttl=TTL, meta=meta(clock()))
        assert [k for k, _ in await store.sessions_for("u1")] == [key]
        assert await store.revoke(key) is True
        await store.delete(key)
        with pytest.raises(Gone):
            await store.save(key, b"x", expected_version=version, ttl=TTL, meta=meta(clock()))
        assert await store.load(key) is None
        assert await store.delete_expired(10) == 0
        assert spawned == []
        await store.aclose()

    asyncio.run(main())


def test_fifty_coroutines_share_a_small_pool(database: Database) -> None:
    # More coroutines than connections: those waiting for the pool get connections as
    # calls end (a held connection never sits unused while a coroutine waits for one
    # until the pool times out), and every session ends as its own coroutine left it.
    table = database.new_table()

    async def main() -> None:
        store = AsyncSQLStore(
            database.url, table=table, pool_size=2, max_overflow=0, pool_timeout=10
        )
        keys = [make_key(f"crowd-{i}") for i in range(50)]

        async def one(i: int, key: str) -> int:
            first = f"{i}:0".encode()
            user = meta(time.time(), user_id=f"user-{i}")
            version = await store.save(key, first, expected_version=None, ttl=TTL, meta=user)
            entry = await store.load(key)
            assert entry is not None
            assert entry.payload == first
            return await store.save(
                key, f"{i}:1".encode(), expected_version=version, ttl=TTL, meta=user
            )

        versions = await asyncio.gather(*(one(i, key) for i, key in enumerate(keys)))
        assert versions == [2] * 50
        for i, key in enumerate(keys):
            entry = await store.load(key)
            assert entry is not None
            assert (entry.payload, entry.user_id) == (f"{i}:1".encode(), f"user-{i}")
        pool = store.engine.sync_engine.pool
        assert pool.checkedout() == len(store._idle) <= 2  # none lost, none beyond the pool
        await store.aclose()

    asyncio.run(main())


def test_threads_share_a_small_pool_too(server_database: Database) -> None:
    # The sync store holds connections the same way and gives them up the same way.
    database = server_database
    store = database.store(pool_size=2, max_overflow=0, pool_timeout=10)
    barrier = threading.Barrier(10)

    def one(i: int) -> int:
        barrier.wait()
        key = make_key(f"threads-{i}")
        return store.save(key, b"x", expected_version=None, ttl=TTL, meta=meta(time.time()))

    with ThreadPoolExecutor(max_workers=10) as pool:
        assert list(pool.map(one, range(10))) == [1] * 10
    assert store.engine.pool.checkedout() == len(store._idle) <= 2
    store.close()


def test_no_driver_connection_serves_two_statements_at_once(
    postgres: Database, tmp_path: Path
) -> None:
    # Seen on the wire: each connection's libpq protocol trace must show every
    # command answered (ReadyForQuery) before the next one is sent.
    from psycopg import pq

    traces: list[Path] = []

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        trace = tmp_path / f"connection-{len(traces)}"
        traces.append(trace)
        pgconn = dbapi_connection.driver_connection.pgconn
        pgconn.trace(os.open(trace, os.O_WRONLY | os.O_APPEND | os.O_CREAT))
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)

    table = postgres.new_table()

    async def main() -> None:
        store = AsyncSQLStore(POSTGRES_URL, table=table)
        sa.event.listen(store.engine.sync_engine, "connect", on_connect)
        keys = [make_key(f"exclusive-{i}") for i in range(50)]

        async def rounds(key: str) -> None:
            version = await store.save(key, b"0", expected_version=None, ttl=TTL, meta=meta())
            for n in range(1, 4):
                entry = await store.load(key)
                assert entry is not None
                assert entry.version == version
                version = await store.save(
                    key, str(n).encode(), expected_version=version, ttl=TTL, meta=meta()
                )

        await asyncio.gather(*(rounds(key) for key in keys))
        await store.aclose()

    asyncio.run(main())
    executed = 0
    overlaps = []
    for trace in traces:
        waiting = False  # a command was sent and its ReadyForQuery has not come yet
        for line in trace.read_text().splitlines():
            fields = line.split("\t")
            if len(fields) < 3:
                continue  # the rest of a statement's text
            sender, message = fields[0], fields[2]
            if sender == "F" and message in ("Sync", "Query"):
                if waiting:
                    overlaps.append(f"{trace.name}: {line}")
                waiting = True
            elif sender == "B" and message == "ReadyForQuery":
                waiting = False
            elif sender == "B" and message == "CommandComplete":
                executed += 1
    assert len(traces) > 1  # the calls did run on several connections at once
    assert executed >= 50 * 7
    assert overlaps == []


def test_a_cancelled_call_does_not_keep_its_connection(postgres: Database) -> None:
    # A save waiting on a row lock is cancelled (a request timeout): its connection is in
    # an unknown state, so it is dropped rather than held for the next call.
    table = postgres.new_table()

    async def main() -> None:
        store = AsyncSQLStore(POSTGRES_URL, table=table)
        key = make_key("cancelled")
        version = await store.save(key, b"one", expected_version=None, ttl=TTL, meta=meta())
        sessions = store.table
        with postgres.admin.connect() as other:
            other.execute(
                sa.select(sessions.c.session_key)
                .where(sessions.c.session_key == key)
                .with_for_update()
            )
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(
                    store.save(key, b"two", expected_version=version, ttl=TTL, meta=meta()), 0.3
                )
            other.rollback()
        pool = store.engine.sync_engine.pool
        assert pool.checkedout() == len(store._idle) == 0
        entry = await store.load(key)
        assert entry is not None
        assert (entry.payload, entry.version) == (b"one", version)  # the server cancelled it
        version = await store.save(key, b"three", expected_version=version, ttl=TTL, meta=meta())
        entry = await store.load(key)
        assert entry is not None
        assert (entry.payload, entry.version) == (b"three", version)
        await store.aclose()

    asyncio.run(main())


def test_entries_lists_live_sessions_newest_first(database: Database) -> None:
    clock = FakeClock()
    store = database.store(clock)
    keys = [make_key(f"list-{i}") for i in range(3)]
    for key in keys:
        store.save(key, b"x", expected_version=None, ttl=TTL, meta=meta(clock(), user_id="a"))
        clock.advance(1)
    found = list(store.entries(user_id="a"))
    assert [k for k, _ in found] == list(reversed(keys))
    assert all(isinstance(e, Entry) and e.user_id == "a" for _, e in found)
    assert [k for k, _ in store.entries(prefix=keys[1][:10])] == [keys[1]]


def test_store_from_url_and_the_middlewares_build_the_sql_store(tmp_path: Path) -> None:
    from websession import store_from_url
    from websession.asgi import SessionMiddleware as ASGIMiddleware
    from websession.stores import AsyncSQLStore as PublicAsync
    from websession.stores import SQLStore as Public

    url = f"sqlite+pysqlite:///{tmp_path / 's.db'}?table=from_url"
    store = store_from_url(url)
    assert type(store) is Public is SQLStore
    assert store.table_name == "from_url"
    async_store = store_from_url("mysql+pymysql://root@127.0.0.1/test", asynchronous=True)
    assert type(async_store) is PublicAsync is AsyncSQLStore
    assert async_store.engine.url.drivername == "mysql+asyncmy"
    assert type(store_from_url("postgresql://u:pw@h/db")) is SQLStore
    wsgi = WSGIMiddleware(wsgi_app(lambda s, e: None), store="postgresql+psycopg://h/db")
    asgi = ASGIMiddleware(wsgi_app(lambda s, e: None), store="postgresql+psycopg://h/db")
    assert type(wsgi.store) is SQLStore
    assert type(asgi.store) is AsyncSQLStore
    store.close()


# -- PostgreSQL: statements prepared and sent on libpq ----------------------------------------


def _unopened(postgres: Database, **options: Any) -> SQLStore:
    """A store on a fresh table whose engine has opened no connection yet."""
    return SQLStore(POSTGRES_URL, table=postgres.new_table(), **options)


def _opened(store: SQLStore | AsyncSQLStore) -> list[Any]:
    """The psycopg connections the store's engine opens, in the order it opens them."""
    opened: list[Any] = []

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        opened.append(getattr(dbapi_connection, "driver_connection", dbapi_connection))

    sa.event.listen(getattr(store.engine, "sync_engine", store.engine), "connect", on_connect)
    return opened


def _prepared_here(connection: Any) -> list[str]:
    """The statements prepared on ``connection``, by name (sync or async psycopg)."""
    sql = "SELECT name FROM pg_prepared_statements ORDER BY name"
    return [row[0] for row in connection.execute(sql).fetchall()]


def test_postgresql_statements_are_prepared_once_per_connection(postgres: Database) -> None:
    store = _unopened(postgres)
    opened = _opened(store)
    key = make_key("prepared")
    version = store.save(key, b"one", expected_version=None, ttl=TTL, meta=meta())
    for n in range(5):
        entry = store.load(key)
        assert entry is not None
        version = store.save(key, b"%d" % n, expected_version=version, ttl=TTL, meta=meta())
    assert len(opened) == 1
    names = _prepared_here(opened[0])
    # INSERT, SELECT, UPDATE: each prepared once, under a name of websession's own.
    assert len(names) == 3
    assert all(name.startswith("websession_") for name in names)
    store.close()


def test_postgresql_values_round_trip_exactly(postgres: Database) -> None:
    # Binary parameters and results: floats to the last bit, text in UTF-8, NULLs.
    store = postgres.store()
    key = make_key("exact")
    created = 1_700_000_000.123456789
    seen = created + 0.1 + 0.2
    payload = bytes(range(256)) * 3
    store.save(
        key,
        payload,
        expected_version=None,
        ttl=TTL,
        meta=Meta(created, seen, user_id="jörg-ß-✓", ip=None, user_agent="Mozilla/5.0 (ü) \x01"),
    )
    entry = store.load(key)
    assert entry is not None
    assert entry.payload == payload
    assert (entry.created, entry.last_seen) == (created, seen)
    assert (entry.user_id, entry.ip, entry.user_agent) == ("jörg-ß-✓", None, "Mozilla/5.0 (ü) \x01")
    assert entry.version == 1
    [(found, listed)] = store.sessions_for("jörg-ß-✓")
    assert found == key
    assert listed.last_seen == seen
    store.close()


def test_postgresql_statements_survive_deallocate_all(postgres: Database) -> None:
    # A pooler's reset (DISCARD ALL, DEALLOCATE ALL) drops the prepared statements under
    # the store: the next call prepares them again, on the same connection, and succeeds.
    store = _unopened(postgres)
    opened = _opened(store)
    key = make_key("deallocated")
    version = store.save(key, b"one", expected_version=None, ttl=TTL, meta=meta())
    assert store.load(key) is not None
    opened[0].execute("DEALLOCATE ALL")
    entry = store.load(key)
    assert entry is not None
    assert entry.payload == b"one"
    opened[0].execute("DEALLOCATE ALL")
    version = store.save(key, b"two", expected_version=version, ttl=TTL, meta=meta())
    entry = store.load(key)
    assert entry is not None
    assert (entry.payload, entry.version) == (b"two", version)
    assert len(opened) == 1  # no reconnect: the same connection prepared them again
    store.close()


def test_postgresql_statements_survive_a_column_type_change(postgres: Database) -> None:
    # A migration that changes a column's type invalidates the prepared SELECT
    # ("cached plan must not change result type"): it is prepared again.
    store = postgres.store()
    key = make_key("migrated")
    store.save(key, b"one", expected_version=None, ttl=TTL, meta=meta(ip="192.0.2.1"))
    assert store.load(key) is not None
    with postgres.admin.begin() as conn:
        conn.execute(sa.text(f'ALTER TABLE "{store.table_name}" ALTER COLUMN ip TYPE TEXT'))
    entry = store.load(key)
    assert entry is not None
    assert (entry.payload, entry.ip) == (b"one", "192.0.2.1")
    store.close()


def test_postgresql_prepare_threshold_none_keeps_psycopg_unprepared(postgres: Database) -> None:
    # prepare_threshold=None tells psycopg never to prepare (a pooler that cannot keep
    # prepared statements): the store then prepares nothing either.
    store = _unopened(postgres, connect_args={"prepare_threshold": None})
    opened = _opened(store)
    key = make_key("unprepared")
    version = store.save(key, b"one", expected_version=None, ttl=TTL, meta=meta())
    for n in range(8):
        assert store.load(key) is not None
        version = store.save(key, b"%d" % n, expected_version=version, ttl=TTL, meta=meta())
    assert len(opened) == 1
    assert _prepared_here(opened[0]) == []
    store.close()


def test_async_postgresql_statements_are_prepared_and_survive_deallocate(
    postgres: Database,
) -> None:
    table = postgres.new_table()

    async def main() -> None:
        store = AsyncSQLStore(POSTGRES_URL, table=table)
        opened = _opened(store)
        key = make_key("async-prepared")
        version = await store.save(key, b"one", expected_version=None, ttl=TTL, meta=meta())
        for n in range(3):
            assert await store.load(key) is not None
            version = await store.save(
                key, b"%d" % n, expected_version=version, ttl=TTL, meta=meta()
            )
        assert len(opened) == 1
        names = [
            row[0]
            for row in await (
                await opened[0].execute("SELECT name FROM pg_prepared_statements")
            ).fetchall()
        ]
        assert len(names) == 3
        assert all(name.startswith("websession_") for name in names)
        await opened[0].execute("DEALLOCATE ALL")
        entry = await store.load(key)
        assert entry is not None
        assert (entry.payload, entry.version) == (b"2", version)
        assert len(opened) == 1
        await store.aclose()

    asyncio.run(main())


def test_postgresql_statements_stay_prepared_while_connections_cycle_through_the_pool(
    postgres: Database, tmp_path: Path
) -> None:
    # More callers than pooled connections: connections go back to the pool between
    # calls and come out again. What was prepared on one is remembered with it, so each
    # statement is sent for preparing once per connection, never once per checkout.
    from psycopg import pq

    traces: list[Path] = []
    store = _unopened(postgres, pool_size=2, max_overflow=0, pool_timeout=10)

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        trace = tmp_path / f"connection-{len(traces)}"
        traces.append(trace)
        dbapi_connection.pgconn.trace(os.open(trace, os.O_WRONLY | os.O_APPEND | os.O_CREAT))
        dbapi_connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)

    sa.event.listen(store.engine, "connect", on_connect)
    keys = [make_key(f"cycle-{i}") for i in range(6)]
    for key in keys:
        store.save(key, b"x", expected_version=None, ttl=TTL, meta=meta())
    barrier = threading.Barrier(6)

    def loads(key: str) -> int:
        barrier.wait()
        return sum(store.load(key) is not None for _ in range(40))

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(loads, keys)) == [40] * 6
    store.close()
    assert len(traces) == 2
    for trace in traces:
        parses = re.findall(r'\tParse\t "(websession_\w+)"', trace.read_text())
        assert parses, "the connection ran the store's statements"
        assert len(parses) == len(set(parses)), f"{trace.name} prepared a statement twice"


def _round_trips_without_preparing(store: SQLStore, tmp_path: Path, label: str) -> None:
    """A create, an update and loads work on ``store``, and nothing is prepared under
    websession's statement names (libpq's trace has no such Parse)."""
    log = CursorLog(store.table_name)
    log.attach(store.engine, tmp_path / "trace")
    key = make_key(label)
    version = store.save(key, b"one", expected_version=None, ttl=TTL, meta=meta())
    assert log.during(lambda: store.load(key)) == ["SELECT"]
    assert store.save(key, b"two", expected_version=version, ttl=TTL, meta=meta()) == version + 1
    entry = store.load(key)
    assert entry is not None
    assert entry.payload == b"two"
    assert not re.search(r"\tParse\t \"websession_", (tmp_path / "trace").read_text())
    store.close()


def test_postgresql_on_a_null_pool_prepares_nothing(postgres: Database, tmp_path: Path) -> None:
    # Every call on a NullPool opens a new connection: preparing there would cost each call
    # a round trip more, so the statements go as psycopg sends them, one round trip each.
    from sqlalchemy.pool import NullPool

    _round_trips_without_preparing(_unopened(postgres, poolclass=NullPool), tmp_path, "null-pool")


def test_postgresql_with_a_non_utf8_client_encoding_keeps_psycopg(
    postgres: Database, tmp_path: Path
) -> None:
    # Text goes to libpq as UTF-8 bytes, so a connection in another client encoding is
    # left to psycopg, which converts: the values still round trip, nothing is prepared
    # under websession's names.
    store = _unopened(postgres, connect_args={"client_encoding": "LATIN1"})
    log = CursorLog(store.table_name)
    log.attach(store.engine, tmp_path / "trace")
    key = make_key("latin1")
    store.save(key, b"one", expected_version=None, ttl=TTL, meta=meta(user_agent="Café/1.0"))
    entry = store.load(key)
    assert entry is not None
    assert (entry.payload, entry.user_agent) == (b"one", "Café/1.0")
    assert not re.search(r"\tParse\t \"websession_", (tmp_path / "trace").read_text())
    store.close()


def test_postgresql_on_psycopg_before_3_2_keeps_psycopg(
    postgres: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # psycopg 3.1 has no cancel_safe, which the libpq path needs to cancel an interrupted
    # async statement: such a connection keeps psycopg's cursor and works as before.
    import psycopg

    monkeypatch.delattr(psycopg.Connection, "cancel_safe")
    _round_trips_without_preparing(_unopened(postgres), tmp_path, "psycopg-3.1")
