"""The store contract against every built-in local store, plus what is specific to each."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from websession.errors import Conflict, SessionConfigError, StoreError
from websession.stores.base import Entry, InspectableStore, Meta, Store
from websession.stores.file import AsyncFileStore, FileStore, _Record
from websession.stores.memory import AsyncMemoryStore, MemoryStore
from websession.stores.sqlite import AsyncSQLiteStore, SQLiteStore
from websession.testing import AsyncStoreContract, FakeClock, StoreContract, make_key
from websession.urls import store_from_url

Clock = Callable[[], float]


# -- the contract, for every store -----------------------------------------------


class TestMemoryStore(StoreContract):
    def make_store(self, clock: Clock) -> Store:
        return MemoryStore(clock=clock)


class TestFileStore(StoreContract):
    # File creation is slow on some disks; 300 others still show a scan (see also
    # TestFileStoreIndex, which proves there is none).
    user_index_crowd = 300

    def make_store(self, clock: Clock) -> Store:
        return FileStore(self.tmp_path / "sessions", clock=clock)


class TestFileStoreFsync(StoreContract):
    def make_store(self, clock: Clock) -> Store:
        return FileStore(self.tmp_path / "sessions", clock=clock, fsync=True)

    def test_user_lookup_does_not_grow_with_other_sessions(self) -> None:  # type: ignore[override]
        pytest.skip("fsync changes no lookup; TestFileStore runs this without 300 fsyncs")


class TestSQLiteStoreNormal(StoreContract):
    def make_store(self, clock: Clock) -> Store:
        return SQLiteStore(self.tmp_path / "sessions.db", clock=clock)


class TestSQLiteStoreFull(StoreContract):
    def make_store(self, clock: Clock) -> Store:
        return SQLiteStore(self.tmp_path / "sessions.db", synchronous="FULL", clock=clock)


class TestAsyncMemoryStore(AsyncStoreContract):
    def make_store(self, clock: Clock) -> AsyncMemoryStore:
        return AsyncMemoryStore(clock=clock)


class TestAsyncFileStore(AsyncStoreContract):
    def make_store(self, clock: Clock) -> AsyncFileStore:
        return AsyncFileStore(self.tmp_path / "sessions", clock=clock)


class TestAsyncSQLiteStore(AsyncStoreContract):
    def make_store(self, clock: Clock) -> AsyncSQLiteStore:
        return AsyncSQLiteStore(SQLiteStore(self.tmp_path / "sessions.db", clock=clock))


# -- helpers -----------------------------------------------------------------------


def meta(clock: Clock) -> Meta:
    now = clock()
    return Meta(now, now, "u1", "192.0.2.1", "test")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def file_store(tmp_path: Path, clock: FakeClock) -> FileStore:
    return FileStore(tmp_path / "sessions", clock=clock)


@pytest.fixture
def sqlite_store(tmp_path: Path, clock: FakeClock) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "sessions.db", clock=clock)
    yield store
    store.close()


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# A worker process for the cross-process tests: CAS-increments one counter.
INCREMENT_SCRIPT = """
import sys
from websession.errors import Conflict
from websession.stores.base import Meta
from websession.stores.file import FileStore
from websession.stores.sqlite import SQLiteStore

kind, path, key, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
store = FileStore(path) if kind == "file" else SQLiteStore(path)
meta = Meta(0.0, 0.0)
for _ in range(rounds):
    while True:
        entry = store.load(key)
        try:
            store.save(key, str(int(entry.payload) + 1).encode(),
                       expected_version=entry.version, ttl=600, meta=meta)
        except Conflict:
            continue
        break
