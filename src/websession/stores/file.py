"""FileStore: one file per session in a local directory, for single-host deployments.

Layout: ``<directory>/<first two hex digits of the key>/<key>`` holds the
record, ``<key>.lock`` beside it serialises writers. Sharding by the key's
first byte keeps every directory small (256 shards) without a database.
The per-user index is ``<directory>/users/<sha256 of the user id>/<key>``:
an empty marker file per session of that user, created and removed under the
key's lock together with the record, so listing a user's sessions reads one
small directory instead of scanning them all.

Reads take no lock: writers replace whole files with ``os.replace``, which is
atomic, so a reader sees the old record or the new one, never half of one.
Writers take an exclusive ``flock`` on the key's lock file, because a rename
alone is atomic but is not a compare-and-swap. ``flock`` locks belong to the
open file description, so two threads of one process that open the lock file
separately exclude each other just as two processes do.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Collection, Iterator
from typing import Literal

import msgspec

from ..errors import Gone, SessionConfigError, StoreError, StoreUnavailable
from ..ids import is_valid_key
from .base import Clock, Entry, InlineAsyncUserIndex, Meta, check_limit, default_clock, next_version

__all__ = ["AsyncFileStore", "FileStore"]

security_log = logging.getLogger("websession.security")

_MAGIC: Literal["websession-file/1"] = "websession-file/1"
_LOCK_SUFFIX = ".lock"
_TMP_SUFFIX = ".tmp"
_USERS = "users"
_MARKER_FLAGS = (
    os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)
#: Temp files older than this can only be leftovers of a crashed writer.
_STALE_TMP_SECONDS = 3600.0
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class _Record(msgspec.Struct, array_like=True, frozen=True):
    """The on-disk record. The leading magic string makes foreign files fail to decode."""

    magic: Literal["websession-file/1"]
    version: int
    created: float
    last_seen: float
    expires: float
    user_id: str | None
    ip: str | None
    user_agent: str | None
    payload: bytes


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Record)


class _KeyLock:
    """An exclusive ``flock`` on one key's lock file, held for one read-check-write.

    Lock files are removed (under the lock) whenever the key's data file goes
    away, so sessions that end leave nothing behind. Removing a lock file is
    only safe because every locker checks, once it holds the lock, that the
    path still names the inode it locked; if not, someone removed it
    meanwhile and the locker retries on the new file. Without that check two
    writers could each hold a lock on a different inode of the same name.
    """

    __slots__ = ("fd", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        while True:
            fd = os.open(path, _LOCK_FLAGS, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if _same_file(fd, path):
                    self.fd = fd
                    return
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def remove(self) -> None:
        """Unlink the lock file while still holding the lock (see the class docstring)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def release(self) -> None:
        # Closing the descriptor releases the flock.
        os.close(self.fd)


def _same_file(fd: int, path: str) -> bool:
    try:
        on_disk = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _try_lock(path: str) -> _KeyLock | None:
    """Like :class:`_KeyLock` but never waits: None when someone else holds the lock."""
    try:
        fd = os.open(path, _LOCK_FLAGS & ~os.O_CREAT)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if not _same_file(fd, path):
        os.close(fd)
        return None
    lock = _KeyLock.__new__(_KeyLock)
    lock.path = path
    lock.fd = fd
    return lock


