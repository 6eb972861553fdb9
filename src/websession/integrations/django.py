"""Django: ``SESSION_ENGINE = "websession.integrations.django"``.

Django's own ``SessionMiddleware`` drives this engine exactly as it drives
Django's backends: it builds ``SessionStore(cookie_value)``, calls ``save()``
when the session was modified, and writes the cookie itself from the
``SESSION_COOKIE_*`` settings. What changes is underneath: the session key is a
websession id (256 bits), the store keeps only its hash, the data is websession's
payload (msgspec JSON, never pickle), and every save is versioned, so two
concurrent requests that change different keys both keep their change.

The store is the ``WEBSESSION_STORE`` setting: a store URL (``sqlite:///...``,
``redis://...``, ``file:///...``, ``memory://``) or a sync store object;
unset, the embedded SQLite store ``sqlite:///websession.db``. Expiry follows
Django to the letter (``SESSION_COOKIE_AGE``, ``set_expiry()``, the
``_session_expiry`` key in the data) and becomes the store's TTL. The signed-in
user (Django auth's ``_auth_user_id``) is recorded as the session's user, so the
store's per-user index lists and revokes a user's sessions.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeGuard, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings  # type: ignore[import-untyped]
from django.contrib.sessions.backends.base import (  # type: ignore[import-untyped]
    CreateError,
    SessionBase,
    UpdateError,
)
from django.core.signals import setting_changed  # type: ignore[import-untyped]

from .._driver import DEFAULT_STORE_URL
from ..codecs import DecodeError, Payload, decode_payload, encode_payload, encode_value
from ..config import SessionConfig
from ..errors import Conflict, Gone, PayloadTooLarge, SessionConfigError, SessionError
from ..ids import LEGACY_TOKEN_MAX, hash_id, legacy_key, new_id
from ..stores.base import Entry, Meta, Store
from ..stores.cookie import CookieStore
from ..urls import mask_url, store_from_url

__all__ = ["SessionStore", "get_store"]

#: The setting that names the store (a URL or a sync store object).
STORE_SETTING = "WEBSESSION_STORE"
#: Until this aware datetime, a key the store does not know is looked up among the
#: sessions ``websession migrate django-db`` imported (see the migration guide).
LEGACY_SETTING = "WEBSESSION_LEGACY_SESSION_CUTOFF"
#: Django auth's session key for the signed-in user's primary key.
USER_ID_KEY = "_auth_user_id"
#: Expired rows removed per store call by ``clear_expired()`` (``manage.py clearsessions``).
CLEAR_BATCH = 1000
#: Attempts to find an unused key in ``create()``; with 256-bit ids one always suffices.
CREATE_ATTEMPTS = 8

_DEFAULTS = SessionConfig()
security_log = logging.getLogger("websession.security")
django_security_log = logging.getLogger("django.security.SuspiciousSession")

T = TypeVar("T")

_lock = threading.Lock()
_stores_by_url: dict[str, Store] = {}


def get_store() -> Store:
    """The sync store the ``WEBSESSION_STORE`` setting names (built once per URL).

    Refuses what cannot back Django's engine: an async store (the sync form
    serves the async session methods too) and ``cookie://`` (Django's middleware
    puts the session key in the cookie, so the data cannot travel there; use
    Django's ``signed_cookies`` backend for that).
    """
    value = getattr(settings, STORE_SETTING, None)
    if value is None:
        value = DEFAULT_STORE_URL
    if isinstance(value, str):
        store = _stores_by_url.get(value)
        if store is None:
            with _lock:
                store = _stores_by_url.get(value)
                if store is None:
                    if value.partition("://")[0].lower() == "cookie":
                        _refuse_cookie_store(mask_url(value))
                    store = _check_store(store_from_url(value), mask_url(value))
                    _stores_by_url[value] = store
        return store
    return _check_store(value, repr(value))


def _refuse_cookie_store(name: str) -> NoReturn:
    raise SessionConfigError(
        f"{STORE_SETTING}={name} is a cookie store, which cannot back Django's session "
        "engine: Django's middleware sends the session key in the cookie. Use a server "
        "store, or Django's own django.contrib.sessions.backends.signed_cookies"
    )


def _check_store(store: Any, name: str) -> Store:
    if isinstance(store, CookieStore):
        _refuse_cookie_store(name)
    load = getattr(store, "load", None)
    if not callable(load) or not callable(getattr(store, "save", None)):
        raise SessionConfigError(f"{STORE_SETTING}={name} is not a session store or a store URL")
    if inspect.iscoroutinefunction(load):
        raise SessionConfigError(
            f"{STORE_SETTING}={name} is an async store; give its sync form (or a URL): "
            "the async session methods run the sync store off the event loop"
        )
    return store  # type: ignore[no-any-return]


def _forget_stores(*, setting: str, **_: Any) -> None:
    """Drop stores built from URLs when ``WEBSESSION_STORE`` changes (``override_settings``)."""
    if setting != STORE_SETTING:
        return
    with _lock:
        stores = list(_stores_by_url.values())
        _stores_by_url.clear()
    for store in stores:
        close = getattr(store, "close", None)
        if callable(close):
            close()


setting_changed.connect(_forget_stores, dispatch_uid="websession.integrations.django")


def _user_id(data: Mapping[str, Any], previous: Entry | None) -> str | None:
    """The user a save records: Django auth's, else whoever another framework bound."""
    value = data.get(USER_ID_KEY)
    if value is not None:
        return str(value)
    return None if previous is None else previous.user_id


