"""The sans-I/O core: every decision about loading, expiry, rotation and saving.

The flow never touches a store. Its two generators yield store operations
(:class:`Load`, :class:`Save`, :class:`Touch`, :class:`Delete`) and receive
their results; :func:`run_sync` and :func:`run_async` carry them out, so the
logic is written once for sync and async stores (the idea of httpx's auth
flows). The clock is injectable for tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import msgspec

from .codecs import (
    DecodeError,
    Payload,
    decode_payload,
    encode_payload,
    encode_value,
    is_tagged,
)
from .config import SessionConfig
from .errors import Conflict, Gone, PayloadTooLarge, SessionError
from .ids import ID_LENGTH, LEGACY_TOKEN_MAX, hash_id, is_id_shaped, legacy_key, new_id
from .stores.base import AsyncStore, Entry, Meta, Store

if TYPE_CHECKING:
    from .session import Session
    from .stores.cookie import CookieStore

__all__ = [
    "CLEAR",
    "NOTHING",
    "Delete",
    "Flow",
    "Load",
    "Outcome",
    "Save",
    "Touch",
    "run_async",
    "run_sync",
]

security_log = logging.getLogger("websession.security")
#: How long a renewed id stays readable, in seconds.
RENEW_GRACE = 60.0
log = logging.getLogger("websession")


class Load:
    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def apply(self, store: Store) -> Entry | None:
        return store.load(self.key)

    async def apply_async(self, store: AsyncStore) -> Entry | None:
        return await store.load(self.key)


class Save:
    __slots__ = ("expected_version", "key", "meta", "payload", "ttl")

    def __init__(
        self, key: str, payload: bytes, expected_version: int | None, ttl: float, meta: Meta
    ) -> None:
        self.key = key
        self.payload = payload
        self.expected_version = expected_version
        self.ttl = ttl
        self.meta = meta

    def apply(self, store: Store) -> int:
        return store.save(
            self.key,
            self.payload,
            expected_version=self.expected_version,
            ttl=self.ttl,
            meta=self.meta,
        )

    async def apply_async(self, store: AsyncStore) -> int:
        return await store.save(
            self.key,
            self.payload,
            expected_version=self.expected_version,
            ttl=self.ttl,
            meta=self.meta,
        )


class Touch:
    __slots__ = ("key", "ttl")

    def __init__(self, key: str, ttl: float) -> None:
        self.key = key
        self.ttl = ttl

    def apply(self, store: Store) -> bool:
        return store.touch(self.key, self.ttl)

    async def apply_async(self, store: AsyncStore) -> bool:
        return await store.touch(self.key, self.ttl)


class Delete:
    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def apply(self, store: Store) -> None:
        store.delete(self.key)

    async def apply_async(self, store: AsyncStore) -> None:
        await store.delete(self.key)


Op = Load | Save | Touch | Delete
FlowGen = Generator[Op, Any, Any]


class Outcome:
    """What the response must carry: a new token with its Max-Age, a removal, or nothing."""

    __slots__ = ("clear", "max_age", "token")

    def __init__(self, token: str | None, max_age: int | None, clear: bool = False) -> None:
        self.token = token
        self.max_age = max_age
        self.clear = clear

    def __repr__(self) -> str:
        if self.clear:
            return "Outcome(clear)"
        if self.token is None:
            return "Outcome(nothing)"
        return f"Outcome(set, max_age={self.max_age})"


NOTHING = Outcome(None, None)
CLEAR = Outcome(None, None, clear=True)


def run_sync(gen: FlowGen, store: Store | None) -> Any:
    """Carry out a flow generator against a sync store."""
    send: Any = None
    throw: BaseException | None = None
    while True:
        try:
            op = gen.throw(throw) if throw is not None else gen.send(send)
        except StopIteration as stop:
            return stop.value
        throw = None
        try:
            send = op.apply(store)  # type: ignore[arg-type]
        except (Conflict, Gone) as exc:
            send = None
            throw = exc


async def run_async(gen: FlowGen, store: AsyncStore | None) -> Any:
    """Carry out a flow generator against an async store."""
    send: Any = None
    throw: BaseException | None = None
    while True:
        try:
            op = gen.throw(throw) if throw is not None else gen.send(send)
        except StopIteration as stop:
            return stop.value
        throw = None
        try:
            send = await op.apply_async(store)  # type: ignore[arg-type]
        except (Conflict, Gone) as exc:
            send = None
            throw = exc


class Flow:
    """Decides, for one middleware, what each request does with its session."""

    __slots__ = (
        "_absolute",
        "_client",
        "_idle",
        "_limit",
        "_renew",
        "_retries",
        "_touch",
        "clock",
        "config",
        "legacy_until",
    )

    def __init__(
        self,
        config: SessionConfig,
        *,
        clock: Any = time.time,
        client_store: CookieStore | None = None,
        payload_limit: int | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self._client = client_store
        self._idle = config.idle_seconds
        self._absolute = config.absolute_seconds
        self._touch = config.touch_seconds
        # Renewal needs server-side ids; a cookie session has none to renew.
        self._renew = config.renew_seconds if client_store is None else None
        self._retries = config.conflict_retries
        cutoff = config.legacy_session_cutoff
        #: Epoch time until which migrated sessions are looked up (None: never).
        self.legacy_until = (
            cutoff.timestamp() if cutoff is not None and client_store is None else None
        )
        limit = config.max_payload_bytes
        if payload_limit is not None:
            limit = min(limit, payload_limit)
        self._limit = limit

    # -- load ----------------------------------------------------------------------

    def load(self, session: Session) -> FlowGen:
        """Load the session named by ``session._token`` (set by the driver) into ``session``."""
        key = self.load_key(session)
        if key is not None:
            entry = yield Load(key)
            doomed = self.loaded(session, key, entry)
            if doomed is not None:
                yield Delete(doomed)
        if self.legacy_until is not None:
            old = self.legacy_key(session)
            if old is not None:
                entry = yield Load(old)
                doomed = self.adopt_legacy(session, old, entry)
                if doomed is not None:
                    yield Delete(doomed)

    # The two steps of load(), for drivers that call a sync store inline: the same
    # decisions without a generator round trip on the hottest path.

    def load_key(self, session: Session) -> str | None:
        """The store key to load for ``session``, or None when there is nothing to load.

        Client-side (cookie) sessions are decoded right here, with no store call.
        """
        token = session._token
        if token is None:
            return None
        client = self._client
        if client is not None:
            try:
                entry = client.load_token(token)
            except DecodeError as exc:
                security_log.warning("session cookie rejected: %s", exc)
                session._stale = True
                return None
            self.loaded(session, "", entry)
            return None
        if len(token) != ID_LENGTH or is_id_shaped(token) is None:  # is_valid_id, unrolled
            until = self.legacy_until
            if until is None or self.clock() >= until:
                security_log.warning(
                    "session token of the wrong shape rejected (length %d)", len(token)
                )
            session._stale = True
            return None
        return hash_id(token)

    def legacy_key(self, session: Session) -> str | None:
        """Where a migrated session for ``session``'s token would be, while they are accepted.

        Asked after the token named no live websession session (drivers check
        :attr:`legacy_until` first, so this costs nothing when it is off).
        """
        until = self.legacy_until
        token = session._token
        if (
            until is None
            or token is None
            or session._entry is not None
            or session._degraded
            or not 0 < len(token) <= LEGACY_TOKEN_MAX
            or self.clock() >= until
        ):
            return None
        return legacy_key(token)

    def adopt_legacy(self, session: Session, key: str, entry: Entry | None) -> str | None:
        """Adopt a migrated record; the commit moves it to a fresh id and deletes it.

        The new session's absolute timeout counts from now, as after a login:
        its creation time in the old framework is not websession's to judge.
        Returns a key to delete (an expired record), or None.
        """
        if entry is None:
            return None
        if self.clock() >= entry.expires:
            return key
        tagged = is_tagged(entry.payload)
        try:
            payload = decode_payload(entry.payload, tagged)
        except DecodeError as exc:
            security_log.warning("migrated session payload rejected: %s", exc)
            return None
        session._adopt(entry, payload, key, tagged)
        session._rotate = True
        session._login = True
        session.modified = True
        return None

    def loaded(self, session: Session, key: str, entry: Entry | None) -> str | None:
        """Adopt what the store returned for ``key``; returns a key to delete, or None."""
        if entry is None:
            session._stale = True
            return None
        if self._expired(entry, self.clock()):
            session._stale = True
            session._event("expire", key, None, entry.user_id)
            return key or None
        # One scan for type tags serves the decode and the commit's dirty-key shortcut.
        tagged = is_tagged(entry.payload)
        try:
            payload = decode_payload(entry.payload, tagged)
        except DecodeError as exc:
            security_log.warning("stored session payload rejected, starting afresh: %s", exc)
            session._stale = True
            return None
        session._adopt(entry, payload, key, tagged)
        return None

    def settled(self, session: Session, status: int) -> Outcome | None:
        """The commit's outcome when it needs no store call, else None (run :meth:`commit`).

        Most requests end here: untouched, read-only, or a 5xx.
        """
        if not session.accessed or status >= 500 or session._degraded:
            return NOTHING
        if session._destroyed_keys:
            return None
        if session._retired:
            return NOTHING  # an id that was renewed: readable for its grace, never saved
        if session._rotate:
            return None
        entry = session._entry
        if entry is None:
            if session._is_empty():
                return CLEAR if session._stale else NOTHING
            return None
        now = self.clock()
        if self._renew is not None and self._renewal_due(session, now):
            return None
        if now - entry.last_seen >= self._touch or session._changed():
            return None
        if self._absolute is not None and now >= entry.created + self._absolute:
            return None
        return NOTHING

    def _expired(self, entry: Entry, now: float) -> bool:
        if now >= entry.expires:
            return True
        return self._absolute is not None and now >= entry.created + self._absolute

    # -- commit --------------------------------------------------------------------

    def commit(
        self,
        session: Session,
        status: int = 200,
        ip: str | None = None,
        user_agent: str | None = None,
    ) -> FlowGen:
        """Decide what reaches the store once the response status is known; returns an Outcome."""
        if not session.accessed or status >= 500 or session._degraded:
            return NOTHING
        if self._client is not None:
            # A cookie session has no server record to delete (and no store to ask).
            return self.commit_client(session)
        for old_key in session._destroyed_keys:
            yield Delete(old_key)
        entry = session._entry
        if session._retired and entry is not None:
            return NOTHING
        if session._is_empty():
            if entry is not None:
                yield Delete(session._key)  # type: ignore[arg-type]
                session._event("destroy", session._key or "", None, entry.user_id)
                return CLEAR
            return CLEAR if session._destroyed_keys or session._stale else NOTHING
        now = self.clock()
        # The absolute timeout counts from creation, and login starts a new session:
        # periodic regenerate() must never extend the cap, a fresh login may.
        created = entry.created if entry is not None and not session._login else now
        ttl = self._ttl(session, created, now)
        if ttl <= 0:
            if entry is not None:
                yield Delete(session._key)  # type: ignore[arg-type]
                session._event("expire", session._key or "", None, entry.user_id)
            return CLEAR
        max_age = None if session._browser_session else int(ttl)

        renewing = (
            entry is not None
            and not session._rotate
            and self._renew is not None
            and self._renewal_due(session, now)
        )
        if entry is None or session._rotate or renewing:
            if entry is not None:
                # Revoked or logged out elsewhere since we loaded it? Then its data
                # must not live on under a new id.
                alive = yield Touch(session._key, ttl)  # type: ignore[arg-type]
                if not alive:
                    return CLEAR
            issued_before = session._issued
            session._issued = now
            payload = self._encode(session)
            token = new_id()
            key = hash_id(token)
            meta = Meta(created, now, session._user_id, ip, user_agent)
            version = yield Save(key, payload, None, ttl, meta)
            if entry is not None:
                old_key = session._key or ""
                if renewing:
                    yield from self._retire(session, entry, old_key, issued_before, ttl, now)
                else:
                    yield Delete(old_key)
                session._event("rotate", key, session._key, session._user_id)
            else:
                session._event("create", key, None, session._user_id)
            _rebase(session, key, token, payload, version, meta, now + ttl)
            return Outcome(token, max_age)

        key = session._key or ""
        # Nothing set and no mutable value handed out: the payload cannot differ.
        changed = session._changed()
        payload = self._encode(session) if changed else (session._loaded_payload or b"")
        if changed and payload != session._loaded_payload:
            base_version = entry.version
            for _attempt in range(self._retries + 1):
                meta = Meta(entry.created, now, entry.user_id, ip, user_agent)
                try:
                    version = yield Save(key, payload, base_version, ttl, meta)
                except Gone:
                    return CLEAR
                except Conflict:
                    fresh: Entry | None = yield Load(key)
                    if fresh is None or self._expired(fresh, now):
                        return CLEAR
                    if _is_retired(fresh):
                        # Renewed by another request meanwhile: this old id is read-only now.
                        return NOTHING
                    payload = self._replay(session, fresh)
                    base_version = fresh.version
                    entry = fresh
                    continue
                _rebase(session, key, session._token, payload, version, meta, now + ttl)
                return Outcome(session._token, max_age)
            raise SessionError(
                f"session save kept conflicting after {self._retries} retries; "
                "raise conflict_retries if this many concurrent writers are expected"
            )

        if now - entry.last_seen >= self._touch:
            alive = yield Touch(key, ttl)
            if not alive:
                return CLEAR
            entry.last_seen = now
            entry.expires = now + ttl
            return NOTHING if max_age is None else Outcome(session._token, max_age)
        return NOTHING

    def commit_client(self, session: Session) -> Outcome:
        """:meth:`commit` for a cookie session, whose store is never called: no generator.

        Only after :meth:`settled` answered None (accessed, no 5xx, not degraded).
        """
        client = self._client
        if client is None:
            raise TypeError("commit_client() is for a middleware on a CookieStore")
        entry = session._entry
        if session._is_empty():
            return (
                CLEAR if entry is not None or session._stale or session._destroyed_keys else NOTHING
            )
        now = self.clock()
        created = entry.created if entry is not None and not session._login else now
        ttl = self._ttl(session, created, now)
        if ttl <= 0:
            return CLEAR
        if (
            entry is not None
            and not session._rotate
            and not session._changed()
            and now - entry.last_seen < self._touch
        ):
            return NOTHING
        payload = self._encode(session, check_limit=False)
        if (
            entry is not None
            and not session._rotate
            and payload == session._loaded_payload
            and now - entry.last_seen < self._touch
        ):
            return NOTHING
        meta = Meta(created, now, session._user_id)
        token = client.dump_token(payload, ttl=ttl, meta=meta)
        _rebase(session, "", token, payload, 0, meta, now + ttl)
        size = len(self.config.cookie_name) + 1 + len(token)
        if size > client.max_cookie_size:
            raise PayloadTooLarge(
                size, client.max_cookie_size, "a browser cookie (name=value)", _largest(session)
            )
        return Outcome(token, None if session._browser_session else int(ttl))

    def _renewal_due(self, session: Session, now: float) -> bool:
        renew = self._renew
        if renew is None:
            return False
        issued = session._issued
        if issued is None:  # written before renewal was configured: count from creation
            entry = session._entry
            issued = entry.created if entry is not None else now
        return now - issued >= renew

    def _retire(
        self,
        session: Session,
        entry: Entry,
        old_key: str,
        issued: float | None,
        ttl: float,
        now: float,
    ) -> FlowGen:
        """Keep a renewed id readable (never writable) for RENEW_GRACE seconds.

        Requests already in flight with the old id would otherwise find it gone
        and log the user out; they now read the data and leave everything as is.
        """
        retired = msgspec.structs.replace(
            decode_payload(self._encode(session, check_limit=False)), i=issued, r=True
        )
        meta = Meta(entry.created, now, entry.user_id, entry.ip, entry.user_agent)
        try:
            yield Save(old_key, encode_payload(retired), entry.version, min(RENEW_GRACE, ttl), meta)
        except (Conflict, Gone):
            yield Delete(old_key)

    def _ttl(self, session: Session, created: float, now: float) -> float:
        ttl = session._expiry if session._expiry is not None else self._idle
        if self._absolute is not None:
            ttl = min(ttl, created + self._absolute - now)
        return ttl

    def _encode(self, session: Session, *, check_limit: bool = True) -> bytes:
        payload = encode_payload(
            Payload(
                d=session._data,
                f=session._flashes,
                c=session._csrf,
                x=session._expiry,
                b=session._browser_session,
                i=session._issued,
            ),
            session._dirty_keys(),
        )
        if check_limit and len(payload) > self._limit:
            raise PayloadTooLarge(len(payload), self._limit, "this store", _largest(session))
        return payload

    def _replay(self, session: Session, fresh: Entry) -> bytes:
        """Re-apply this request's changes onto a copy someone else saved meanwhile."""
        try:
            theirs = decode_payload(fresh.payload)
        except DecodeError:
            security_log.warning("stored session payload undecodable during replay; overwriting")
            theirs = Payload()
        base = decode_payload(session._loaded_payload or b"{}")
        mine = session._data
        data = theirs.d
        logged: set[str] = set()
        for op, name in session._log:
            if op == "clear":
                data.clear()
            elif op == "set" and name is not None:
                logged.add(name)
                if name in mine:
                    data[name] = mine[name]
            elif op == "delete" and name is not None:
                logged.discard(name)
                data.pop(name, None)
        for name, value in mine.items():
            # In-place changes (session["cart"].append(x)) never went through __setitem__.
            if name not in logged and (name not in base.d or base.d[name] != value):
                data[name] = value
        flashes = list(theirs.f)
        for consumed in session._flashes_consumed:
            if consumed in flashes:
                flashes.remove(consumed)
        flashes.extend(session._flashes_added)
        csrf = theirs.c
        if session._csrf != base.c:
            csrf = theirs.c or session._csrf if base.c is None else session._csrf
        expiry, browser = theirs.x, theirs.b
        if (session._expiry, session._browser_session) != (base.x, base.b):
            expiry, browser = session._expiry, session._browser_session
        merged = Payload(d=data, f=flashes, c=csrf, x=expiry, b=browser, i=session._issued)
        encoded = encode_payload(merged)
        if len(encoded) > self._limit:
            raise PayloadTooLarge(len(encoded), self._limit, "this store", _largest(session))
        return encoded


