"""PostgreSQL: the SQL store's statements sent on psycopg's libpq connection directly.

psycopg's ``cursor.execute`` spends, per call, about as many instructions as
the rest of a whole websession request: it adapts each parameter through its
adapters map, looks the query up in its prepared-statement cache, builds a
result object and loaders, and keeps a cursor's state. A session store runs
the same handful of statements with the same parameter types for ever, so
here each statement is compiled once to PostgreSQL's ``$n`` form, prepared
once per connection under a name of its own, and executed with
``PQexecPrepared`` on the connection's ``pgconn`` (psycopg's public wrapper
of the libpq connection), parameters and results in binary.

What stays psycopg's: the connection itself (opened, configured and pooled
as before), its error classes (:func:`psycopg.errors.error_from_result`, so
SQLAlchemy maps a unique violation to IntegrityError and a dropped server to
a disconnect exactly as on the cursor path), and the server's answers. The
statements are prepared once per connection, as psycopg itself does after
five executions; a connection on which psycopg may not prepare
(``prepare_threshold=None``, e.g. behind a pooler without prepared
statements) and one whose client encoding is not UTF-8 use psycopg's cursor.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from psycopg import OperationalError
from psycopg.errors import error_from_result
from psycopg.pq import DiagnosticField

from .base import Entry
from .sql import _ALL, _FIRST, _ROWS

__all__ = ["PgCursor", "PgStatement", "numbered", "pg_statement"]

_DOUBLE = struct.Struct(">d")
_BIGINT = struct.Struct(">q")
_INTEGER = struct.Struct(">i")
_DOUBLE_UNPACK = _DOUBLE.unpack
_BIGINT_UNPACK = _BIGINT.unpack

# PostgreSQL's type OIDs for the column types of the session table.
_BYTEA, _INT8, _INT4, _TEXT, _FLOAT8, _VARCHAR = 17, 20, 23, 25, 701, 1043

# ExecStatus values (libpq's, as psycopg.pq.ExecStatus names them).
_COMMAND_OK, _TUPLES_OK = 1, 2

#: SQLSTATEs after which a statement is prepared again and run once more: the
#: prepared statement is gone (26000: DISCARD ALL, a pooler) or its plan is
#: stale (0A000 "cached plan must not change result type", after a migration).
_REPREPARE = (b"26000", b"0A000")
_DUPLICATE_PREPARED = b"42P05"
_SQLSTATE = DiagnosticField.SQLSTATE
#: How long an interrupted statement's cancel request may take (psycopg's own figure).
_CANCEL_TIMEOUT = 5.0

log = logging.getLogger("websession")


# How a result column is read from its binary form (see PgStatement._row).
_AS_IS, _NUMBER, _TEXT_VALUE = 0, 1, 2

#: For each SQLAlchemy type the statements use: the parameter OID, the parameter
#: encoder and how a result value is read, all in PostgreSQL's binary format.
_CODECS: list[tuple[type[Any], int, Callable[[Any], bytes], int, Any]] = [
    (sa.LargeBinary, _BYTEA, bytes, _AS_IS, None),  # bytes(b) is b itself
    (sa.BigInteger, _INT8, _BIGINT.pack, _NUMBER, _BIGINT.unpack),
    (sa.Integer, _INT4, _INTEGER.pack, _NUMBER, _INTEGER.unpack),
    (sa.Double, _FLOAT8, _DOUBLE.pack, _NUMBER, _DOUBLE.unpack),
    (sa.Text, _TEXT, str.encode, _TEXT_VALUE, None),  # UTF-8: see PgCursor.usable
    (sa.String, _VARCHAR, str.encode, _TEXT_VALUE, None),
]


class _Unsupported(Exception):
    """A type this module does not send or read in binary: the statement stays psycopg's."""


def _codec(type_: Any) -> tuple[int, Callable[[Any], bytes], int, Any]:
    for kind, oid, encode, reading, unpack in _CODECS:  # subclasses first: BigInteger, Integer
        if isinstance(type_, kind):
            return oid, encode, reading, unpack
    raise _Unsupported(type(type_).__name__)