def _log_corrupt(reason: object) -> None:
    # Django's own message and logger, so existing alerting keeps working; and
    # websession's, like every other integration.
    django_security_log.warning("Session data corrupted")
    security_log.warning("stored session payload rejected, starting afresh: %s", reason)


def _acceptable_key(key: object) -> TypeGuard[str]:
    """Django's key rule, with an upper bound so a huge cookie is not hashed."""
    return isinstance(key, str) and 8 <= len(key) <= 256


class SessionStore(SessionBase):  # type: ignore[misc]
    """Django's ``SessionStore`` on a websession store.

    Behaves as Django's own backends do (``cycle_key``, ``flush``, the expiry
    methods, ``clear_expired``, the ``a*`` async forms) with websession's rules
    underneath: keys are websession ids and only their hash reaches the store,
    a key the store does not know is never adopted, saves are version-checked
    and a conflicting save replays this request's changed keys onto the fresh
    copy, and a session deleted meanwhile (logout elsewhere) is never
    resurrected (``UpdateError``, which Django's middleware turns into
    ``SessionInterrupted``).

    Subclasses may override :meth:`get_store` to pick a store in code.
    """

    # Annotations only: at run time these are SessionBase's properties.
    _session_key: str | None
    session_key: str | None
    _session_cache: dict[str, Any]

    def __init__(self, session_key: str | None = None) -> None:
        # Set before Django's __init__, which assigns the key through the validator.
        #: The stored entry this object last loaded or saved (versions, metadata).
        self._ws_entry: Entry | None = None
        #: The session key whose store version ``_ws_entry`` holds.
        self._ws_key: str | None = None
        #: Payload fields another framework sharing the session may have set
        #: (flashes, CSRF token, expiry); kept as they are on every save.
        self._ws_extra = Payload()
        #: Keys assigned in this request (so an assignment of an unchanged value still wins).
        self._ws_set: set[str] = set()
        #: A migrated record this session was loaded from, deleted once saved anew.
        self._ws_legacy: str | None = None
        super().__init__(session_key)

    # -- configuration -----------------------------------------------------------------

    @classmethod
    def get_store(cls) -> Store:
        """The store sessions live in; by default the one ``WEBSESSION_STORE`` names."""
        return get_store()

    def _validate_session_key(self, key: object) -> bool:
        # Django's own rule (8+ characters), so keys Django code sets itself behave
        # as in Django's backends. Safe here: a store only ever sees the key's hash,
        # and a presented key the store does not know is never adopted (load()
        # drops it and save() makes a fresh websession id).
        return _acceptable_key(key)

    def _get_new_session_key(self) -> str:
        # 256 random bits never collide in practice; save(must_create=True) still
        # refuses an existing key, so no exists() round trip is spent here.
        return new_id()

    async def _aget_new_session_key(self) -> str:
        return new_id()

    # -- tracking assignments (for conflict replay) --------------------------------------

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._ws_set.add(key)

    async def aset(self, key: str, value: Any) -> None:
        await super().aset(key, value)
        self._ws_set.add(key)

    def update(self, dict_: Mapping[str, Any]) -> None:
        super().update(dict_)
        self._ws_set.update(dict(dict_))

    async def aupdate(self, dict_: Mapping[str, Any]) -> None:
        await super().aupdate(dict_)
        self._ws_set.update(dict(dict_))

    # -- encoding ------------------------------------------------------------------------

    def encode(self, session_dict: dict[str, Any]) -> str:
        """``session_dict`` as websession's payload text (what the store keeps, as bytes)."""
        return encode_payload(Payload(d=session_dict)).decode("utf-8")

    def decode(self, session_data: str | bytes) -> dict[str, Any]:
        """The data of an encoded payload; ``{}`` (and a security warning) if it is corrupt."""
        payload = _decode(session_data)
        return {} if payload is None else payload.d

    # -- the backend methods -------------------------------------------------------------

    def exists(self, session_key: str | None) -> bool:
        if not _acceptable_key(session_key):
            return False
        return self.get_store().load(hash_id(session_key)) is not None

    def load(self) -> dict[str, Any]:
        """The stored data; ``{}`` and no key when the session is unknown, expired or corrupt."""
        key = self.session_key
        entry = None if key is None else self.get_store().load(hash_id(key))
        payload = None if entry is None else _decode(entry.payload)
        if entry is None and key is not None:
            migrated = self._ws_load_legacy(key)
            if migrated is not None:
                return migrated
        if entry is None or payload is None:
            # An unknown key is never adopted: the next save makes a fresh one.
            self._session_key = None
            self._ws_forget()
            return {}
        self._ws_entry = entry
        self._ws_key = key
        self._ws_extra = payload
        self._ws_set.clear()
        return payload.d

    def create(self) -> None:
        for _attempt in range(CREATE_ATTEMPTS):
            self._session_key = self._get_new_session_key()
            try:
                self.save(must_create=True)
            except CreateError:
                continue
            self.modified = True
            if self._ws_legacy is not None:
                # The migrated record now lives under a websession key: the old
                # Django key must not load it a second time.
                self.get_store().delete(self._ws_legacy)
                self._ws_legacy = None
            return
        raise SessionError(
            f"{type(self.get_store()).__name__} refused {CREATE_ATTEMPTS} fresh session ids "
            "as existing; the store is not keeping keys apart"
        )

    def save(self, must_create: bool = False) -> None:
        """Write the session: create it (``must_create``) or update the version this object read.

        ``CreateError`` when creating over an existing key; ``UpdateError`` when
        the session is gone from the store (expired, or deleted by a logout in
        another request), because saving would bring it back.
        """
        if self.session_key is None:
            self.create()
            return
        data = self._get_session(no_load=must_create)
        key = self.session_key
        if key is None:
            # Loading just now found nothing: it was deleted or expired meanwhile.
            raise UpdateError
        store = self.get_store()
        hkey = hash_id(key)
        now = time.time()
        base: bytes | None = None
        if must_create:
            entry, expected = None, None
        else:
            entry = self._ws_entry if self._ws_key == key else None
            if entry is not None:
                base = entry.payload
            else:
                # The data was replaced without a load (clear() first): it is the whole
                # truth, and only the stored version is needed to write it.
                entry = store.load(hkey)
                if entry is None:
                    raise UpdateError
            expected = entry.version
        previous = self._ws_entry
        limit = _payload_limit(store)
        for _attempt in range(_DEFAULTS.conflict_retries + 1):
            payload = self._encode(data, limit)
            ttl = float(self.get_expiry_age())
            if entry is not None and not self._ws_set and payload == entry.payload and ttl > 0:
                # Nothing assigned, nothing changed, only the expiry moves (as with
                # SESSION_SAVE_EVERY_REQUEST): a touch, which keeps the version.
                if not store.touch(hkey, ttl):
                    self._ws_forget()
                    raise UpdateError
                self._ws_remember(key, entry, payload, entry.version, now, ttl)
                return
            meta = Meta(
                created=entry.created if entry is not None else now,
                last_seen=now,
                user_id=_user_id(data, previous),
                # The client's address and agent are not known to a SessionBase; keep
                # what another framework sharing the session recorded.
                ip=previous.ip if previous is not None else None,
                user_agent=previous.user_agent if previous is not None else None,
            )
            try:
                version = store.save(hkey, payload, expected_version=expected, ttl=ttl, meta=meta)
            except Gone:
                self._ws_forget()
                raise UpdateError from None
            except Conflict:
                if must_create:
                    raise CreateError from None
                fresh = store.load(hkey)
                if fresh is None:
                    self._ws_forget()
                    raise UpdateError from None
                data = self._replay(data, base, fresh)
                base, entry, expected = fresh.payload, fresh, fresh.version
                continue
            if ttl <= 0:
                # Expired on arrival: the store deleted it, as Django's backends would
                # never load it again.
                self._ws_forget()
                return
            stored = Entry(
                payload, version, meta.created, now, now + ttl, meta.user_id, meta.ip,
                meta.user_agent,
            )  # fmt: skip
            self._ws_remember(key, stored, payload, version, now, ttl)
            return
        raise SessionError(
            f"session save kept conflicting after {_DEFAULTS.conflict_retries} retries"
        )

    def delete(self, session_key: str | None = None) -> None:
        if session_key is None:
            session_key = self.session_key
            if session_key is None:
                return
        if not _acceptable_key(session_key):
            return
        self.get_store().delete(hash_id(session_key))
        if session_key == self._ws_key:
            self._ws_forget()

    @classmethod
    def clear_expired(cls) -> None:
        """Remove expired sessions in batches (``manage.py clearsessions`` calls this).

        Stores with native expiry (Redis) have nothing to remove.
        """
        store = cls.get_store()
        while store.delete_expired(CLEAR_BATCH) >= CLEAR_BATCH:
            pass

    # -- async forms ---------------------------------------------------------------------

    async def _call(self, func: Callable[..., T], *args: Any) -> T:
        # SQLite, file and memory calls take microseconds: a thread hop would cost
        # more. A network store's sync client runs in a worker thread, because
        # Django may drive async code on many short-lived event loops (async_to_sync
        # under WSGI), and an asyncio client is bound to the loop that opened it.
        if getattr(self.get_store(), "inline", False):
            return func(*args)
        return await sync_to_async(func, thread_sensitive=False)(*args)

    async def aexists(self, session_key: str | None) -> bool:
        return await self._call(self.exists, session_key)

    async def aload(self) -> dict[str, Any]:
        return await self._call(self.load)

    async def acreate(self) -> None:
        await self._call(self.create)

    async def asave(self, must_create: bool = False) -> None:
        await self._call(self.save, must_create)

    async def adelete(self, session_key: str | None = None) -> None:
        await self._call(self.delete, session_key)

    @classmethod
    async def aclear_expired(cls) -> None:
        store = cls.get_store()
        if getattr(store, "inline", False):
            cls.clear_expired()
        else:
            await sync_to_async(cls.clear_expired, thread_sensitive=False)()

    # -- internals -----------------------------------------------------------------------

    def _encode(self, data: dict[str, Any], limit: int) -> bytes:
        extra = self._ws_extra
        payload = encode_payload(Payload(d=data, f=extra.f, c=extra.c, x=extra.x, b=extra.b))
        if len(payload) > limit:
            raise PayloadTooLarge(len(payload), limit, "this store", _largest(data))
        return payload

    def _replay(self, mine: dict[str, Any], base: bytes | None, fresh: Entry) -> dict[str, Any]:
        """This request's changes re-applied onto the copy another request saved meanwhile.

        Keys this request assigned, or whose value differs from what it loaded, take
        this request's value; keys it removed are removed; every other key keeps the
        other request's value. With no loaded baseline (the data was replaced
        wholesale) this request's data wins whole.
        """
        theirs = _decode(fresh.payload) or Payload()
        self._ws_extra = theirs
        if base is None:
            merged = dict(mine)
        else:
            loaded = (_decode(base) or Payload()).d
            merged = theirs.d
            for name in loaded:
                if name not in mine:
                    merged.pop(name, None)
            for name, value in mine.items():
                if name in self._ws_set or name not in loaded or loaded[name] != value:
                    merged[name] = value
        self._session_cache = merged
        return merged

    def _ws_load_legacy(self, key: str) -> dict[str, Any] | None:
        """The data of a session migrated from Django's own backends, while they are accepted.

        The session gets a new websession key at the end of this request (it is
        marked modified, so Django's middleware saves it and sends the new cookie).
        """
        cutoff = getattr(settings, LEGACY_SETTING, None)
        if cutoff is None or len(key) > LEGACY_TOKEN_MAX:
            return None
        if not hasattr(cutoff, "timestamp") or cutoff.utcoffset() is None:
            raise SessionConfigError(f"{LEGACY_SETTING} must be a timezone-aware datetime")
        if time.time() >= cutoff.timestamp():
            return None
        old = legacy_key(key)
        store = self.get_store()
        entry = store.load(old)
        payload = None if entry is None else _decode(entry.payload)
        if entry is None or payload is None:
            return None
        self._session_key = None
        self._ws_forget()
        self._ws_extra = payload
        self._ws_legacy = old
        self.modified = True
        return payload.d

    def _ws_remember(
        self, key: str, entry: Entry, payload: bytes, version: int, now: float, ttl: float
    ) -> None:
        entry.payload = payload
        entry.version = version
        entry.last_seen = now
        entry.expires = now + ttl
        self._ws_entry = entry
        self._ws_key = key
        self._ws_set.clear()

    def _ws_forget(self) -> None:
        self._ws_entry = None
        self._ws_key = None
        self._ws_extra = Payload()
        self._ws_set.clear()


def _decode(raw: str | bytes) -> Payload | None:
    try:
        data = raw.encode("utf-8") if isinstance(raw, str) else raw
        return decode_payload(data)
    except (DecodeError, UnicodeEncodeError) as exc:
        _log_corrupt(exc)
        return None


def _payload_limit(store: Store) -> int:
    limit = _DEFAULTS.max_payload_bytes
    store_limit = getattr(store, "max_payload_size", None)
    return limit if store_limit is None else min(limit, store_limit)


def _largest(data: Mapping[str, Any]) -> str | None:
    best, size = None, -1
    for key, value in data.items():
        n = len(encode_value(key, value))
        if n > size:
            best, size = key, n
    return best