def _is_retired(entry: Entry) -> bool:
    try:
        return decode_payload(entry.payload).r
    except DecodeError:
        return False


def _rebase(
    session: Session,
    key: str,
    token: str | None,
    payload: bytes,
    version: int,
    meta: Meta,
    expires: float,
) -> None:
    """After a successful save the saved state becomes the session's new baseline.

    A second commit of the same session (a websocket that changes data after
    the handshake) then diffs against what is stored now.
    """
    entry = session._entry
    if entry is not None and key and key == session._key:
        # The request's private copy of the record: update it in place.
        entry.payload = payload
        entry.version = version
        entry.last_seen = meta.last_seen
        entry.expires = expires
        entry.ip = meta.ip
        entry.user_agent = meta.user_agent
    else:
        session._entry = Entry(
            payload,
            version,
            meta.created,
            meta.last_seen,
            expires,
            meta.user_id,
            meta.ip,
            meta.user_agent,
        )
    session._key = key or None
    session._token = token
    session._loaded_payload = payload
    session._rotate = False
    session._login = False
    # Values set before this save are still live objects (tuples, sets...): the next
    # encode must walk everything again.
    session._clean_load = False
    session._log.clear()
    session._cleared = False
    session._destroyed_keys.clear()
    session._flashes_added.clear()
    session._flashes_consumed.clear()
    session._stale = False
    session.is_new = False


def _largest(session: Session) -> str | None:
    best, size = None, -1
    for key, value in session._data.items():
        n = len(encode_value(key, value))
        if n > size:
            best, size = key, n
    return best