"""


def run_increment_processes(kind: str, store: Store, path: Path) -> None:
    key = make_key("cross-process")
    store.save(key, b"0", expected_version=None, ttl=600, meta=Meta(0.0, 0.0))
    processes, rounds = 3, 100
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", INCREMENT_SCRIPT, kind, str(path), key, str(rounds)]
        )
        for _ in range(processes)
    ]
    assert [worker.wait(timeout=60) for worker in workers] == [0] * processes
    entry = store.load(key)
    assert entry is not None
    assert int(entry.payload) == processes * rounds
    assert entry.version == processes * rounds + 1


# -- FileStore ---------------------------------------------------------------------

HOSTILE_KEYS = [
    "../../etc/passwd",
    "../" * 20 + "tmp/owned",
    "/etc/passwd",
    "/tmp/owned",
    "..",
    ".",
    "",
    "ab/../../owned",
    "a\x00b",
    make_key("x")[:63] + "\x00",
    make_key("x") + "/../../owned",
    make_key("x").upper(),
    "\\..\\..\\owned",
    "~root",
    make_key("x")[:62] + "..",
]


class TestFileStoreSpecific:
    @pytest.mark.parametrize("key", HOSTILE_KEYS)
    def test_hostile_keys_never_touch_the_filesystem(
        self, tmp_path: Path, clock: FakeClock, key: str
    ) -> None:
        root = tmp_path / "root"
        directory = root / "a" / "b" / "sessions"
        store = FileStore(directory, clock=clock)
        before = snapshot(root)
        assert store.load(key) is None
        assert store.touch(key, 60) is False
        store.delete(key)
        with pytest.raises(StoreError, match="64 lowercase hex"):
            store.save(key, b"x", expected_version=None, ttl=60, meta=meta(clock))
        with pytest.raises(StoreError):
            store.save(key, b"x", expected_version=1, ttl=60, meta=meta(clock))
        assert snapshot(root) == before
        assert not Path("/tmp/owned").exists()

    def test_layout_and_permissions(self, file_store: FileStore, clock: FakeClock) -> None:
        key = make_key("layout")
        file_store.save(key, b"x", expected_version=None, ttl=60, meta=meta(clock))
        directory = Path(file_store.directory)
        data = directory / key[:2] / key
        assert data.is_file()
        assert data.stat().st_mode & 0o777 == 0o600
        assert directory.stat().st_mode & 0o077 == 0
        assert (directory / key[:2]).stat().st_mode & 0o077 == 0
        lock = directory / key[:2] / (key + ".lock")
        assert lock.stat().st_mode & 0o777 == 0o600
        assert b"x" in data.read_bytes()
        # No temp files left behind by a successful write.
        assert sorted(p.name for p in data.parent.iterdir()) == [key, key + ".lock"]
        file_store.delete(key)
        assert list(data.parent.iterdir()) == []

    def test_unknown_keys_leave_no_files(self, file_store: FileStore, clock: FakeClock) -> None:
        key = make_key("nobody")
        before = snapshot(Path(file_store.directory))
        assert file_store.load(key) is None
        assert file_store.touch(key, 60) is False
        file_store.delete(key)
        with pytest.raises(StoreError):
            file_store.save(key, b"x", expected_version=3, ttl=60, meta=meta(clock))
        assert snapshot(Path(file_store.directory)) == before

    @pytest.mark.parametrize(
        "content",
        [b"", b"garbage", b"\x93\xa1a\x01\x02", b'["websession-file/1", "x"]', b"\xff" * 100],
    )
    def test_corrupt_file_loads_as_none_with_warning(
        self, file_store: FileStore, clock: FakeClock, caplog: pytest.LogCaptureFixture,
        content: bytes,
    ) -> None:  # fmt: skip
        key = make_key("corrupt")
        file_store.save(key, b"x", expected_version=None, ttl=60, meta=meta(clock))
        (Path(file_store.directory) / key[:2] / key).write_bytes(content)
        with caplog.at_level(logging.WARNING, logger="websession.security"):
            assert file_store.load(key) is None
        assert any(r.name == "websession.security" for r in caplog.records)
        assert file_store.touch(key, 60) is False
        assert [k for k, _ in file_store.entries()] == []
        assert file_store.delete_expired() == 0
        # A corrupt file does not block a fresh create of the same key.
        file_store.save(key, b"y", expected_version=None, ttl=60, meta=meta(clock))
        entry = file_store.load(key)
        assert entry is not None
        assert entry.payload == b"y"

    def test_symlinked_session_file_is_ignored(
        self, file_store: FileStore, clock: FakeClock, tmp_path: Path
    ) -> None:
        key = make_key("symlink")
        file_store.save(key, b"x", expected_version=None, ttl=60, meta=meta(clock))
        target = tmp_path / "elsewhere"
        data = Path(file_store.directory) / key[:2] / key
        target.write_bytes(data.read_bytes())
        data.unlink()
        data.symlink_to(target)
        assert file_store.load(key) is None

    def test_flock_excludes_threads_of_one_process(
        self, file_store: FileStore, clock: FakeClock
    ) -> None:
        """Two threads hammer one key with read-modify-write; every increment must land."""
        key = make_key("counter")
        file_store.save(key, b"0", expected_version=None, ttl=600, meta=meta(clock))
        rounds = 200
        conflicts = [0, 0]
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def worker(index: int) -> None:
            try:
                barrier.wait()
                for _ in range(rounds):
                    while True:
                        entry = file_store.load(key)
                        assert entry is not None
                        value = int(entry.payload) + 1
                        try:
                            file_store.save(
                                key, str(value).encode(), expected_version=entry.version,
                                ttl=600, meta=meta(clock),
                            )  # fmt: skip
                        except Conflict:
                            conflicts[index] += 1
                            continue
                        break
            except BaseException as exc:  # re-raised in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors
        entry = file_store.load(key)
        assert entry is not None
        assert int(entry.payload) == 2 * rounds
        assert entry.version == 2 * rounds + 1

    def test_flock_excludes_processes(self, tmp_path: Path) -> None:
        run_increment_processes("file", FileStore(tmp_path / "s"), tmp_path / "s")

    def test_lock_is_held_across_the_check_and_the_write(
        self, file_store: FileStore, clock: FakeClock
    ) -> None:
        """A second writer blocks while the first holds the key's lock, then sees its result."""
        key = make_key("held")
        version = file_store.save(key, b"0", expected_version=None, ttl=600, meta=meta(clock))
        lock = file_store._lock(key)
        outcome: list[object] = []

        def contender() -> None:
            try:
                outcome.append(
                    file_store.save(key, b"2", expected_version=version, ttl=600, meta=meta(clock))
                )
            except Conflict as exc:
                outcome.append(exc)

        thread = threading.Thread(target=contender)
        thread.start()
        time.sleep(0.2)
        assert outcome == [], "the second writer did not wait for the lock"
        # While holding the lock, write as the "first" writer would.
        file_store._write(
            key,
            _Record(
                "websession-file/1", version + 1, clock(), clock(), clock() + 600, None, None,
                None, b"1",
            ),
        )  # fmt: skip
        lock.release()
        thread.join(timeout=10)
        assert len(outcome) == 1
        assert isinstance(outcome[0], Conflict)
        entry = file_store.load(key)
        assert entry is not None
        assert entry.payload == b"1"

    def test_delete_expired_in_bounded_batches(
        self, file_store: FileStore, clock: FakeClock
    ) -> None:
        for i in range(25):
            file_store.save(make_key(f"e{i}"), b"x", expected_version=None, ttl=1, meta=meta(clock))
        keep = make_key("keep")
        file_store.save(keep, b"k", expected_version=None, ttl=600, meta=meta(clock))
        clock.advance(5)
        assert [file_store.delete_expired(10) for _ in range(4)] == [10, 10, 5, 0]
        directory = Path(file_store.directory)
        files = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
        user = hashlib.sha256(b"u1").hexdigest()
        assert files == sorted(
            [f"{keep[:2]}/{keep}", f"{keep[:2]}/{keep}.lock", f"users/{user}/{keep}"]
        )

    def test_delete_expired_tidies_leftovers(self, file_store: FileStore, clock: FakeClock) -> None:
        key = make_key("orphan")
        shard = Path(file_store.directory) / key[:2]
        shard.mkdir()
        (shard / (key + ".lock")).touch()
        stale = shard / f".{key}.abc.tmp"
        stale.write_bytes(b"half")
        old = time.time() - 7200
        os.utime(stale, (old, old))
        fresh = shard / f".{key}.def.tmp"
        fresh.write_bytes(b"in flight")
        assert file_store.delete_expired() == 0
        assert sorted(p.name for p in shard.iterdir()) == [fresh.name]

    def test_delete_expired_leaves_a_recreated_session(
        self, file_store: FileStore, clock: FakeClock
    ) -> None:
        key = make_key("recreated")
        file_store.save(key, b"old", expected_version=None, ttl=1, meta=meta(clock))
        clock.advance(2)
        file_store.save(key, b"new", expected_version=None, ttl=600, meta=meta(clock))
        assert file_store.delete_expired() == 0
        entry = file_store.load(key)
        assert entry is not None
        assert entry.payload == b"new"

    def test_bad_limit_refused(self, file_store: FileStore) -> None:
        for limit in (0, -1, 1.5, True):
            with pytest.raises(SessionConfigError):
                file_store.delete_expired(limit)  # type: ignore[arg-type]

    def test_create_false_requires_the_directory(self, tmp_path: Path) -> None:
        with pytest.raises(SessionConfigError, match="does not exist"):
            FileStore(tmp_path / "missing", create=False)
        assert not (tmp_path / "missing").exists()
        FileStore(tmp_path, create=False)

    def test_directory_mode(self, tmp_path: Path) -> None:
        FileStore(tmp_path / "new")
        assert (tmp_path / "new").stat().st_mode & 0o077 == 0

    def test_repr_and_flags(self, file_store: FileStore) -> None:
        assert repr(file_store) == f"FileStore({file_store.directory!r})"
        assert file_store.inline is True
        assert file_store.max_payload_size is None
        assert isinstance(file_store, Store)
        assert isinstance(file_store, InspectableStore)
        assert repr(AsyncFileStore(file_store)) == f"AsyncFileStore({file_store!r})"

    def test_async_form_accepts_a_store_or_a_path(self, tmp_path: Path) -> None:
        store = FileStore(tmp_path / "a")
        assert AsyncFileStore(store).sync is store
        built = AsyncFileStore(tmp_path / "b")
        assert isinstance(built.sync, FileStore)
        assert built.sync.directory == str(tmp_path / "b")
        assert built.inline is True

    def test_shared_directory_between_store_instances(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """Two instances (as two worker processes would have) see each other's writes."""
        one = FileStore(tmp_path / "s", clock=clock)
        two = FileStore(tmp_path / "s", clock=clock)
        key = make_key("shared")
        version = one.save(key, b"1", expected_version=None, ttl=60, meta=meta(clock))
        two.save(key, b"2", expected_version=version, ttl=60, meta=meta(clock))
        with pytest.raises(Conflict):
            one.save(key, b"3", expected_version=version, ttl=60, meta=meta(clock))
        entry = one.load(key)
        assert entry is not None
        assert entry.payload == b"2"


# -- SQLiteStore -------------------------------------------------------------------


def pragma(path: Path | str, name: str) -> object:
    with sqlite3.connect(path) as conn:
        row = conn.execute(f"PRAGMA {name}").fetchone()
    conn.close()
    return row[0]


class TestSQLiteStoreSpecific:
    def test_threads_opening_a_new_database_together_all_save(self, tmp_path: Path) -> None:
        # The first connections to a fresh file race to switch it to WAL; SQLite
        # answers the loser "database is locked" at once, without its busy
        # handler, so a request used to fail with StoreUnavailable (seen in CI
        # as a 503 on the first requests of a threaded server).
        failures: list[str] = []
        for trial in range(150):
            store = SQLiteStore(tmp_path / f"fresh-{trial}.db")
            start = threading.Barrier(4)

            def save(i: int, store: SQLiteStore = store, start: threading.Barrier = start) -> None:
                start.wait()
                try:
                    store.save(
                        make_key(str(i)), b"{}", expected_version=None, ttl=60, meta=Meta(1, 1)
                    )
                except StoreError as exc:
                    failures.append(str(exc))

            threads = [threading.Thread(target=save, args=(i,)) for i in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if not failures:
                assert sorted(key for key, _ in store.entries()) == sorted(
                    make_key(str(i)) for i in range(4)
                )
        assert failures == []

    @pytest.mark.parametrize(("option", "expected"), [("NORMAL", 1), ("FULL", 2), ("full", 2)])
    def test_wal_and_synchronous_in_effect(
        self, tmp_path: Path, option: str, expected: int
    ) -> None:
        store = SQLiteStore(tmp_path / "s.db", synchronous=option)
        conn = store._connection()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == expected
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
        # WAL is a property of the file: other connections see it too.
        assert pragma(tmp_path / "s.db", "journal_mode") == "wal"
        store.close()

    def test_default_is_normal(self, sqlite_store: SQLiteStore) -> None:
        assert sqlite_store.synchronous == "NORMAL"
        assert sqlite_store._connection().execute("PRAGMA synchronous").fetchone()[0] == 1

    @pytest.mark.parametrize("value", ["OFF", "EXTRA", "normal;drop table x", "", 1, None])
    def test_bad_synchronous_refused(self, tmp_path: Path, value: object) -> None:
        with pytest.raises(SessionConfigError, match="synchronous"):
            SQLiteStore(tmp_path / "s.db", synchronous=value)  # type: ignore[arg-type]
        assert not (tmp_path / "s.db").exists()

    def test_memory_database_refused(self) -> None:
        with pytest.raises(SessionConfigError, match=r"memory://"):
            SQLiteStore(":memory:")

    @pytest.mark.parametrize("table", ['x"; DROP TABLE y; --', "1abc", "a-b", "", "a b", "é"])
    def test_bad_table_name_refused(self, tmp_path: Path, table: str) -> None:
        with pytest.raises(SessionConfigError, match="table"):
            SQLiteStore(tmp_path / "s.db", table=table)

    def test_custom_table_and_schema(self, tmp_path: Path, clock: FakeClock) -> None:
        store = SQLiteStore(tmp_path / "s.db", table="my_sessions", clock=clock)
        store.save(make_key("t"), b"x", expected_version=None, ttl=60, meta=meta(clock))
        conn = sqlite3.connect(tmp_path / "s.db")
        try:
            names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
            columns = [row[1] for row in conn.execute("PRAGMA table_info(my_sessions)")]
        finally:
            conn.close()
        assert {"my_sessions", "my_sessions_expires", "my_sessions_user_id"} <= names
        assert columns == [
            "key", "payload", "version", "created", "last_seen", "expires", "user_id", "ip",
            "user_agent",
        ]  # fmt: skip
        store.close()

    def test_database_file_is_private(self, sqlite_store: SQLiteStore) -> None:
        sqlite_store.load(make_key("x"))
        assert Path(sqlite_store.path).stat().st_mode & 0o077 == 0

    def test_foreign_payload_is_returned_as_bytes(
        self, sqlite_store: SQLiteStore, clock: FakeClock
    ) -> None:
        key = make_key("foreign")
        sqlite_store.save(key, b"x", expected_version=None, ttl=60, meta=meta(clock))
        conn = sqlite3.connect(sqlite_store.path)
        try:
            with conn:
                conn.execute(
                    "UPDATE websession_sessions SET payload = ? WHERE key = ?",
                    ("not json \u2603", key),
                )
        finally:
            conn.close()
        entry = sqlite_store.load(key)
        assert entry is not None
        assert entry.payload == "not json \u2603".encode()
        assert isinstance(entry.payload, bytes)
        [(_, listed)] = list(sqlite_store.entries())
        assert isinstance(listed.payload, bytes)

    def test_corrupt_payload_bytes_pass_through(
        self, sqlite_store: SQLiteStore, clock: FakeClock
    ) -> None:
        key = make_key("garbage")
        sqlite_store.save(key, b"\xff\x00\xfe", expected_version=None, ttl=60, meta=meta(clock))
        entry = sqlite_store.load(key)
        assert entry is not None
        assert entry.payload == b"\xff\x00\xfe"

    def test_delete_expired_in_bounded_batches(
        self, sqlite_store: SQLiteStore, clock: FakeClock
    ) -> None:
        for i in range(25):
            sqlite_store.save(
                make_key(f"e{i}"), b"x", expected_version=None, ttl=1, meta=meta(clock)
            )
        keep = make_key("keep")
        sqlite_store.save(keep, b"k", expected_version=None, ttl=600, meta=meta(clock))
        clock.advance(5)
        assert [sqlite_store.delete_expired(10) for _ in range(4)] == [10, 10, 5, 0]
        conn = sqlite3.connect(sqlite_store.path)
        try:
            rows = conn.execute("SELECT key FROM websession_sessions").fetchall()
        finally:
            conn.close()
        assert rows == [(keep,)]

    def test_bad_limit_refused(self, sqlite_store: SQLiteStore) -> None:
        for limit in (0, -1, 1.5, True):
            with pytest.raises(SessionConfigError):
                sqlite_store.delete_expired(limit)  # type: ignore[arg-type]

    def test_entries_use_the_indexes(self, sqlite_store: SQLiteStore) -> None:
        conn = sqlite_store._connection()
        plan = " ".join(
            str(row[-1])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN " + sqlite_store._sql_entries + " AND user_id = ?", (0, "u")
            )
        )
        assert "websession_sessions_user_id" in plan
        plan = " ".join(
            str(row[-1])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN " + sqlite_store._sql_entries + " AND key >= ? AND key < ?",
                (0, "ab", "ac"),
            )
        )
        assert "PRIMARY KEY" in plan or "sqlite_autoindex" in plan
        plan = " ".join(
            str(row[-1])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN " + sqlite_store._sql_delete_expired, (0, 10)
            )
        )
        assert "websession_sessions_expires" in plan

    def test_entries_prefix_is_not_a_pattern(
        self, sqlite_store: SQLiteStore, clock: FakeClock
    ) -> None:
        for key in ("a%c", "abc", "a_c", "b"):
            sqlite_store.save(key, b"x", expected_version=None, ttl=60, meta=meta(clock))
        assert sorted(k for k, _ in sqlite_store.entries(prefix="a%")) == ["a%c"]
        assert sorted(k for k, _ in sqlite_store.entries(prefix="a_")) == ["a_c"]
        assert sorted(k for k, _ in sqlite_store.entries(prefix="a")) == ["a%c", "a_c", "abc"]

    def test_threads_use_their_own_connections(self, sqlite_store: SQLiteStore) -> None:
        main = sqlite_store._connection()
        seen: list[sqlite3.Connection] = []

        def worker() -> None:
            seen.append(sqlite_store._connection())
            sqlite_store.close()

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert seen
        assert seen[0] is not main
        assert sqlite_store._connection() is main

    def test_close_and_reopen(self, sqlite_store: SQLiteStore, clock: FakeClock) -> None:
        key = make_key("reopen")
        sqlite_store.save(key, b"x", expected_version=None, ttl=60, meta=meta(clock))
        sqlite_store.close()
        sqlite_store.close()
        assert sqlite_store.load(key) is not None

    def test_processes_share_the_file_without_lost_updates(self, tmp_path: Path) -> None:
        store = SQLiteStore(tmp_path / "s.db")
        run_increment_processes("sqlite", store, tmp_path / "s.db")
        store.close()

    def test_two_store_instances_share_the_file(self, tmp_path: Path, clock: FakeClock) -> None:
        one = SQLiteStore(tmp_path / "s.db", clock=clock)
        two = SQLiteStore(tmp_path / "s.db", clock=clock)
        key = make_key("shared")
        version = one.save(key, b"1", expected_version=None, ttl=60, meta=meta(clock))
        two.save(key, b"2", expected_version=version, ttl=60, meta=meta(clock))
        with pytest.raises(Conflict):
            one.save(key, b"3", expected_version=version, ttl=60, meta=meta(clock))
        entry = one.load(key)
        assert entry is not None
        assert entry.payload == b"2"
        one.close()
        two.close()

    def test_unopenable_path_is_a_store_error(self, tmp_path: Path) -> None:
        store = SQLiteStore(tmp_path / "missing-dir" / "s.db")
        with pytest.raises(StoreError, match="missing-dir"):
            store.load(make_key("x"))

    def test_repr_and_flags(self, sqlite_store: SQLiteStore) -> None:
        assert repr(sqlite_store) == f"SQLiteStore({sqlite_store.path!r}, synchronous='NORMAL')"
        assert sqlite_store.inline is True
        assert sqlite_store.max_payload_size is None
        assert isinstance(sqlite_store, Store)
        assert isinstance(sqlite_store, InspectableStore)

    def test_async_form_accepts_a_store_or_a_path(self, tmp_path: Path) -> None:
        store = SQLiteStore(tmp_path / "a.db")
        assert AsyncSQLiteStore(store).sync is store
        built = AsyncSQLiteStore(tmp_path / "b.db", synchronous="FULL")
        assert isinstance(built.sync, SQLiteStore)
        assert built.sync.synchronous == "FULL"
        assert built.inline is True


