"""The public store contract suite: run it against any store, built-in or third-party.

Subclass :class:`StoreContract` (sync stores) or :class:`AsyncStoreContract`
(async stores) in a test module and define ``make_store(self, clock)``, which
returns a fresh, empty store that reads the time from ``clock``::

    from websession.testing import StoreContract

    class TestMyStore(StoreContract):
        def make_store(self, clock):
            return MyStore(self.tmp_path / "sessions", clock=clock)

``self.tmp_path`` is a fresh per-test directory (pytest's ``tmp_path``).
Every test drives time through a :class:`FakeClock`, so expiry is tested
without sleeping; a store that reads the time elsewhere (a database's
``now()``, Redis TTLs) cannot pass the expiry tests as they are and should
override them.

The contract is what the session flow relies on: exact round trips of
payload and metadata, compare-and-swap versions, ``Gone`` instead of
resurrection, expiry, and no lost update under concurrent writers.

Stores that keep a per-user index (:class:`~websession.stores.UserIndex`,
:class:`~websession.stores.AsyncUserIndex`) are also held to its contract:
a user's sessions only, most recently seen first, with their metadata,
expired ones absent, revocation of one, all, or all but some, an index that
follows a session to its new user, and a lookup that does not grow with the
number of other sessions. Stores without the index skip those tests.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import inspect
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ._prepared import PreparedSession, aprepare_session, prepare_session
from .errors import Conflict, Gone
from .stores.base import (
    AsyncStore,
    AsyncUserIndex,
    Entry,
    InspectableStore,
    Meta,
    Store,
    UserIndex,
)

__all__ = [
    "AsyncStoreContract",
    "FakeClock",
    "PreparedSession",
    "StoreContract",
    "aprepare_session",
    "make_key",
    "prepare_session",
]

#: 2023-11-14, a realistic epoch time, so stores that misuse it as a duration show it.
START_TIME = 1_700_000_000.0
TTL = 600.0
THREADS = 20
#: Retries per thread in the concurrency test; a correct store needs far fewer.
MAX_ATTEMPTS = 10_000
#: How many times cheaper a user's lookup must be than reading every session, in the O(user) test.
INDEX_SPEEDUP = 20


class FakeClock:
    """A clock for tests: ``clock()`` returns the current fake time in seconds.

    Thread-safe; time moves only by :meth:`advance` (or :meth:`set`).
    """

    def __init__(self, start: float = START_TIME) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def __repr__(self) -> str:
        return f"FakeClock({self._now!r})"

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds``; return the new time."""
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, now: float) -> None:
        """Jump to ``now``."""
        with self._lock:
            self._now = float(now)


def make_key(name: str) -> str:
    """A store key for ``name``, shaped like a real one (64 lowercase hex digits)."""
    return hashlib.sha256(name.encode()).hexdigest()


def _meta(clock: FakeClock, **changes: Any) -> Meta:
    now = clock()
    fields: dict[str, Any] = {
        "created": now,
        "last_seen": now,
        "user_id": "user-42",
        "ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0 (contract test)",
    }
    fields.update(changes)
    return Meta(**fields)


def _payload(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True).encode()


#: Bytes no text codec would produce, to catch stores that decode or re-encode payloads.
BINARY_PAYLOAD = bytes(range(256)) + b"\x00end"


