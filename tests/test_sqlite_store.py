"""SQLiteStore: what a save writes, and that the cheaper paths keep the CAS answers."""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from websession.errors import Conflict, Gone
from websession.stores.base import Meta
from websession.stores.sqlite import SQLiteStore
from websession.testing import FakeClock, make_key


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "sessions.db", clock=clock)
    yield store
    store.close()


def meta(clock: FakeClock, user_id: str | None) -> Meta:
    return Meta(clock(), clock(), user_id, "192.0.2.1", "test")


def wal_frames(store: SQLiteStore, write: Callable[[], object]) -> int:
    """How many pages (WAL frames) ``write`` appends to the write-ahead log."""
    conn = store._connection()
    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0
    write()
    busy, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0
    return int(frames)


def statements(store: SQLiteStore, call: Callable[[], object]) -> list[str]:
    """The SQL statements ``call`` runs on the calling thread's connection."""
    seen: list[str] = []
    conn = store._connection()
    conn.set_trace_callback(seen.append)
    try:
        call()
    finally:
        conn.set_trace_callback(None)
    return [s.split(None, 1)[0] for s in seen]


@pytest.mark.parametrize("user_id", [None, "alice"])
def test_a_save_that_keeps_the_user_writes_fewer_pages(
    store: SQLiteStore, clock: FakeClock, user_id: str | None
) -> None:
    # SQLite rewrites an index whenever its column is assigned, even to the same
    # value: a save that kept the user id used to write the user_id index page
    # too, one WAL frame (4 KiB written, and later checkpointed) per request.
    key = make_key("frames")
    version = store.save(key, b"0", expected_version=None, ttl=60, meta=meta(clock, user_id))

    def same_user() -> None:
        nonlocal version
        version = store.save(key, b"1", expected_version=version, ttl=60, meta=meta(clock, user_id))

    def other_user() -> None:
        nonlocal version
        version = store.save(
            key, b"2", expected_version=version, ttl=60, meta=meta(clock, "someone-else")
        )

    kept = wal_frames(store, same_user)
    changed = wal_frames(store, other_user)
    assert kept < changed
    entry = store.load(key)
    assert entry is not None
    assert (entry.payload, entry.version, entry.user_id) == (b"2", 3, "someone-else")


def test_a_save_that_keeps_the_user_is_one_statement(store: SQLiteStore, clock: FakeClock) -> None:
    key = make_key("one")
    version = store.save(key, b"0", expected_version=None, ttl=60, meta=meta(clock, "alice"))
    ran = statements(
        store,
        lambda: store.save(key, b"1", expected_version=version, ttl=60, meta=meta(clock, "alice")),
    )
    assert ran == ["UPDATE"]


def test_a_save_that_changes_the_user_moves_it_in_the_index(
    store: SQLiteStore, clock: FakeClock
) -> None:
    key = make_key("login")
    version = store.save(key, b"0", expected_version=None, ttl=60, meta=meta(clock, None))
    for user_id in ("alice", "bob", None, "bob"):
        clock.advance(1)
        save = partial(
            store.save, key, b"x", expected_version=version, ttl=60, meta=meta(clock, user_id)
        )
        ran = statements(store, save)
        version += 1
        # The update that keeps the user finds nothing, a read tells why, and the
        # update that sets the user runs.
        assert ran == ["UPDATE", "SELECT", "UPDATE"]
        entry = store.load(key)
        assert entry is not None
        assert (entry.version, entry.user_id, entry.expires) == (version, user_id, clock() + 60)
        for someone in ("alice", "bob"):
            expected = [key] if someone == user_id else []
            assert [k for k, _ in store.sessions_for(someone)] == expected
    assert store.revoke_user("bob") == 1
    assert store.load(key) is None


@pytest.mark.parametrize("user_id", [None, "alice", "bob"])
def test_a_stale_save_is_a_conflict_whatever_its_user(
    store: SQLiteStore, clock: FakeClock, user_id: str | None
) -> None:
    key = make_key("stale")
    v1 = store.save(key, b"1", expected_version=None, ttl=60, meta=meta(clock, "alice"))
    v2 = store.save(key, b"2", expected_version=v1, ttl=60, meta=meta(clock, "alice"))

    def stale() -> None:
        with pytest.raises(Conflict):
            store.save(key, b"lost", expected_version=v1, ttl=60, meta=meta(clock, user_id))

    # One failed update and the read that names the reason: no second write.
    assert statements(store, stale) == ["UPDATE", "SELECT"]
    entry = store.load(key)
    assert entry is not None
    assert (entry.payload, entry.version, entry.user_id) == (b"2", v2, "alice")
    assert [k for k, _ in store.sessions_for("alice")] == [key]
    assert store.sessions_for("bob") == []


@pytest.mark.parametrize("user_id", [None, "alice", "bob"])
@pytest.mark.parametrize("how", ["deleted", "expired"])
def test_a_save_to_a_vanished_session_is_gone_whatever_its_user(
    store: SQLiteStore, clock: FakeClock, user_id: str | None, how: str
) -> None:
    key = make_key("gone")
    version = store.save(key, b"1", expected_version=None, ttl=60, meta=meta(clock, "alice"))
    if how == "deleted":
        store.delete(key)
    else:
        clock.advance(61)
    with pytest.raises(Gone):
        store.save(key, b"zombie", expected_version=version, ttl=60, meta=meta(clock, user_id))
    assert store.load(key) is None
    assert store.sessions_for("bob") == []


def test_a_load_leaves_no_read_transaction_open(store: SQLiteStore, clock: FakeClock) -> None:
    # load and save reuse one cursor per thread; a cursor left mid-statement
    # would pin a read snapshot and keep checkpoints from emptying the WAL.
    key = make_key("pin")
    store.save(key, b"1", expected_version=None, ttl=60, meta=meta(clock, None))
    assert store.load(key) is not None
    assert store.load(make_key("absent")) is None
    other = sqlite3.connect(store.path)
    try:
        busy, frames, done = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        other.close()
    assert (busy, frames, done) == (0, 0, 0)
    assert os.path.getsize(store.path + "-wal") == 0


def test_close_then_save_and_load_reopen(store: SQLiteStore, clock: FakeClock) -> None:
    key = make_key("reopen")
    version = store.save(key, b"1", expected_version=None, ttl=60, meta=meta(clock, None))
    store.close()
    version = store.save(key, b"2", expected_version=version, ttl=60, meta=meta(clock, None))
    store.close()
    entry = store.load(key)
    assert entry is not None
    assert (entry.payload, entry.version) == (b"2", version)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_opens_its_own_connection(store: SQLiteStore, clock: FakeClock) -> None:
    key = make_key("fork")
    version = store.save(key, b"1", expected_version=None, ttl=60, meta=meta(clock, None))
    assert store.load(key) is not None
    parent_cursor = store._cursor()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        code = 1
        try:
            fresh = store._cursor() is not parent_cursor
            store.save(key, b"child", expected_version=version, ttl=60, meta=meta(clock, None))
            code = 0 if fresh else 2
        finally:
            sys.stdout.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store._cursor() is parent_cursor
    entry = store.load(key)
    assert entry is not None
    assert (entry.payload, entry.version) == (b"child", version + 1)