# -- store_from_url ----------------------------------------------------------------


class TestStoreFromUrl:
    def test_sqlite_relative(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        store = store_from_url("sqlite:///x.db")
        assert type(store) is SQLiteStore
        assert store.path == str(tmp_path / "x.db")
        assert store.synchronous == "NORMAL"

    def test_sqlite_absolute_full(self, tmp_path: Path) -> None:
        store = store_from_url(f"sqlite:///{tmp_path}/x.db?synchronous=full")
        assert type(store) is SQLiteStore
        assert store.path == str(tmp_path / "x.db")
        assert store.synchronous == "FULL"

    def test_sqlite_async(self, tmp_path: Path) -> None:
        store = store_from_url(f"sqlite:///{tmp_path}/x.db", asynchronous=True)
        assert type(store) is AsyncSQLiteStore
        assert type(store.sync) is SQLiteStore

    def test_sqlite_bad_synchronous(self, tmp_path: Path) -> None:
        with pytest.raises(SessionConfigError, match="synchronous"):
            store_from_url(f"sqlite:///{tmp_path}/x.db?synchronous=off")

    def test_file(self, tmp_path: Path) -> None:
        store = store_from_url(f"file://{tmp_path}/dir")
        assert type(store) is FileStore
        assert store.directory == str(tmp_path / "dir")
        assert (tmp_path / "dir").is_dir()

    def test_file_async(self, tmp_path: Path) -> None:
        store = store_from_url(f"file://{tmp_path}/dir", asynchronous=True)
        assert type(store) is AsyncFileStore
        assert type(store.sync) is FileStore

    def test_options_reach_the_constructor(self, tmp_path: Path, clock: FakeClock) -> None:
        store = store_from_url(f"file://{tmp_path}/dir", clock=clock, fsync=True)
        assert store._clock is clock
        assert store._fsync is True


# -- the per-user index: exact checks that a lookup reads no other session ------------


class NoScan(dict[str, Entry]):
    """The memory store's entries, refusing every way of walking all of them."""

    def _refuse(self, *args: object) -> None:
        raise AssertionError("the per-user lookup walked every session")

    __iter__ = items = values = keys = _refuse  # type: ignore[assignment]


def indexed_user(store: Store, clock: FakeClock) -> list[str]:
    """Three sessions of "me" among 200 of others and anonymous ones; returns the three keys."""
    for i in range(200):
        user = None if i % 2 else f"other-{i % 7}"
        store.save(
            make_key(f"c{i}"), b"c", expected_version=None, ttl=60, meta=meta_for(clock, user)
        )
    mine = [make_key(f"mine-{i}") for i in range(3)]
    for key in mine:
        store.save(key, b"m", expected_version=None, ttl=60, meta=meta_for(clock, "me"))
        clock.advance(1)
    return mine


def meta_for(clock: Clock, user_id: str | None) -> Meta:
    now = clock()
    return Meta(now, now, user_id, "192.0.2.1", "test")


class TestMemoryStoreIndex:
    def test_lookup_and_revoke_never_walk_all_sessions(self, clock: FakeClock) -> None:
        store = MemoryStore(clock=clock)
        mine = indexed_user(store, clock)
        store._entries = NoScan(store._entries)
        assert [k for k, _ in store.sessions_for("me")] == list(reversed(mine))
        assert store.revoke_user("me", keep=[mine[0]]) == 2
        assert store.revoke(mine[0]) is True
        assert store.sessions_for("me") == []

    def test_the_index_holds_no_ended_session(self, clock: FakeClock) -> None:
        store = MemoryStore(clock=clock)
        a, b = make_key("a"), make_key("b")
        store.save(a, b"a", expected_version=None, ttl=10, meta=meta_for(clock, "me"))
        store.save(b, b"b", expected_version=None, ttl=60, meta=meta_for(clock, "me"))
        clock.advance(10)
        assert store.delete_expired() == 1
        assert store._users == {"me": {b}}
        store.delete(b)
        assert store._users == {}
        store.save(a, b"a", expected_version=None, ttl=10, meta=meta_for(clock, "me"))
        store.touch(a, 0)
        assert store._users == {}


class TestSQLiteStoreIndex:
    def test_lookup_and_revoke_use_the_user_id_index(self, sqlite_store: SQLiteStore) -> None:
        conn = sqlite_store._connection()
        for sql, params in (
            (sqlite_store._sql_sessions_for, ("me", 0)),
            (sqlite_store._sql_revoke_user, ("me", 0)),
            (sqlite_store._sql_revoke_user + " AND key NOT IN (?)", ("me", 0, "k")),
        ):
            plan = " ".join(
                str(row[-1]) for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)
            )
            assert "websession_sessions_user_id" in plan, plan
            assert "SCAN" not in plan.replace("USING INDEX", ""), plan

    def test_revoke_user_is_one_delete(self, sqlite_store: SQLiteStore, clock: FakeClock) -> None:
        mine = indexed_user(sqlite_store, clock)
        statements: list[str] = []
        sqlite_store._connection().set_trace_callback(statements.append)
        assert sqlite_store.revoke_user("me", keep=mine[:2]) == 1
        assert [s for s in statements if s.startswith("DELETE")] == statements
        assert len(statements) == 1
        assert [k for k, _ in sqlite_store.sessions_for("me")] == [mine[1], mine[0]]


