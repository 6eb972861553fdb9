"""SQLiteStore: the embedded default store, standard-library ``sqlite3`` only.

WAL journal mode with ``synchronous=NORMAL`` by default: a power loss may drop
the last few commits but never corrupts the file, and a commit costs no
fsync. ``synchronous="FULL"`` makes every commit durable. Readers never block
the writer and vice versa, so many threads and processes on one host can
share one database file.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator

from ..errors import Conflict, Gone, SessionConfigError, StoreUnavailable
from .base import (
    Clock,
    Entry,
    InlineAsyncUserIndex,
    Meta,
    check_limit,
    default_clock,
    next_version,
    prefix_upper_bound,
)

__all__ = ["AsyncSQLiteStore", "SQLiteStore"]

_SYNCHRONOUS = ("NORMAL", "FULL")
_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_COLUMNS = "payload, version, created, last_seen, expires, user_id, ip, user_agent"
# CAST: a row written by something else may hold TEXT; the store still hands
# out bytes and leaves judging them to the payload codec.
_SELECT = "CAST(payload AS BLOB), version, created, last_seen, expires, user_id, ip, user_agent"

#: Bumped in a forked child, so it opens its own connections instead of
#: sharing the parent's (an SQLite connection must not cross a fork).
_fork_generation = 0


def _after_fork() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_after_fork)


class _Statements:
    """Every SQL string the store runs, rendered once per store for one table.

    The table name is the only text spliced in: it is checked against
    ``_TABLE_RE`` and double-quoted; every value travels as a parameter.
    """

    def __init__(self, table: str) -> None:
        def render(template: str) -> str:
            for placeholder, text in (("$S", _SELECT), ("$C", _COLUMNS), ("$T", f'"{table}"')):
                template = template.replace(placeholder, text)
            return template.replace("$N", table)

        self.schema = (
            render(
                "CREATE TABLE IF NOT EXISTS $T (key TEXT PRIMARY KEY, payload BLOB NOT NULL, "
                "version INTEGER NOT NULL, created REAL NOT NULL, last_seen REAL NOT NULL, "
                "expires REAL NOT NULL, user_id TEXT, ip TEXT, user_agent TEXT)"
            ),
            render('CREATE INDEX IF NOT EXISTS "$N_expires" ON $T (expires)'),
            render('CREATE INDEX IF NOT EXISTS "$N_user_id" ON $T (user_id)'),
        )
        self.load = render("SELECT $S FROM $T WHERE key = ? AND expires > ?")
        # One statement creates, and also takes over a key whose row has expired;
        # the WHERE leaves a live row alone, which shows as rowcount 0 (Conflict).
        self.create = render(
            "INSERT INTO $T (key, $C) VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET payload = excluded.payload, version = 1, "
            "created = excluded.created, last_seen = excluded.last_seen, "
            "expires = excluded.expires, user_id = excluded.user_id, ip = excluded.ip, "
            "user_agent = excluded.user_agent WHERE $T.expires <= ?"
        )
        # The usual update keeps the user id, and says so in its WHERE: SQLite
        # rewrites an index whenever its column is in the SET list, even to the
        # same value, so leaving user_id out saves a page (a WAL frame) per save.
        # Both take the same numbered parameters: payload, created, last seen,
        # expires, ip, user agent, key, expected version, now, user id.
        self.update = render(
            "UPDATE $T SET payload = ?1, version = version + 1, created = ?2, last_seen = ?3, "
            "expires = ?4, ip = ?5, user_agent = ?6 "
            "WHERE key = ?7 AND version = ?8 AND expires > ?9 AND user_id IS ?10"
        )
        self.update_user = render(
            "UPDATE $T SET payload = ?1, version = version + 1, created = ?2, last_seen = ?3, "
            "expires = ?4, ip = ?5, user_agent = ?6, user_id = ?10 "
            "WHERE key = ?7 AND version = ?8 AND expires > ?9"
        )
        self.live_version = render("SELECT version FROM $T WHERE key = ? AND expires > ?")
        self.touch = render(
            "UPDATE $T SET expires = ?, last_seen = ? WHERE key = ? AND expires > ?"
        )
        self.delete = render("DELETE FROM $T WHERE key = ?")
        self.delete_expired = render(
            "DELETE FROM $T WHERE key IN (SELECT key FROM $T WHERE expires <= ? LIMIT ?)"
        )
        self.expired = render("SELECT key, user_id FROM $T WHERE expires <= ? LIMIT ?")
        self.delete_if_expired = render("DELETE FROM $T WHERE key = ? AND expires <= ?")
        self.entries = render("SELECT key, $S FROM $T WHERE expires > ?")
        # The user index (user_id) answers these: O(that user's rows), no scan.
        self.sessions_for = render(
            "SELECT key, $S FROM $T WHERE user_id = ? AND expires > ? ORDER BY last_seen DESC"
        )
        # Expired rows are left to delete_expired: they never load, and counting
        # only live ones needs no RETURNING (SQLite 3.35+).
        self.revoke = render("DELETE FROM $T WHERE key = ? AND expires > ?")
        self.revoke_user = render("DELETE FROM $T WHERE user_id = ? AND expires > ?")


class _Local(threading.local):
    #: The thread's one cursor, on its connection (``cursor.connection``): making a
    #: cursor per call costs about as much as binding the statement's parameters.
    cursor: sqlite3.Cursor | None = None
    generation = -1


class SQLiteStore:
    """Sessions in an SQLite database file at ``path``; the table is created on first use.

    Each thread uses its own connection (opened on its first call);
    :meth:`close` closes the calling thread's one. ``timeout`` is how long a
    writer waits for another's lock before the call fails with
    :class:`~websession.errors.StoreUnavailable`.
    """

    inline = True
    max_payload_size: int | None = None

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        table: str = "websession_sessions",
        clock: Clock = default_clock,
        timeout: float = 30.0,
    ) -> None:
        path = os.fspath(path)
        if not isinstance(path, str) or not path:
            raise SessionConfigError("SQLiteStore needs a database file path, e.g. 'sessions.db'")
        if path == ":memory:":
            raise SessionConfigError(
                f"SQLiteStore cannot use {path!r}: each thread has its own connection, so an "
                "in-memory database would not be shared; use a file, or memory:// (MemoryStore)"
            )
        if not isinstance(synchronous, str) or synchronous.upper() not in _SYNCHRONOUS:
            raise SessionConfigError(
                f"SQLiteStore option synchronous={synchronous!r} is not supported; "
                "use 'NORMAL' (the default) or 'FULL'"
            )
        if not isinstance(table, str) or _TABLE_RE.fullmatch(table) is None:
            raise SessionConfigError(
                f"SQLiteStore option table={table!r} is not a plain SQL identifier "
                "(letters, digits and underscores, not starting with a digit)"
            )
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
            raise SessionConfigError(f"SQLiteStore option timeout={timeout!r} must be seconds >= 0")
        self.path = os.path.abspath(path)
        self.synchronous = synchronous.upper()
        self.table = table
        self.timeout = float(timeout)
        self._clock = clock
        self._local = _Local()
        sql = _Statements(table)
        self._sql_schema = sql.schema
        self._sql_load = sql.load
        self._sql_create = sql.create
        self._sql_update = sql.update
        self._sql_update_user = sql.update_user
        self._sql_live_version = sql.live_version
        self._sql_touch = sql.touch
        self._sql_delete = sql.delete
        self._sql_delete_expired = sql.delete_expired
        self._sql_entries = sql.entries
        self._sql_sessions_for = sql.sessions_for
        self._sql_revoke = sql.revoke
        self._sql_revoke_user = sql.revoke_user
        self._sql_expired = sql.expired
        self._sql_delete_if_expired = sql.delete_if_expired

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, synchronous={self.synchronous!r})"

    # -- connections -----------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        return self._cursor().connection

    def _cursor(self) -> sqlite3.Cursor:
        """The calling thread's cursor, on a connection opened in this process."""
        local = self._local
        cursor = local.cursor
        if cursor is not None and local.generation == _fork_generation:
            return cursor
        return self._connect()

    def _connect(self) -> sqlite3.Cursor:
        """Open the calling thread's connection; return its reusable cursor."""
        local = self._local
        # A connection inherited through fork is dropped, never closed: closing
        # it would disturb the parent's locks on the shared file.
        local.cursor = None
        if not os.path.exists(self.path):
            # Created 0600 up front: SQLite would honour only the umask, and the
            # WAL and shared-memory files copy the database file's permissions.
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            except OSError as exc:
                raise self._unavailable(exc) from exc
            else:
                os.close(fd)
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        try:
            self._prepare(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise self._unavailable(exc) from exc
        except BaseException:
            conn.close()
            raise
        cursor = conn.cursor()
        local.cursor = cursor
        local.generation = _fork_generation
        return cursor

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """WAL, the synchronous level and the schema, on a new connection.

        Switching a fresh file to WAL takes an exclusive lock, and SQLite
        answers "database is locked" at once, without its busy handler, when
        another connection holds the file meanwhile (several threads opening a
        new database together). That step is retried, briefly, up to
        ``timeout``. A file already in WAL (the mode persists) skips it.
        """
        deadline = time.monotonic() + self.timeout
        pause = 0.001
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode").fetchone()
                if mode is None or str(mode[0]).lower() != "wal":
                    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
        if mode is None or str(mode[0]).lower() != "wal":
            raise StoreUnavailable(
                f"{self!r}: the database refused WAL journal mode (got {mode!r})"
            )
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        for statement in self._sql_schema:
            conn.execute(statement)

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"{self!r} failed: {exc}")

    def close(self) -> None:
        """Close the calling thread's connection; the next call opens a new one."""
        local = self._local
        cursor, local.cursor = local.cursor, None
        if cursor is not None and local.generation == _fork_generation:
            cursor.connection.close()

    # -- the store protocol ----------------------------------------------------

    def load(self, key: str) -> Entry | None:
        """The live entry for ``key``; None when unknown or expired. One SELECT."""
        try:
            row = self._cursor().execute(self._sql_load, (key, self._clock())).fetchone()
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        if row is None:
            return None
        return Entry(*row)

    def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        """Compare-and-swap write (see :class:`~.base.Store`).

        One statement, unless an update changes the user id: that one first
        finds no row with the old id, reads why, then runs the update that also
        moves the row in the user_id index.
        """
        now = self._clock()
        try:
            cursor = self._cursor()
            if ttl <= 0:
                return self._save_deleting(cursor.connection, key, expected_version, now)
            if expected_version is None:
                cursor.execute(
                    self._sql_create,
                    (
                        key, payload, meta.created, meta.last_seen, now + ttl,
                        meta.user_id, meta.ip, meta.user_agent, now,
                    ),
                )  # fmt: skip
                if cursor.rowcount != 1:
                    raise Conflict("a session with this key already exists")
                return 1
            params = (
                payload, meta.created, meta.last_seen, now + ttl, meta.ip, meta.user_agent,
                key, expected_version, now, meta.user_id,
            )  # fmt: skip
            cursor.execute(self._sql_update, params)
            if cursor.rowcount == 1:
                return expected_version + 1
            # Not updated: another save came first, the session is gone, or the
            # user id changes. This read tells which; its answer may be a moment
            # newer than the update's, which is harmless (this save then comes
            # after whatever changed the row).
            live = cursor.execute(self._sql_live_version, (key, now)).fetchone()
            if live is not None and live[0] == expected_version:
                cursor.execute(self._sql_update_user, params)
                if cursor.rowcount == 1:
                    return expected_version + 1
                live = cursor.execute(self._sql_live_version, (key, now)).fetchone()
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        if live is None:
            raise Gone("the session was deleted meanwhile")
        raise Conflict("the session was saved by another request")

    def _save_deleting(
        self, conn: sqlite3.Connection, key: str, expected_version: int | None, now: float
    ) -> int:
        # A save with ttl <= 0 still checks the version first (same answers as
        # any save), then deletes: a read-then-write, hence BEGIN IMMEDIATE.
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(self._sql_live_version, (key, now)).fetchone()
            version = next_version(None if row is None else row[0], expected_version)
            conn.execute(self._sql_delete, (key,))
        except BaseException:
            # SQLite may already have rolled back on its own (e.g. disk full).
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return version

    def touch(self, key: str, ttl: float) -> bool:
        """Extend the expiry to now + ``ttl`` and set last seen; False if the key is gone."""
        now = self._clock()
        try:
            cursor = self._cursor()
            if ttl <= 0:
                cursor.execute(self._sql_delete, (key,))
                return False
            cursor.execute(self._sql_touch, (now + ttl, now, key, now))
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        return cursor.rowcount == 1

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when absent)."""
        try:
            self._cursor().execute(self._sql_delete, (key,))
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc

    def delete_expired(self, limit: int = 1000) -> int:
        """Remove up to ``limit`` expired rows in one statement; return how many went."""
        check_limit(limit)
        try:
            cursor = self._connection().execute(self._sql_delete_expired, (self._clock(), limit))
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        return cursor.rowcount

    def pop_expired(self, limit: int = 1000) -> list[tuple[str, str | None]]:
        """Remove up to ``limit`` expired rows and say which: ``(key, user_id)`` pairs.

        For ``on_expire`` reports; one short write transaction per batch.
        """
        check_limit(limit)
        now = self._clock()
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(self._sql_expired, (now, limit)).fetchall()
                gone = [
                    (key, user_id)
                    for key, user_id in rows
                    if conn.execute(self._sql_delete_if_expired, (key, now)).rowcount
                ]
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        return gone

    def entries(
        self, *, prefix: str = "", user_id: str | None = None, limit: int | None = None
    ) -> Iterator[tuple[str, Entry]]:
        """Live entries whose key starts with ``prefix`` (and belong to ``user_id``).

        Newest ``last_seen`` first; uses the primary key or the user_id index.
        """
        sql = self._sql_entries
        params: list[object] = [self._clock()]
        if user_id is not None:
            sql += " AND user_id = ?"
            params.append(user_id)
        if prefix:
            # A range on the primary key instead of LIKE, which would scan (and
            # would treat % and _ in the prefix as wildcards).
            sql += " AND key >= ?"
            params.append(prefix)
            upper = prefix_upper_bound(prefix)
            if upper is not None:
                sql += " AND key < ?"
                params.append(upper)
        sql += " ORDER BY last_seen DESC LIMIT ?"
        params.append(-1 if limit is None else limit)
        try:
            # Fetched in full before yielding: an open cursor would pin a read
            # transaction (and the WAL) for as long as the caller iterates.
            rows = self._connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        for row in rows:
            if row[0].startswith(prefix):
                yield row[0], Entry(*row[1:])

    # -- the per-user index ----------------------------------------------------

    def sessions_for(self, user_id: str) -> list[tuple[str, Entry]]:
        """The live sessions of ``user_id``, most recently seen first.

        One SELECT on the ``user_id`` index: O(that user's rows), never a scan.
        """
        try:
            rows = (
                self._connection()
                .execute(self._sql_sessions_for, (user_id, self._clock()))
                .fetchall()
            )
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        return [(row[0], Entry(*row[1:])) for row in rows]

    def revoke(self, key: str) -> bool:
        """Delete one session; False if it was not there (or had expired)."""
        try:
            cursor = self._connection().execute(self._sql_revoke, (key, self._clock()))
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        return cursor.rowcount == 1

    def revoke_user(self, user_id: str, *, keep: Collection[str] = ()) -> int:
        """Delete every live session of ``user_id`` except the keys in ``keep``: one DELETE."""
        kept = sorted(set(keep))
        sql = self._sql_revoke_user
        if kept:
            sql += f" AND key NOT IN ({', '.join('?' * len(kept))})"
        try:
            cursor = self._connection().execute(sql, (user_id, self._clock(), *kept))
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        return cursor.rowcount


class AsyncSQLiteStore(InlineAsyncUserIndex):
    """Async form of :class:`SQLiteStore`.

    Runs inline on the event loop: a local SQLite call takes microseconds,
    less than a thread hop would.
    """

    sync: SQLiteStore

    def __init__(
        self,
        store: SQLiteStore | str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        table: str = "websession_sessions",
        clock: Clock = default_clock,
        timeout: float = 30.0,
    ) -> None:
        if not isinstance(store, SQLiteStore):
            store = SQLiteStore(
                store, synchronous=synchronous, table=table, clock=clock, timeout=timeout
            )
        super().__init__(store)

    def close(self) -> None:
        """Close the calling thread's connection (see :meth:`SQLiteStore.close`)."""
        self.sync.close()