class PgStatement:
    """One statement in PostgreSQL's form: its name, ``$n`` SQL, parameter slots and decoders."""

    __slots__ = (
        "columns", "formats", "name", "numbers", "oids", "read", "sql", "template", "texts",
        "variable",
    )  # fmt: skip

    def __init__(self, core: Any, dialect: sa.Dialect) -> None:
        compiled = core.compile(dialect=dialect)
        sql = compiled.string
        self.sql = sql.encode()
        digest = hashlib.sha256(self.sql).hexdigest()[:24]
        self.name = f"websession_{digest}".encode()
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        oids: list[int] = []
        template: list[bytes | None] = []
        variable: list[tuple[int, str, Callable[[Any], bytes]]] = []
        for index, name in enumerate(compiled.positiontup or ()):
            bind = by_name[name]
            oid, encode, _reading, _unpack = _codec(bind.type)
            oids.append(oid)
            if not bind.required and bind.effective_value is not None:
                template.append(encode(bind.effective_value))  # a constant: version = 1
            else:
                template.append(None)
                variable.append((index, name, encode))
        self.oids = oids
        self.template = template
        self.variable = tuple(variable)
        self.formats = [1] * len(oids)
        columns = getattr(core, "selected_columns", None)
        if columns is None and getattr(core, "_returning", None):
            raise _Unsupported("RETURNING")
        readings = [_codec(column.type)[2:] for column in columns or ()]
        self.columns = range(len(readings))
        self.numbers = tuple(
            (index, unpack) for index, (how, unpack) in enumerate(readings) if how == _NUMBER
        )
        self.texts = tuple(index for index, (how, _) in enumerate(readings) if how == _TEXT_VALUE)
        #: Reads one row: the unrolled reader of the session columns where they are what
        #: the statement selects (the load on every request), else the general one.
        self.read: Callable[[Any, int], Any] = self._row
        if columns is not None and _is_session_row(list(columns)):
            self.read = _session_row

    def values(self, params: dict[str, Any]) -> list[bytes | None]:
        """The parameters, encoded in binary, in ``$n`` order."""
        values = self.template.copy()
        for index, name, encode in self.variable:
            value = params[name]
            if value is not None:
                values[index] = encode(value)
        return values

    def result(self, res: Any, mode: int) -> Any:
        """What the step wants from a successful result (see sql.py's ``_result``)."""
        if mode == _FIRST:
            return self.read(res, 0) if res.ntuples else None
        if mode == _ALL:
            read = self.read
            return [read(res, row) for row in range(res.ntuples)]
        if mode == _ROWS:
            return res.command_tuples or 0
        return True

    def _row(self, res: Any, row: int) -> list[Any]:
        get = res.get_value
        values = [get(row, column) for column in self.columns]
        for column, unpack in self.numbers:
            value = values[column]
            if value is not None:
                values[column] = unpack(value)[0]
        for column in self.texts:
            value = values[column]
            if value is not None:
                values[column] = value.decode()
        return values


#: The session table's payload, version, three times and three texts (String covers Text).
_SESSION_ROW = (
    sa.LargeBinary, sa.BigInteger, sa.Double, sa.Double, sa.Double, sa.String, sa.String, sa.String
)  # fmt: skip


def _is_session_row(columns: list[Any]) -> bool:
    """Whether ``columns`` are :data:`_SESSION_ROW`, the first five NOT NULL, in that order
    (what :func:`_session_row` reads)."""
    kinds = _SESSION_ROW
    return len(columns) == len(kinds) and all(
        isinstance(column.type, kind) and (index > 4 or column.nullable is False)
        for index, (column, kind) in enumerate(zip(columns, kinds, strict=True))
    )


def _session_row(res: Any, row: int) -> Entry:
    """payload, version, created_at, updated_at, expires_at, user_id, ip, user_agent,
    read straight into the Entry the store returns."""
    get = res.get_value
    user, ip, agent = get(row, 5), get(row, 6), get(row, 7)
    return Entry(
        get(row, 0),
        _BIGINT_UNPACK(get(row, 1))[0],
        _DOUBLE_UNPACK(get(row, 2))[0],
        _DOUBLE_UNPACK(get(row, 3))[0],
        _DOUBLE_UNPACK(get(row, 4))[0],
        None if user is None else user.decode(),
        None if ip is None else ip.decode(),
        None if agent is None else agent.decode(),
    )


def numbered(dialect: sa.Dialect) -> sa.Dialect:
    """A dialect like ``dialect`` that compiles bound parameters as PostgreSQL's ``$n``."""
    made: sa.Dialect = type(dialect)(paramstyle="numeric_dollar")  # type: ignore[call-arg]
    return made


def pg_statement(core: Any, dialect: sa.Dialect) -> PgStatement | None:
    """``core`` in PostgreSQL's form, or None if a type in it is not one this module handles.

    ``dialect`` is a :func:`numbered` one, made once for all of a store's statements.
    """
    try:
        return PgStatement(core, dialect)
    except _Unsupported:
        return None