class TestFileStoreIndex:
    def test_lookup_and_revoke_never_list_the_shards(
        self, file_store: FileStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        mine = indexed_user(file_store, clock)

        def no_scan(path: object) -> None:
            raise AssertionError(f"the per-user lookup scanned {path}")

        monkeypatch.setattr(os, "scandir", no_scan)
        assert [k for k, _ in file_store.sessions_for("me")] == list(reversed(mine))
        assert file_store.revoke_user("me", keep=[mine[0]]) == 2
        assert file_store.revoke(mine[0]) is True
        assert file_store.sessions_for("me") == []

    def test_markers_live_and_die_with_their_sessions(
        self, file_store: FileStore, clock: FakeClock
    ) -> None:
        root = Path(file_store.directory)
        users = root / "users"
        me = users / hashlib.sha256(b"me").hexdigest()
        key = make_key("marked")
        v = file_store.save(key, b"x", expected_version=None, ttl=60, meta=meta_for(clock, "me"))
        assert [p.name for p in me.iterdir()] == [key]
        assert (me / key).stat().st_mode & 0o777 == 0o600
        assert me.stat().st_mode & 0o077 == 0
        # Moving the session to another user moves its marker; the empty directory goes.
        v = file_store.save(key, b"x", expected_version=v, ttl=60, meta=meta_for(clock, "you"))
        you = users / hashlib.sha256(b"you").hexdigest()
        assert not me.exists()
        assert [p.name for p in you.iterdir()] == [key]
        file_store.delete(key)
        assert list(users.iterdir()) == []
        # Expiry, collected or met on read, removes the marker too.
        file_store.save(key, b"x", expected_version=None, ttl=5, meta=meta_for(clock, "me"))
        clock.advance(5)
        assert file_store.delete_expired() == 1
        assert list(users.iterdir()) == []
        file_store.save(key, b"x", expected_version=None, ttl=5, meta=meta_for(clock, "me"))
        clock.advance(5)
        assert file_store.sessions_for("me") == []
        assert snapshot(root) == {"users", key[:2]}

    def test_a_marker_whose_record_vanished_is_pruned_on_read(
        self, file_store: FileStore, clock: FakeClock
    ) -> None:
        key, other = make_key("vanishing"), make_key("staying")
        for k in (key, other):
            file_store.save(k, b"x", expected_version=None, ttl=60, meta=meta_for(clock, "me"))
        (Path(file_store.directory) / key[:2] / key).unlink()  # e.g. a crash, or an admin
        assert [k for k, _ in file_store.sessions_for("me")] == [other]
        me = Path(file_store.directory) / "users" / hashlib.sha256(b"me").hexdigest()
        assert [p.name for p in me.iterdir()] == [other]
        assert file_store.revoke_user("me") == 1
        assert not me.exists()

    def test_index_is_shared_by_store_instances(self, tmp_path: Path, clock: FakeClock) -> None:
        one = FileStore(tmp_path / "s", clock=clock)
        two = FileStore(tmp_path / "s", clock=clock)
        key = make_key("shared")
        one.save(key, b"x", expected_version=None, ttl=60, meta=meta_for(clock, "me"))
        assert [k for k, _ in two.sessions_for("me")] == [key]
        assert two.revoke_user("me") == 1
        assert one.load(key) is None