class FileStore:
    """Sessions as files in ``directory`` (created with mode 0700 unless ``create=False``).

    Safe for many threads and processes on one host sharing the directory
    (not for network filesystems whose ``flock`` is unreliable). Files are
    written with mode 0600. ``fsync=True`` flushes each write to disk before
    it counts as saved; the default relies on the OS, like SQLite's NORMAL.
    """

    inline = True
    max_payload_size: int | None = None

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        clock: Clock = default_clock,
        create: bool = True,
        fsync: bool = False,
    ) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        self._clock = clock
        self._fsync = fsync
        if create:
            try:
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise SessionConfigError(
                    f"FileStore cannot create its directory {self.directory!r}: {exc}"
                ) from exc
        elif not os.path.isdir(self.directory):
            raise SessionConfigError(
                f"FileStore directory {self.directory!r} does not exist (create=False)"
            )

    def __repr__(self) -> str:
        return f"FileStore({self.directory!r})"

    # -- paths -----------------------------------------------------------------

    def _shard(self, key: str) -> str:
        return os.path.join(self.directory, key[:2])

    def _lock(self, key: str) -> _KeyLock:
        shard = self._shard(key)
        try:
            return _KeyLock(os.path.join(shard, key + _LOCK_SUFFIX))
        except FileNotFoundError:
            os.makedirs(shard, mode=0o700, exist_ok=True)
            return _KeyLock(os.path.join(shard, key + _LOCK_SUFFIX))

    # -- reading ---------------------------------------------------------------

    def _read(self, path: str) -> _Record | None:
        """The record at ``path``; None when absent or unreadable (never raises for content)."""
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                security_log.warning("session file %s is a symlink; ignored", path)
                return None
            raise
        with os.fdopen(fd, "rb") as handle:
            data = handle.read()
        try:
            return _decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            security_log.warning("session file %s is corrupt or foreign; ignored: %s", path, exc)
            return None

    def load(self, key: str) -> Entry | None:
        """The live entry for ``key``; None when unknown, expired, malformed or corrupt."""
        if not is_valid_key(key):
            return None
        try:
            record = self._read(os.path.join(self._shard(key), key))
        except OSError as exc:
            raise self._unavailable(exc) from exc
        if record is None or record.expires <= self._clock():
            return None
        return _entry(record)

    def _unavailable(self, exc: OSError) -> StoreUnavailable:
        return StoreUnavailable(f"FileStore({self.directory!r}) failed: {exc}")

    # -- writing ---------------------------------------------------------------

    def _write(self, key: str, record: _Record) -> None:
        shard = self._shard(key)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=_TMP_SUFFIX, dir=shard)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(_encoder.encode(record))
                if self._fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, os.path.join(shard, key))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        if self._fsync:
            _fsync_directory(shard)

    def _remove(self, key: str, lock: _KeyLock, record: _Record | None) -> None:
        """Remove the key's record, lock file and index marker (``record`` is what was read)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self._shard(key), key))
        if record is not None and record.user_id is not None:
            self._unindex(key, record.user_id)
        lock.remove()

    # -- the per-user index: marker files, written under the key's lock ---------

    def _user_directory(self, user_id: str) -> str:
        # Hashed: a user id may hold any character, and its length is unbounded.
        name = hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()
        return os.path.join(self.directory, _USERS, name)

    def _index(self, key: str, user_id: str) -> None:
        directory = self._user_directory(user_id)
        marker = os.path.join(directory, key)
        for _ in range(10):
            try:
                os.close(os.open(marker, _MARKER_FLAGS, 0o600))
                return
            except FileNotFoundError:
                # First session of this user, or another writer just removed the
                # user's emptied directory: (re)create it and try again.
                os.makedirs(directory, mode=0o700, exist_ok=True)
        os.close(os.open(marker, _MARKER_FLAGS, 0o600))

    def _unindex(self, key: str, user_id: str) -> None:
        directory = self._user_directory(user_id)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, key))
        try:
            os.rmdir(directory)  # only succeeds once the user has no session left
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                raise

    def _exists(self, key: str) -> bool:
        # Checked before locking where "absent" is the answer anyway: a key only
        # comes into being by a create, so answering "absent" without the lock is
        # the same as answering it a moment earlier, and leaves no lock file behind.
        return os.path.lexists(os.path.join(self._shard(key), key))

    def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        """Compare-and-swap write under the key's lock (see :class:`~.base.Store`)."""
        if not is_valid_key(key):
            raise StoreError(
                "FileStore keys must be 64 lowercase hex digits (websession.ids.hash_id); "
                f"refusing {key[:80]!r}"
            )
        try:
            if expected_version is not None and not self._exists(key):
                raise Gone("the session was deleted meanwhile")
            lock = self._lock(key)
            try:
                return self._save_locked(key, payload, expected_version, ttl, meta, lock)
            finally:
                lock.release()
        except OSError as exc:
            raise self._unavailable(exc) from exc

    def _save_locked(
        self,
        key: str,
        payload: bytes,
        expected_version: int | None,
        ttl: float,
        meta: Meta,
        lock: _KeyLock,
    ) -> int:
        now = self._clock()
        current = self._read(os.path.join(self._shard(key), key))
        if current is not None and current.expires <= now:
            self._remove(key, lock, current)
            current = None
        try:
            version = next_version(None if current is None else current.version, expected_version)
        except Gone:
            lock.remove()  # no record: no lock file left behind either
            raise
        if ttl <= 0:
            self._remove(key, lock, current)
            return version
        previous = current.user_id if current is not None else None
        if meta.user_id is not None and meta.user_id != previous:
            # Marker first: a crash in between leaves a marker without a record
            # (pruned on read), never a user's record the index does not know.
            self._index(key, meta.user_id)
        self._write(
            key,
            _Record(
                _MAGIC, version, meta.created, meta.last_seen, now + ttl,
                meta.user_id, meta.ip, meta.user_agent, payload,
            ),
        )  # fmt: skip
        if previous is not None and previous != meta.user_id:
            self._unindex(key, previous)
        return version

    def touch(self, key: str, ttl: float) -> bool:
        """Extend the expiry to now + ``ttl``; False (and nothing written) if the key is gone."""
        if not is_valid_key(key):
            return False
        try:
            if not self._exists(key):
                return False
            lock = self._lock(key)
            try:
                now = self._clock()
                current = self._read(os.path.join(self._shard(key), key))
                if current is None:
                    lock.remove()
                    return False
                if current.expires <= now or ttl <= 0:
                    self._remove(key, lock, current)
                    return False
                touched = msgspec.structs.replace(current, expires=now + ttl, last_seen=now)
                self._write(key, touched)
                return True
            finally:
                lock.release()
        except OSError as exc:
            raise self._unavailable(exc) from exc

    def delete(self, key: str) -> None:
        """Remove ``key``; a no-op when absent or malformed.

        Takes the lock so that a save already past its version check cannot
        write the record back after the delete (that would resurrect it).
        """
        if not is_valid_key(key):
            return
        try:
            if not self._exists(key):
                return
            lock = self._lock(key)
            try:
                self._remove(key, lock, self._read(os.path.join(self._shard(key), key)))
            finally:
                lock.release()
        except OSError as exc:
            raise self._unavailable(exc) from exc

    # -- maintenance -----------------------------------------------------------

    def _scan(self) -> Iterator[tuple[str, os.DirEntry[str]]]:
        """(shard path, directory entry) for every file in every shard."""
        try:
            shards = [e for e in os.scandir(self.directory) if _is_shard(e)]
        except FileNotFoundError:
            return
        for shard in shards:
            try:
                with os.scandir(shard.path) as it:
                    files = list(it)
            except FileNotFoundError:
                continue
            for entry in files:
                yield shard.path, entry

    def delete_expired(self, limit: int = 1000) -> int:
        """Remove up to ``limit`` expired sessions; return how many went.

        Each removal re-checks the record under the key's lock, so a session
        re-created meanwhile survives. Leftovers of crashed writers (lock files
        without a session, temp files over an hour old) are tidied on the way,
        within the same ``limit``; they are not counted. Corrupt files are
        left alone: they never load, and deleting what cannot be read is not
        this method's call.
        """
        check_limit(limit)
        try:
            return self._delete_expired(limit)
        except OSError as exc:
            raise self._unavailable(exc) from exc

    def _delete_expired(self, limit: int) -> int:
        now = self._clock()
        removed = 0
        budget = limit
        for shard, entry in self._scan():
            if budget <= 0:
                break
            name = entry.name
            if is_valid_key(name):
                record = self._read(entry.path)
                if record is None or record.expires > now:
                    continue
                lock = self._lock(name)
                try:
                    record = self._read(entry.path)
                    if record is not None and record.expires <= self._clock():
                        self._remove(name, lock, record)
                        removed += 1
                        budget -= 1
                finally:
                    lock.release()
            elif name.endswith(_LOCK_SUFFIX) and is_valid_key(name[: -len(_LOCK_SUFFIX)]):
                key = name[: -len(_LOCK_SUFFIX)]
                if os.path.lexists(os.path.join(shard, key)):
                    continue
                # Non-blocking: a held lock belongs to a live writer, not a leftover.
                orphan = _try_lock(entry.path)
                if orphan is None:
                    continue
                try:
                    if not os.path.lexists(os.path.join(shard, key)):
                        orphan.remove()
                        budget -= 1
                finally:
                    orphan.release()
            elif name.startswith(".") and name.endswith(_TMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    # Wall-clock time, not self._clock: mtimes come from the OS clock.
                    age = time.time() - entry.stat(follow_symlinks=False).st_mtime
                    if age > _STALE_TMP_SECONDS:
                        os.unlink(entry.path)
                        budget -= 1
        return removed

    def entries(
        self, *, prefix: str = "", user_id: str | None = None, limit: int | None = None
    ) -> Iterator[tuple[str, Entry]]:
        """Live entries whose key starts with ``prefix`` (and belong to ``user_id``), newest first.

        Scans the directory: meant for the CLI, not for request handling.
        """
        now = self._clock()
        found: list[tuple[str, Entry]] = []
        for _shard, dir_entry in self._scan():
            key = dir_entry.name
            if not is_valid_key(key) or not key.startswith(prefix):
                continue
            record = self._read(dir_entry.path)
            if record is None or record.expires <= now:
                continue
            if user_id is not None and record.user_id != user_id:
                continue
            found.append((key, _entry(record)))
        found.sort(key=lambda item: item[1].last_seen, reverse=True)
        yield from found if limit is None else found[:limit]

    # -- the per-user index ----------------------------------------------------

    def _indexed_keys(self, user_id: str) -> list[str]:
        try:
            names = os.listdir(self._user_directory(user_id))
        except FileNotFoundError:
            return []
        return [name for name in names if is_valid_key(name)]

    def sessions_for(self, user_id: str) -> list[tuple[str, Entry]]:
        """The live sessions of ``user_id``, most recently seen first.

        Reads the user's index directory and those sessions' records only;
        markers whose session ended (or moved to another user) are removed on
        the way, expired sessions with them.
        """
        now = self._clock()
        found: list[tuple[str, Entry]] = []
        try:
            for key in self._indexed_keys(user_id):
                record = self._read(os.path.join(self._shard(key), key))
                if record is not None and record.user_id == user_id and record.expires > now:
                    found.append((key, _entry(record)))
                else:
                    self._revoke_locked(key, user_id, kill=False)
        except OSError as exc:
            raise self._unavailable(exc) from exc
        found.sort(key=lambda item: item[1].last_seen, reverse=True)
        return found

    def revoke(self, key: str) -> bool:
        """Delete one session (record, lock file, index marker); False if it was not there."""
        if not is_valid_key(key):
            return False
        try:
            if not self._exists(key):
                return False
            return self._revoke_locked(key, None, kill=True)
        except OSError as exc:
            raise self._unavailable(exc) from exc

    def revoke_user(self, user_id: str, *, keep: Collection[str] = ()) -> int:
        """Delete every live session of ``user_id`` except the keys in ``keep``; return how many."""
        kept = set(keep)
        try:
            return sum(
                self._revoke_locked(key, user_id, kill=True)
                for key in self._indexed_keys(user_id)
                if key not in kept
            )
        except OSError as exc:
            raise self._unavailable(exc) from exc

    def _revoke_locked(self, key: str, user_id: str | None, *, kill: bool) -> bool:
        """Check one indexed key under its lock, and delete or tidy it.

        A live session of ``user_id`` (of anyone when None) is deleted when
        ``kill`` is set; an expired one is removed either way; a marker of
        ``user_id`` whose session is gone or now someone else's is dropped.
        True when a live session went.
        """
        lock = self._lock(key)
        try:
            record = self._read(os.path.join(self._shard(key), key))
            if record is None:
                if user_id is not None:
                    self._unindex(key, user_id)
                lock.remove()
                return False
            if record.expires <= self._clock():
                self._remove(key, lock, record)
                return False
            if user_id is not None and record.user_id != user_id:
                self._unindex(key, user_id)
                return False
            if kill:
                self._remove(key, lock, record)
            return kill
        finally:
            lock.release()


def _is_shard(entry: os.DirEntry[str]) -> bool:
    name = entry.name
    return (
        len(name) == 2
        and all(c in "0123456789abcdef" for c in name)
        and entry.is_dir(follow_symlinks=False)
    )


def _entry(record: _Record) -> Entry:
    return Entry(
        record.payload, record.version, record.created, record.last_seen, record.expires,
        record.user_id, record.ip, record.user_agent,
    )  # fmt: skip


def _fsync_directory(path: str) -> None:
    # Makes the rename itself durable, not only the file's contents.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AsyncFileStore(InlineAsyncUserIndex):
    """Async form of :class:`FileStore`.

    Runs inline on the event loop: a local file call is cheaper than a thread hop.
    """

    sync: FileStore

    def __init__(
        self,
        store: FileStore | str | os.PathLike[str],
        *,
        clock: Clock = default_clock,
        create: bool = True,
        fsync: bool = False,
    ) -> None:
        if not isinstance(store, FileStore):
            store = FileStore(store, clock=clock, create=create, fsync=fsync)
        super().__init__(store)