class _Contract(abc.ABC):
    """What both contracts give ``make_store``: ``self.tmp_path``, the test's own directory.

    ``make_store`` is abstract: a subclass that forgets it cannot be instantiated,
    so pytest reports the missing method instead of running the tests.
    """

    tmp_path: Path

    @pytest.fixture(autouse=True)
    def _contract_tmp_path(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path


class StoreContract(_Contract):
    """The contract every synchronous store must meet (pytest collects the ``test_*`` methods).

    Subclasses implement :meth:`make_store`.
    """

    @abc.abstractmethod
    def make_store(self, clock: Callable[[], float]) -> Store:
        """Return a fresh, empty, isolated store that reads the time from ``clock``."""

    @pytest.fixture
    def clock(self) -> FakeClock:
        """The fake clock the store under test reads."""
        return FakeClock()

    @pytest.fixture
    def store(self, clock: FakeClock, _contract_tmp_path: None) -> Iterator[Store]:
        """The store under test, closed afterwards if it has a ``close()``."""
        store = self.make_store(clock)
        yield store
        close = getattr(store, "close", None)
        if callable(close):
            close()

    # -- basics ----------------------------------------------------------------

    def test_declares_protocol_attributes(self, store: Store) -> None:
        assert isinstance(store.inline, bool)
        limit = store.max_payload_size
        assert limit is None or (isinstance(limit, int) and limit > 0)
        assert isinstance(store, Store)

    def test_unknown_key_loads_none(self, store: Store) -> None:
        assert store.load(make_key("nobody")) is None

    def test_create_and_load_round_trip(self, store: Store, clock: FakeClock) -> None:
        key = make_key("round-trip")
        meta = Meta(
            created=clock() - 30.5,
            last_seen=clock() - 0.25,
            user_id="user-\u00e9\u4e2d",
            ip="2001:db8::1",
            user_agent="Agent/1.0 (\u2603)",
        )
        version = store.save(key, BINARY_PAYLOAD, expected_version=None, ttl=TTL, meta=meta)
        assert isinstance(version, int)
        entry = store.load(key)
        assert isinstance(entry, Entry)
        assert entry.payload == BINARY_PAYLOAD
        assert isinstance(entry.payload, bytes)
        assert entry.version == version
        assert entry.created == pytest.approx(meta.created)
        assert entry.last_seen == pytest.approx(meta.last_seen)
        assert entry.expires == pytest.approx(clock() + TTL)
        assert entry.user_id == meta.user_id
        assert entry.ip == meta.ip
        assert entry.user_agent == meta.user_agent
        assert entry.meta == Meta(
            entry.created, entry.last_seen, meta.user_id, meta.ip, meta.user_agent
        )

    def test_meta_fields_may_be_none(self, store: Store, clock: FakeClock) -> None:
        key = make_key("anonymous")
        store.save(
            key, b"{}", expected_version=None, ttl=TTL, meta=Meta(clock(), clock(), None, None)
        )
        entry = store.load(key)
        assert entry is not None
        assert (entry.user_id, entry.ip, entry.user_agent) == (None, None, None)

    def test_empty_and_large_payloads(self, store: Store, clock: FakeClock) -> None:
        size = 64 * 1024
        if store.max_payload_size is not None:
            size = min(size, store.max_payload_size)
        for name, payload in (("empty", b""), ("large", b"x" * size)):
            key = make_key(name)
            store.save(key, payload, expected_version=None, ttl=TTL, meta=_meta(clock))
            entry = store.load(key)
            assert entry is not None
            assert entry.payload == payload

    def test_keys_are_independent(self, store: Store, clock: FakeClock) -> None:
        a, b = make_key("a"), make_key("b")
        store.save(a, b"A", expected_version=None, ttl=TTL, meta=_meta(clock))
        store.save(b, b"B", expected_version=None, ttl=TTL, meta=_meta(clock))
        store.delete(a)
        assert store.load(a) is None
        entry = store.load(b)
        assert entry is not None
        assert entry.payload == b"B"

    # -- compare-and-swap ------------------------------------------------------

    def test_create_twice_conflicts(self, store: Store, clock: FakeClock) -> None:
        key = make_key("twice")
        store.save(key, b"first", expected_version=None, ttl=TTL, meta=_meta(clock))
        with pytest.raises(Conflict):
            store.save(key, b"second", expected_version=None, ttl=TTL, meta=_meta(clock))
        entry = store.load(key)
        assert entry is not None
        assert entry.payload == b"first"

    def test_update_with_current_version_bumps_version(
        self, store: Store, clock: FakeClock
    ) -> None:
        key = make_key("update")
        v1 = store.save(key, b"one", expected_version=None, ttl=TTL, meta=_meta(clock))
        clock.advance(5)
        meta2 = _meta(clock, user_id="user-43", ip="198.51.100.1", user_agent="Other/2")
        v2 = store.save(key, b"two", expected_version=v1, ttl=TTL, meta=meta2)
        assert v2 != v1
        assert v2 > v1
        entry = store.load(key)
        assert entry is not None
        assert (entry.payload, entry.version) == (b"two", v2)
        assert (entry.user_id, entry.ip, entry.user_agent) == ("user-43", "198.51.100.1", "Other/2")
        assert entry.last_seen == pytest.approx(meta2.last_seen)
        assert entry.expires == pytest.approx(clock() + TTL)
        v3 = store.save(key, b"three", expected_version=v2, ttl=TTL, meta=meta2)
        assert v3 > v2

    def test_stale_version_conflicts(self, store: Store, clock: FakeClock) -> None:
        key = make_key("stale")
        v1 = store.save(key, b"one", expected_version=None, ttl=TTL, meta=_meta(clock))
        v2 = store.save(key, b"two", expected_version=v1, ttl=TTL, meta=_meta(clock))
        with pytest.raises(Conflict):
            store.save(key, b"lost", expected_version=v1, ttl=TTL, meta=_meta(clock))
        with pytest.raises(Conflict):
            store.save(key, b"lost", expected_version=v2 + 100, ttl=TTL, meta=_meta(clock))
        entry = store.load(key)
        assert entry is not None
        assert (entry.payload, entry.version) == (b"two", v2)

    def test_update_of_deleted_key_is_gone(self, store: Store, clock: FakeClock) -> None:
        key = make_key("deleted")
        version = store.save(key, b"one", expected_version=None, ttl=TTL, meta=_meta(clock))
        store.delete(key)
        with pytest.raises(Gone):
            store.save(key, b"zombie", expected_version=version, ttl=TTL, meta=_meta(clock))
        assert store.load(key) is None

    def test_update_of_unknown_key_is_gone(self, store: Store, clock: FakeClock) -> None:
        key = make_key("never-created")
        with pytest.raises(Gone):
            store.save(key, b"zombie", expected_version=1, ttl=TTL, meta=_meta(clock))
        assert store.load(key) is None

    # -- expiry ----------------------------------------------------------------

    def test_expired_entry_is_not_loaded(self, store: Store, clock: FakeClock) -> None:
        key = make_key("expiring")
        store.save(key, b"x", expected_version=None, ttl=10, meta=_meta(clock))
        clock.advance(9.5)
        assert store.load(key) is not None
        clock.advance(0.5)  # expires == now counts as expired
        assert store.load(key) is None
        clock.advance(1000)
        assert store.load(key) is None

    def test_update_of_expired_entry_is_gone(self, store: Store, clock: FakeClock) -> None:
        key = make_key("expired-update")
        version = store.save(key, b"x", expected_version=None, ttl=10, meta=_meta(clock))
        clock.advance(11)
        with pytest.raises(Gone):
            store.save(key, b"zombie", expected_version=version, ttl=TTL, meta=_meta(clock))
        assert store.load(key) is None

    def test_create_over_expired_entry(self, store: Store, clock: FakeClock) -> None:
        key = make_key("expired-create")
        store.save(key, b"old", expected_version=None, ttl=10, meta=_meta(clock))
        clock.advance(11)
        version = store.save(key, b"new", expected_version=None, ttl=TTL, meta=_meta(clock))
        entry = store.load(key)
        assert entry is not None
        assert (entry.payload, entry.version) == (b"new", version)

    def test_touch_of_expired_entry_is_false(self, store: Store, clock: FakeClock) -> None:
        key = make_key("expired-touch")
        store.save(key, b"x", expected_version=None, ttl=10, meta=_meta(clock))
        clock.advance(10)
        assert store.touch(key, TTL) is False
        assert store.load(key) is None

    @pytest.mark.parametrize("ttl", [0, -1, -0.5])
    def test_save_with_ttl_of_zero_or_less_deletes(
        self, store: Store, clock: FakeClock, ttl: float
    ) -> None:
        key = make_key("zero-ttl")
        version = store.save(key, b"x", expected_version=None, ttl=TTL, meta=_meta(clock))
        store.save(key, b"y", expected_version=version, ttl=ttl, meta=_meta(clock))
        assert store.load(key) is None
        with pytest.raises(Gone):
            store.save(key, b"zombie", expected_version=version + 1, ttl=TTL, meta=_meta(clock))

    def test_create_with_ttl_of_zero_stores_nothing(self, store: Store, clock: FakeClock) -> None:
        key = make_key("zero-ttl-create")
        store.save(key, b"x", expected_version=None, ttl=0, meta=_meta(clock))
        assert store.load(key) is None

    def test_save_with_zero_ttl_still_checks_the_version(
        self, store: Store, clock: FakeClock
    ) -> None:
        key = make_key("zero-ttl-stale")
        v1 = store.save(key, b"one", expected_version=None, ttl=TTL, meta=_meta(clock))
        store.save(key, b"two", expected_version=v1, ttl=TTL, meta=_meta(clock))
        with pytest.raises(Conflict):
            store.save(key, b"", expected_version=v1, ttl=0, meta=_meta(clock))
        assert store.load(key) is not None

    # -- touch -----------------------------------------------------------------

    def test_touch_extends_expiry_and_sets_last_seen(self, store: Store, clock: FakeClock) -> None:
        key = make_key("touch")
        meta = _meta(clock)
        version = store.save(key, b"x", expected_version=None, ttl=10, meta=meta)
        clock.advance(8)
        assert store.touch(key, 10) is True
        entry = store.load(key)
        assert entry is not None
        assert entry.expires == pytest.approx(clock() + 10)
        assert entry.last_seen == pytest.approx(clock())
        assert entry.created == pytest.approx(meta.created)
        assert (entry.payload, entry.version) == (b"x", version)
        assert entry.user_id == meta.user_id
        clock.advance(8)  # past the first expiry, within the extended one
        assert store.load(key) is not None
        # Touch changes no version: a save based on the loaded version still lands.
        store.save(key, b"y", expected_version=version, ttl=10, meta=meta)

    def test_touch_of_missing_key_is_false(self, store: Store) -> None:
        key = make_key("touch-missing")
        assert store.touch(key, TTL) is False
        assert store.load(key) is None

    def test_touch_with_ttl_of_zero_or_less_expires(self, store: Store, clock: FakeClock) -> None:
        key = make_key("touch-zero")
        store.save(key, b"x", expected_version=None, ttl=TTL, meta=_meta(clock))
        store.touch(key, 0)
        assert store.load(key) is None

    # -- delete ----------------------------------------------------------------

    def test_delete_is_idempotent(self, store: Store, clock: FakeClock) -> None:
        key = make_key("delete")
        store.delete(key)
        store.save(key, b"x", expected_version=None, ttl=TTL, meta=_meta(clock))
        store.delete(key)
        store.delete(key)
        assert store.load(key) is None
        assert store.touch(key, TTL) is False

    def test_delete_expired_removes_only_expired(self, store: Store, clock: FakeClock) -> None:
        short = [make_key(f"short-{i}") for i in range(3)]
        long = [make_key(f"long-{i}") for i in range(3)]
        for key in short:
            store.save(key, b"s", expected_version=None, ttl=10, meta=_meta(clock))
        for key in long:
            store.save(key, b"l", expected_version=None, ttl=TTL, meta=_meta(clock))
        assert store.delete_expired() == 0
        clock.advance(10)
        assert store.delete_expired() == 3
        assert store.delete_expired() == 0
        assert all(store.load(key) is None for key in short)
        assert all(store.load(key) is not None for key in long)
        # A removed expired key can be created afresh.
        store.save(short[0], b"again", expected_version=None, ttl=TTL, meta=_meta(clock))
        assert store.load(short[0]) is not None

    def test_delete_expired_respects_limit(self, store: Store, clock: FakeClock) -> None:
        for i in range(5):
            store.save(
                make_key(f"batch-{i}"), b"x", expected_version=None, ttl=1, meta=_meta(clock)
            )
        clock.advance(2)
        assert [store.delete_expired(2) for _ in range(4)] == [2, 2, 1, 0]

    # -- inspection ------------------------------------------------------------

    def test_entries_when_inspectable(self, store: Store, clock: FakeClock) -> None:
        if not isinstance(store, InspectableStore):
            pytest.skip("store does not implement entries()")
        alice = [make_key(f"alice-{i}") for i in range(3)]
        bob = make_key("bob")
        for key in alice:
            store.save(key, b"a", expected_version=None, ttl=TTL, meta=_meta(clock, user_id="a"))
            clock.advance(1)
        store.save(bob, b"b", expected_version=None, ttl=TTL, meta=_meta(clock, user_id="b"))
        gone = make_key("expired-alice")
        store.save(gone, b"x", expected_version=None, ttl=0.5, meta=_meta(clock, user_id="a"))
        clock.advance(1)

        everything = list(store.entries())
        assert [k for k, _ in everything] == [bob, *reversed(alice)]
        assert all(isinstance(entry, Entry) for _, entry in everything)
        assert [k for k, _ in store.entries(user_id="a")] == list(reversed(alice))
        assert [k for k, _ in store.entries(user_id="a", limit=2)] == [alice[2], alice[1]]
        assert [k for k, _ in store.entries(prefix=bob[:12])] == [bob]
        assert list(store.entries(prefix=bob, user_id="a")) == []
        assert list(store.entries(user_id="nobody")) == []

    # -- the per-user index ----------------------------------------------------

    #: Sessions of other users and anonymous ones the O(user) test puts beside the user's three.
    user_index_crowd = 2000

    @staticmethod
    def user_index(store: Store) -> UserIndex:
        """``store`` as a :class:`UserIndex`; skips the test for stores without one."""
        if not isinstance(store, UserIndex):
            pytest.skip("store keeps no per-user index (UserIndex)")
        return store

    def test_user_index_lists_a_users_sessions_with_metadata(
        self, store: Store, clock: FakeClock
    ) -> None:
        index = self.user_index(store)
        alice = [make_key(f"alice-{i}") for i in range(3)]
        for n, key in enumerate(alice):
            meta = _meta(clock, user_id="alice", ip=f"192.0.2.{n}", user_agent=f"Agent/{n}")
            store.save(key, b"a", expected_version=None, ttl=TTL, meta=meta)
            clock.advance(1)
        bob, guest = make_key("bob"), make_key("guest")
        store.save(bob, b"b", expected_version=None, ttl=TTL, meta=_meta(clock, user_id="bob"))
        store.save(guest, b"g", expected_version=None, ttl=TTL, meta=_meta(clock, user_id=None))

        listed = index.sessions_for("alice")
        assert [key for key, _ in listed] == list(reversed(alice))  # most recently seen first
        for n, (_key, entry) in zip((2, 1, 0), listed, strict=True):
            assert isinstance(entry, Entry)
            assert (entry.user_id, entry.ip, entry.user_agent) == (
                "alice", f"192.0.2.{n}", f"Agent/{n}",
            )  # fmt: skip
            assert entry.created == pytest.approx(START_TIME + n)
            assert entry.last_seen == pytest.approx(START_TIME + n)
            assert clock() < entry.expires <= clock() + TTL + 1
            assert entry.payload == b"a"
        assert [key for key, _ in index.sessions_for("bob")] == [bob]
        assert index.sessions_for("nobody") == []
        # A touch makes a session the most recently seen one.
        clock.advance(1)
        assert store.touch(alice[0], TTL) is True
        first_key, _ = index.sessions_for("alice")[0]
        assert first_key == alice[0]

    def test_user_index_leaves_out_ended_sessions(self, store: Store, clock: FakeClock) -> None:
        index = self.user_index(store)
        short, long, deleted, zeroed = (make_key(n) for n in ("short", "long", "del", "zero"))
        meta = _meta(clock, user_id="alice")
        store.save(short, b"s", expected_version=None, ttl=10, meta=meta)
        store.save(long, b"l", expected_version=None, ttl=TTL, meta=meta)
        store.save(deleted, b"d", expected_version=None, ttl=TTL, meta=meta)
        version = store.save(zeroed, b"z", expected_version=None, ttl=TTL, meta=meta)
        store.delete(deleted)
        store.save(zeroed, b"z", expected_version=version, ttl=0, meta=meta)
        assert {key for key, _ in index.sessions_for("alice")} == {short, long}
        clock.advance(10)
        assert [key for key, _ in index.sessions_for("alice")] == [long]
        assert index.revoke_user("alice", keep=[long]) == 0  # an expired session is not revoked

    def test_user_index_follows_a_change_of_user(self, store: Store, clock: FakeClock) -> None:
        index = self.user_index(store)
        key = make_key("changing")
        v = store.save(key, b"1", expected_version=None, ttl=TTL, meta=_meta(clock, user_id="a"))
        v = store.save(key, b"2", expected_version=v, ttl=TTL, meta=_meta(clock, user_id="b"))
        assert index.sessions_for("a") == []
        assert [k for k, _ in index.sessions_for("b")] == [key]
        v = store.save(key, b"3", expected_version=v, ttl=TTL, meta=_meta(clock, user_id=None))
        assert index.sessions_for("b") == []
        store.save(key, b"4", expected_version=v, ttl=TTL, meta=_meta(clock, user_id="a"))
        assert [k for k, _ in index.sessions_for("a")] == [key]
        assert index.revoke_user("b") == 0
        assert store.load(key) is not None

    def test_user_index_after_a_login_rotation(self, store: Store, clock: FakeClock) -> None:
        # What session.login() does: the data moves to a new key bound to the user,
        # and the anonymous record is deleted.
        index = self.user_index(store)
        before, after = make_key("before-login"), make_key("after-login")
        store.save(before, b"x", expected_version=None, ttl=TTL, meta=_meta(clock, user_id=None))
        store.save(after, b"x", expected_version=None, ttl=TTL, meta=_meta(clock, user_id="a"))
        store.delete(before)
        assert [k for k, _ in index.sessions_for("a")] == [after]

    def test_revoke_one_session(self, store: Store, clock: FakeClock) -> None:
        index = self.user_index(store)
        doomed, other = make_key("doomed"), make_key("other")
        version = store.save(doomed, b"d", expected_version=None, ttl=TTL, meta=_meta(clock))
        store.save(other, b"o", expected_version=None, ttl=TTL, meta=_meta(clock))
        assert index.revoke(doomed) is True
        assert store.load(doomed) is None
        assert [k for k, _ in index.sessions_for("user-42")] == [other]
        assert index.revoke(doomed) is False
        assert index.revoke(make_key("never")) is False
        with pytest.raises(Gone):  # a revoked session is never resurrected by a late save
            store.save(doomed, b"z", expected_version=version, ttl=TTL, meta=_meta(clock))
        assert store.load(other) is not None

    def test_revoke_user_all_or_all_but_some(self, store: Store, clock: FakeClock) -> None:
        index = self.user_index(store)
        alice = [make_key(f"alice-{i}") for i in range(4)]
        versions = {}
        for key in alice:
            meta = _meta(clock, user_id="alice")
            versions[key] = store.save(key, b"a", expected_version=None, ttl=TTL, meta=meta)
        bob = make_key("bob")
        store.save(bob, b"b", expected_version=None, ttl=TTL, meta=_meta(clock, user_id="bob"))
        # "Log out everywhere else": keep the current session (a key of bob's changes nothing).
        assert index.revoke_user("alice", keep=[alice[1], bob]) == 3
        assert [k for k, _ in index.sessions_for("alice")] == [alice[1]]
        assert store.load(alice[1]) is not None
        assert all(store.load(k) is None for k in (alice[0], alice[2], alice[3]))
        with pytest.raises(Gone):
            store.save(
                alice[0], b"z", expected_version=versions[alice[0]], ttl=TTL,
                meta=_meta(clock, user_id="alice"),
            )  # fmt: skip
        assert store.load(bob) is not None
        assert index.revoke_user("alice") == 1
        assert index.sessions_for("alice") == []
        assert index.revoke_user("alice") == 0
        assert index.revoke_user("nobody") == 0
        assert [k for k, _ in index.sessions_for("bob")] == [bob]

    def test_user_lookup_does_not_grow_with_other_sessions(
        self, store: Store, clock: FakeClock
    ) -> None:
        index = self.user_index(store)
        crowd = [make_key(f"crowd-{i}") for i in range(self.user_index_crowd)]
        for n, key in enumerate(crowd):
            user = None if n % 2 else f"other-{n % 50}"
            meta = _meta(clock, user_id=user)
            store.save(key, b"c", expected_version=None, ttl=TTL, meta=meta)
        mine = [make_key(f"mine-{i}") for i in range(3)]
        for key in mine:
            store.save(key, b"m", expected_version=None, ttl=TTL, meta=_meta(clock, user_id="me"))
        assert {k for k, _ in index.sessions_for("me")} == set(mine)
        self.check_user_lookup_cost(store, "me", [*crowd, *mine])

    def check_user_lookup_cost(self, store: Store, user_id: str, every_key: list[str]) -> None:
        """Fail unless ``sessions_for(user_id)`` is far cheaper than reading every session.

        Compares the best of several timed lookups with one pass that loads
        ``every_key``; a store that scans all sessions cannot be
        ``INDEX_SPEEDUP`` times faster than that. Stores may override this
        with an exact check (a query plan, a count of commands).
        """
        index = self.user_index(store)
        lookup = min(_timed(lambda: index.sessions_for(user_id)) for _ in range(7))
        everything = min(_timed(lambda: [store.load(key) for key in every_key]) for _ in range(2))
        assert lookup * INDEX_SPEEDUP < everything, (
            f"sessions_for took {lookup * 1e3:.2f} ms; loading all {len(every_key)} sessions "
            f"took {everything * 1e3:.2f} ms: the lookup seems to scan other sessions"
        )

    # -- concurrency -----------------------------------------------------------

    def test_concurrent_cas_saves_lose_no_update(self, store: Store, clock: FakeClock) -> None:
        key = make_key("contended")
        store.save(key, _payload({}), expected_version=None, ttl=TTL, meta=_meta(clock))
        barrier = threading.Barrier(THREADS)
        errors: list[BaseException] = []

        def worker(name: str) -> None:
            try:
                barrier.wait()
                for _ in range(MAX_ATTEMPTS):
                    entry = store.load(key)
                    assert entry is not None, "the contended session vanished"
                    data = json.loads(entry.payload)
                    data[name] = True
                    try:
                        store.save(
                            key, _payload(data), expected_version=entry.version, ttl=TTL,
                            meta=_meta(clock),
                        )  # fmt: skip
                    except Conflict:
                        continue
                    return
                raise AssertionError(f"{name}: no save landed in {MAX_ATTEMPTS} attempts")
            except BaseException as exc:  # handed to the main thread, which re-raises
                errors.append(exc)
            finally:
                close = getattr(store, "close", None)
                if callable(close):
                    close()

        threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads), "a worker hung"
        if errors:
            raise errors[0]
        entry = store.load(key)
        assert entry is not None
        assert json.loads(entry.payload) == {f"t{i}": True for i in range(THREADS)}


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