class PgCursor:
    """A held psycopg connection's libpq handle, with what has been prepared on it.

    It stands where a DBAPI cursor stands in the SQL store's stack of held
    connections; ``cursor`` is a psycopg cursor for the statements that have
    no PostgreSQL form. Should ``prepared`` have lost a name the connection
    still has, preparing it again meets 42P05, which counts as prepared.
    """

    __slots__ = ("connection", "cursor", "pgconn", "prepared")

    def __init__(self, connection: Any, cursor: Any, prepared: set[bytes]) -> None:
        self.connection = connection
        self.cursor = cursor
        self.pgconn = connection.pgconn
        #: The names prepared on this connection: the caller keeps the set with it.
        self.prepared = prepared

    @staticmethod
    def usable(connection: Any) -> bool:
        """Whether statements may be prepared and sent in binary on this psycopg connection.

        Not where psycopg may not prepare, not in a client encoding other than
        UTF-8, and not on psycopg before 3.2, which cannot cancel an interrupted
        statement without blocking (``cancel_safe``).
        """
        return (
            getattr(connection, "prepare_threshold", None) is not None
            and connection.info.encoding == "utf-8"
            and hasattr(connection, "cancel_safe")
        )

    def close(self) -> Any:
        return self.cursor.close()

    def _error(self, res: Any) -> Exception:
        return error_from_result(res, encoding="utf-8")

    def _prepared(self, statement: PgStatement, res: Any) -> None:
        """Record a PREPARE's outcome (``res``), raising the server's error if it failed."""
        if res.status != _COMMAND_OK and res.error_field(_SQLSTATE) != _DUPLICATE_PREPARED:
            raise self._error(res)
        self.prepared.add(statement.name)

    def _again(self, res: Any, retried: bool) -> bool:
        """Whether a failed execution is one that preparing again cures, the first time."""
        return not retried and res.error_field(_SQLSTATE) in _REPREPARE

    # -- blocking (the sync store) --------------------------------------------------------

    def run(self, statement: PgStatement, params: dict[str, Any], mode: int) -> Any:
        """Execute ``statement`` (preparing it first on this connection if need be)."""
        pgconn = self.pgconn
        values = statement.values(params)
        retried = False
        while True:
            if statement.name not in self.prepared:
                self._prepared(
                    statement, pgconn.prepare(statement.name, statement.sql, statement.oids)
                )
            res = pgconn.exec_prepared(statement.name, values, statement.formats, 1)
            status = res.status
            if status == _TUPLES_OK and mode == _FIRST:  # the load, on every request
                return statement.read(res, 0) if res.ntuples else None
            if status in (_TUPLES_OK, _COMMAND_OK):
                return statement.result(res, mode)
            if not self._again(res, retried):
                raise self._error(res)
            self._forget(statement)
            retried = True

    def _forget(self, statement: PgStatement) -> None:
        """Drop a prepared statement the server no longer runs (blocking)."""
        self.prepared.discard(statement.name)
        self.pgconn.exec_(b"DEALLOCATE " + statement.name)  # fails harmlessly if it is gone

    # -- awaited (the async store) --------------------------------------------------------

    async def arun(self, statement: PgStatement, params: dict[str, Any], mode: int) -> Any:
        """:meth:`run` on an asyncio connection: libpq in non-blocking mode, the loop waits."""
        values = statement.values(params)
        retried = False
        while True:
            if statement.name not in self.prepared:
                self.pgconn.send_prepare(statement.name, statement.sql, statement.oids)
                self._prepared(statement, await self._aresult())
            self.pgconn.send_query_prepared(statement.name, values, statement.formats, 1)
            res = await self._aresult()
            status = res.status
            if status in (_TUPLES_OK, _COMMAND_OK):
                return statement.result(res, mode)
            if not self._again(res, retried):
                raise self._error(res)
            self.prepared.discard(statement.name)
            self.pgconn.send_query(b"DEALLOCATE " + statement.name)
            await self._aresult()  # an error here only means it was gone already
            retried = True

    async def _aresult(self) -> Any:
        """The answer to what was sent; an interrupted wait cancels the command on the server.

        Cancelled (a request timeout, a client gone), the command would otherwise
        go on in the server and land later, e.g. a save waiting for a row lock.
        As psycopg does, the server is asked to cancel it before the
        cancellation goes on; the caller then drops the connection, whose state
        is unknown.
        """
        try:
            return await self._answer()
        except (asyncio.CancelledError, KeyboardInterrupt):
            try:
                await self.connection.cancel_safe(timeout=_CANCEL_TIMEOUT)
            except Exception as exc:  # the cancellation goes on either way
                log.warning("could not cancel an interrupted session statement: %s", exc)
            raise

    async def _answer(self) -> Any:
        """Flush what was sent and gather the answer to it: its (first) result."""
        pgconn = self.pgconn
        loop = asyncio.get_running_loop()
        fd = pgconn.socket
        while pgconn.flush():
            await _ready(loop, fd, writing=True)
        first = None
        while True:
            while pgconn.is_busy():
                await _ready(loop, fd, writing=False)
                pgconn.consume_input()
            res = pgconn.get_result()
            if res is None:
                break
            if first is None:
                first = res
        if first is None:  # no answer at all: what libpq knows of why
            reason = pgconn.get_error_message().decode("utf-8", "replace")
            raise OperationalError(f"the server sent no result: {reason}")
        return first


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, writing: bool) -> None:
    """Wait until the socket is readable (or writable)."""
    done = loop.create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    if writing:
        loop.add_writer(fd, wake)
        try:
            await done
        finally:
            loop.remove_writer(fd)
    else:
        loop.add_reader(fd, wake)
        try:
            await done
        finally:
            loop.remove_reader(fd)