AsyncTest = Callable[[AsyncStore, FakeClock], Awaitable[None]]


class AsyncStoreContract(_Contract):
    """The contract every async store must meet (pytest collects the ``test_*`` methods).

    Subclasses implement :meth:`make_store`. Each test runs in its own
    ``asyncio.run``, and the store is made inside that event loop, so stores
    whose clients bind to a loop work too.
    """

    @abc.abstractmethod
    def make_store(self, clock: Callable[[], float]) -> AsyncStore:
        """Return a fresh, empty, isolated async store that reads the time from ``clock``."""

    def run(self, test: AsyncTest) -> None:
        """Run ``test(store, clock)`` on a fresh store in a fresh event loop; close the store."""

        async def main() -> None:
            clock = FakeClock()
            store = self.make_store(clock)
            try:
                await test(store, clock)
            finally:
                for name in ("aclose", "close"):
                    close = getattr(store, name, None)
                    if callable(close):
                        result = close()
                        if inspect.isawaitable(result):
                            await result
                        break

        asyncio.run(main())

    def test_declares_protocol_attributes(self) -> None:
        async def test(store: AsyncStore, clock: FakeClock) -> None:
            limit = store.max_payload_size
            assert limit is None or (isinstance(limit, int) and limit > 0)
            assert isinstance(store, AsyncStore)

        self.run(test)

    def test_round_trip(self) -> None:
        async def test(store: AsyncStore, clock: FakeClock) -> None:
            key = make_key("round-trip")
            assert await store.load(key) is None
            meta = _meta(clock)
            version = await store.save(
                key, BINARY_PAYLOAD, expected_version=None, ttl=TTL, meta=meta
            )
            entry = await store.load(key)
            assert entry is not None
            assert (entry.payload, entry.version) == (BINARY_PAYLOAD, version)
            assert entry.created == pytest.approx(meta.created)
            assert entry.last_seen == pytest.approx(meta.last_seen)
            assert entry.expires == pytest.approx(clock() + TTL)
            assert (entry.user_id, entry.ip, entry.user_agent) == (
                meta.user_id, meta.ip, meta.user_agent,
            )  # fmt: skip

        self.run(test)

    def test_compare_and_swap(self) -> None:
        async def test(store: AsyncStore, clock: FakeClock) -> None:
            key = make_key("cas")
            v1 = await store.save(key, b"1", expected_version=None, ttl=TTL, meta=_meta(clock))
            with pytest.raises(Conflict):
                await store.save(key, b"x", expected_version=None, ttl=TTL, meta=_meta(clock))
            v2 = await store.save(key, b"2", expected_version=v1, ttl=TTL, meta=_meta(clock))
            assert v2 > v1
            with pytest.raises(Conflict):
                await store.save(key, b"x", expected_version=v1, ttl=TTL, meta=_meta(clock))
            entry = await store.load(key)
            assert entry is not None
            assert (entry.payload, entry.version) == (b"2", v2)

        self.run(test)

    def test_deleted_key_is_gone(self) -> None:
        async def test(store: AsyncStore, clock: FakeClock) -> None:
            key = make_key("gone")
            version = await store.save(key, b"1", expected_version=None, ttl=TTL, meta=_meta(clock))
            await store.delete(key)
            await store.delete(key)
            with pytest.raises(Gone):
                await store.save(key, b"x", expected_version=version, ttl=TTL, meta=_meta(clock))
            assert await store.load(key) is None
            assert await store.touch(key, TTL) is False

        self.run(test)

    def test_expiry(self) -> None:
        async def test(store: AsyncStore, clock: FakeClock) -> None:
            key = make_key("expiry")
            version = await store.save(key, b"1", expected_version=None, ttl=10, meta=_meta(clock))
            clock.advance(10)
            assert await store.load(key) is None
            assert await store.touch(key, TTL) is False
            with pytest.raises(Gone):
                await store.save(key, b"x", expected_version=version, ttl=TTL, meta=_meta(clock))

        self.run(test)

    def test_ttl_of_zero_or_less_deletes(self) -> None:
        async def test(store: AsyncStore, clock: FakeClock) -> None:
            key = make_key("zero")
            version = await store.save(key, b"1", expected_version=None, ttl=TTL, meta=_meta(clock))
            await store.save(key, b"2", expected_version=version, ttl=0, meta=_meta(clock))
            assert await store.load(key) is None
            await store.save(key, b"3", expected_version=None, ttl=-1, meta=_meta(clock))
            assert await store.load(key) is None

        self.run(test)

    def test_touch(self) -> None:
        async def test(store: AsyncStore, clock: FakeClock) -> None:
            key = make_key("touch")
            version = await store.save(key, b"1", expected_version=None, ttl=10, meta=_meta(clock))
            clock.advance(8)
            assert await store.touch(key, 10) is True
            entry = await store.load(key)
            assert entry is not None
            assert entry.expires == pytest.approx(clock() + 10)
            assert entry.last_seen == pytest.approx(clock())
            assert entry.version == version
            assert await store.touch(make_key("missing"), 10) is False

        self.run(test)

    def test_delete_expired(self) -> None:
        async def test(store: AsyncStore, clock: FakeClock) -> None:
            for i in range(5):
                await store.save(
                    make_key(f"batch-{i}"), b"x", expected_version=None, ttl=1, meta=_meta(clock)
                )
            keep = make_key("keep")
            await store.save(keep, b"k", expected_version=None, ttl=TTL, meta=_meta(clock))
            assert await store.delete_expired(2) == 0
            clock.advance(2)
            assert [await store.delete_expired(2) for _ in range(4)] == [2, 2, 1, 0]
            assert await store.load(keep) is not None

        self.run(test)

    def test_concurrent_cas_saves_lose_no_update(self) -> None:
        async def test(store: AsyncStore, clock: FakeClock) -> None:
            key = make_key("contended")
            await store.save(key, _payload({}), expected_version=None, ttl=TTL, meta=_meta(clock))

            async def worker(name: str) -> None:
                for _ in range(MAX_ATTEMPTS):
                    entry = await store.load(key)
                    assert entry is not None, "the contended session vanished"
                    data = json.loads(entry.payload)
                    data[name] = True
                    # Give other tasks the chance to interleave between load and save.
                    await asyncio.sleep(0)
                    try:
                        await store.save(
                            key, _payload(data), expected_version=entry.version, ttl=TTL,
                            meta=_meta(clock),
                        )  # fmt: skip
                    except Conflict:
                        continue
                    return
                raise AssertionError(f"{name}: no save landed in {MAX_ATTEMPTS} attempts")

            await asyncio.gather(*(worker(f"t{i}") for i in range(THREADS)))
            entry = await store.load(key)
            assert entry is not None
            assert json.loads(entry.payload) == {f"t{i}": True for i in range(THREADS)}

        self.run(test)

    def test_user_index(self) -> None:
        async def test(store: AsyncStore, clock: FakeClock) -> None:
            if not isinstance(store, AsyncUserIndex):
                pytest.skip("store keeps no per-user index (AsyncUserIndex)")
            keys = [make_key(f"alice-{i}") for i in range(3)]
            for key in keys:
                meta = _meta(clock, user_id="alice")
                await store.save(key, b"a", expected_version=None, ttl=TTL, meta=meta)
                clock.advance(1)
            other = make_key("bob")
            v = await store.save(
                other, b"b", expected_version=None, ttl=TTL, meta=_meta(clock, user_id="bob")
            )
            listed = await store.sessions_for("alice")
            assert [key for key, _ in listed] == list(reversed(keys))
            assert all(entry.ip == "203.0.113.7" for _, entry in listed)
            # The index follows a session to its new user.
            await store.save(
                other, b"b", expected_version=v, ttl=TTL, meta=_meta(clock, user_id="alice")
            )
            assert await store.sessions_for("bob") == []
            assert len(await store.sessions_for("alice")) == 4
            assert await store.revoke(keys[0]) is True
            assert await store.revoke(keys[0]) is False
            assert await store.load(keys[0]) is None
            assert await store.revoke_user("alice", keep=[keys[2]]) == 2
            assert [key for key, _ in await store.sessions_for("alice")] == [keys[2]]
            assert await store.revoke_user("alice") == 1
            assert await store.sessions_for("alice") == []

        self.run(test)
