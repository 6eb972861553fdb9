"""Session: the mapping a request sees, with its change log, flashes, CSRF and identity.

No I/O happens here. The middleware gives the session a loader that runs on
first touch, and the flow (:mod:`websession.flow`) decides after the response
starts what, if anything, reaches the store.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgspec

from .codecs import JSON_AS_IS, check_value
from .config import to_seconds
from .errors import SessionStateError

if TYPE_CHECKING:
    from .codecs import Payload
    from .stores.base import Entry

__all__ = ["Session"]

_MISSING: Any = object()

# A value's plain msgspec JSON, used only to notice in-place changes of values the
# app was handed: C speed, unlike the tagged payload encoding. Its one blind spot
# is a nested value replaced by another type with the same JSON (a list by a tuple
# of the same items); assigning the key again (session[k] = v) always saves.
_fingerprint = msgspec.json.Encoder().encode
# Values that cannot change in place: reading them never forces an encode at commit.
_IMMUTABLE = frozenset(
    {str, int, float, bool, type(None), bytes, datetime, date, time, timedelta, UUID, Decimal}
)


class Session(MutableMapping[str, Any]):
    """A request's session: a ``str``-keyed mapping that is loaded lazily and saved only if changed.

    ``accessed`` turns true on first use, ``modified`` when data is set or
    deleted through the mapping (in-place changes such as
    ``session["cart"].append(x)`` are found at the end of the request by
    comparing encoded payloads). ``is_new`` is true until the session exists
    in the store.
    """

    __slots__ = (
        "_admit",
        "_aloader",
        "_browser_session",
        "_clean_load",
        "_cleared",
        "_cookies",
        "_csrf",
        "_data",
        "_degraded",
        "_destroyed_keys",
        "_entry",
        "_events",
        "_expiry",
        "_exposed_all",
        "_flashes",
        "_flashes_added",
        "_flashes_consumed",
        "_frozen",
        "_issued",
        "_key",
        "_loaded",
        "_loaded_payload",
        "_loader",
        "_log",
        "_login",
        "_retired",
        "_rotate",
        "_snapshots",
        "_stale",
        "_token",
        "_user_id",
        "accessed",
        "is_new",
        "modified",
    )

    def __init__(
        self,
        data: dict[str, Any] | None = None,
        *,
        loader: Callable[[Session], None] | None = None,
    ) -> None:
        self._data: dict[str, Any] = dict(data) if data else {}
        self._loader = loader
        self._loaded = loader is None
        # Set instead of ``_loader`` when only an await can load (see load()).
        self._aloader: Callable[[Session], Awaitable[None]] | None = None
        self.accessed = False
        self.modified = False
        # Mutable values (list, dict...) handed out may be changed in place. Each one's
        # encoding at hand-out time is kept, so the commit re-encodes only those
        # values, not the whole payload. ``_exposed_all`` forces a full comparison;
        # code that reaches into ``_data`` directly must set it.
        self._snapshots: dict[str, bytes] | None = None
        self._exposed_all = False
        self.is_new = True
        self._log: list[tuple[str, str | None]] = []
        self._cleared = False
        self._clean_load = False
        self._flashes: list[tuple[str, Any]] = []
        self._flashes_consumed: list[tuple[str, Any]] = []
        self._flashes_added: list[tuple[str, Any]] = []
        self._csrf: str | None = None
        self._user_id: str | None = None
        self._expiry: float | None = None
        self._browser_session = False
        self._rotate = False
        self._login = False
        # Set by the middleware when a per-user session cap refuses logins: asks
        # the store whether this user may have one more session (raises if not).
        self._admit: Callable[[str, str | None], None] | None = None
        self._issued: float | None = None
        self._retired = False
        self._destroyed_keys: list[str] = []
        self._frozen = False
        self._degraded = False
        self._events: list[tuple[str, str, str | None, str | None]] | None = None
        self._token: str | None = None
        # The raw Cookie header (WSGI) or the raw headers (ASGI), when the
        # middleware leaves finding the session cookie to the first touch: an
        # untouched request never parses it.
        self._cookies: str | Iterable[tuple[bytes, bytes]] | None = None
        self._stale = False
        self._key: str | None = None
        self._entry: Entry | None = None
        self._loaded_payload: bytes | None = None

    def __repr__(self) -> str:
        state = "loaded" if self._loaded else "not loaded"
        return f"<Session {state} keys={sorted(self._data) if self._loaded else '?'}>"

    # -- loading ---------------------------------------------------------------

    def _use(self) -> None:
        self.accessed = True
        if not self._loaded:
            loader = self._loader
            if loader is None:
                raise SessionStateError(
                    "this session is not loaded yet: the middleware has autoload=False and an "
                    "async store, so `await session.load()` (e.g. `await request.session.load()`) "
                    "before using it"
                )
            self._loaded = True
            self._loader = None
            loader(self)

    async def load(self) -> None:
        """Load the session now; a no-op once it is loaded.

        Needed only under the ASGI middleware with an async (network) store and
        ``autoload=False``, where a request that never awaits it costs no store
        call; elsewhere the session loads itself on first touch.
        """
        self.accessed = True
        if self._loaded:
            return
        aloader = self._aloader
        if aloader is None:
            self._use()
            return
        self._aloader = None
        self._loaded = True
        await aloader(self)

    def _adopt(self, entry: Entry, payload: Payload, key: str, tagged: bool) -> None:
        """Called by the flow with what the store returned.

        ``tagged``: whether the payload held type tags (``codecs.is_tagged``),
        asked once by the flow for the decode and for this.
        """
        self._entry = entry
        self._key = key
        self._loaded_payload = entry.payload
        self._data = payload.d
        self._flashes = payload.f  # a fresh list from the decoder, ours to keep
        self._csrf = payload.c
        self._expiry = payload.x
        self._browser_session = payload.b
        self._issued = payload.i
        self._retired = payload.r
        self._user_id = entry.user_id
        # A payload without type tags decodes to plain JSON values only, which the
        # commit's encode need not walk again unless they were set or handed out.
        self._clean_load = not tagged
        self.is_new = False

    # -- the mapping -------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        self.accessed = True
        if not self._loaded:
            self._use()
        value = self._data[key]
        if type(value) not in _IMMUTABLE:
            self._expose(key, value)
        return value

    def _expose(self, key: str, value: Any) -> None:
        if self._exposed_all:
            return
        snapshots = self._snapshots
        if snapshots is None:
            snapshots = self._snapshots = {}
        elif key in snapshots:
            return
        if self.modified or self._entry is None:
            snapshots[key] = b""  # the commit encodes anyway; the key is only marked dirty
            return
        try:
            snapshots[key] = _fingerprint(value)
        except (TypeError, ValueError, OverflowError, RecursionError):
            self._exposed_all = True

    def _dirty_keys(self) -> set[str] | None:
        """Keys whose values may need type tags at commit; None means all of them."""
        if not self._clean_load or self._exposed_all or self._entry is None:
            return None
        keys = {key for op, key in self._log if op == "set"}
        if self._snapshots:
            keys.update(self._snapshots)
        return keys  # type: ignore[return-value]

    def _changed(self) -> bool:
        """Whether the data may differ from what was loaded (exact for in-place changes)."""
        if self.modified or self._exposed_all:
            return True
        snapshots = self._snapshots
        if snapshots:
            data = self._data
            try:
                for key, before in snapshots.items():
                    if key not in data or _fingerprint(data[key]) != before:
                        return True
            except (TypeError, ValueError, OverflowError, RecursionError):
                return True
        return False

    def __setitem__(self, key: str, value: Any) -> None:
        self.accessed = True
        if not self._loaded:
            self._use()
        if self._frozen and self._key is None:
            self._check_not_frozen("storing data in a session that has no record yet")
        if type(key) is not str:
            raise TypeError(f"session keys must be str, not {type(key).__name__}")
        if type(value) not in JSON_AS_IS:  # check_value would return at once
            check_value(key, value)
        self._data[key] = value
        self._log.append(("set", key))
        self.modified = True

    def __delitem__(self, key: str) -> None:
        self._use()
        del self._data[key]
        self._log.append(("delete", key))
        self.modified = True

    def __iter__(self) -> Iterator[str]:
        self._use()
        return iter(list(self._data))

    def __len__(self) -> int:
        self._use()
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        self.accessed = True
        if not self._loaded:
            self._use()
        return key in self._data

    def get(self, key: str, default: Any = None) -> Any:
        self.accessed = True
        if not self._loaded:
            self._use()
        value = self._data.get(key, _MISSING)
        if value is _MISSING:
            return default
        if type(value) not in _IMMUTABLE:
            self._expose(key, value)
        return value

    def setdefault(self, key: str, default: Any = None) -> Any:
        self._use()
        if key in self._data:
            return self[key]
        self[key] = default
        return default

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        self._use()
        if key in self._data:
            value = self._data.pop(key)
            self._log.append(("delete", key))
            self.modified = True
            return value
        if default is _MISSING:
            raise KeyError(key)
        return default

    def clear(self) -> None:
        """Remove all data (the user binding, flashes and CSRF token stay)."""
        self._use()
        self._data.clear()
        self._log.append(("clear", None))
        self._cleared = True
        self.modified = True

    def to_dict(self) -> dict[str, Any]:
        """A shallow copy of the data, e.g. for ``json.dumps``."""
        self._use()
        self._exposed_all = True
        return dict(self._data)

    @property
    def changes(self) -> tuple[tuple[str, str | None], ...]:
        """This request's change log: ``("set", key)``, ``("delete", key)``, ``("clear", None)``."""
        return tuple(self._log)

    # -- identity ----------------------------------------------------------------

    @property
    def user_id(self) -> str | None:
        """The user bound by :meth:`login`, or None."""
        self._use()
        return self._user_id

    @property
    def handle(self) -> str | None:
        """The short public handle of the stored session (a hash prefix), None until stored."""
        from .ids import handle_of

        return handle_of(self._key) if self._key else None

    def login(self, user_id: str | int) -> None:
        """Bind ``user_id``, keep the data, and rotate the id and the CSRF token.

        The old record is deleted when the response starts, so a session id
        an attacker planted before login is worthless after it.
        """
        if isinstance(user_id, bool) or not isinstance(user_id, str | int) or user_id == "":
            raise TypeError("login() takes a non-empty str or int user id")
        self._use()
        self._check_not_frozen("login()")
        if self._admit is not None and str(user_id) != self._user_id:
            self._admit(str(user_id), self._key)
        self._user_id = str(user_id)
        self._csrf = secrets.token_urlsafe(32)
        self._rotate = True
        self._login = True
        self.modified = True

    def logout(self) -> None:
        """Destroy the session: the stored record is deleted and all state is dropped.

        Anything set afterwards in the same request (e.g. a "signed out" flash)
        goes into a brand-new anonymous session.
        """
        self._use()
        self._check_not_frozen("logout()")
        self._forget_record()
        self._data.clear()  # in place: integrations may share this dict with the framework
        self._flashes = []
        self._flashes_consumed = []
        self._flashes_added = []
        self._csrf = None
        self._user_id = None
        self._expiry = None
        self._browser_session = False
        self._log.append(("clear", None))
        self._cleared = True
        self.modified = True

    def regenerate(self) -> None:
        """Give the session a new id, keeping everything else (use on privilege change)."""
        self._use()
        self._check_not_frozen("regenerate()")
        self._rotate = True
        self.modified = True

    def _forget_record(self) -> None:
        if self._key is not None:
            self._destroyed_keys.append(self._key)
            self._event("destroy", self._key, None, self._user_id)
        self._key = None
        self._entry = None
        self._loaded_payload = None
        self._rotate = False
        self._login = False
        self.is_new = True

    def _event(self, kind: str, key: str, previous: str | None, user_id: str | None) -> None:
        """Note a lifecycle event; the middleware reports it to hooks after a good commit."""
        if key:
            if self._events is None:
                self._events = []
            self._events.append((kind, key, previous, user_id))

    def _check_not_frozen(self, what: str) -> None:
        if self._frozen:
            raise SessionStateError(
                f"{what} is not possible after the websocket handshake was accepted: the new "
                "session cookie can no longer reach the browser. Call it before accept()."
            )

    # -- expiry ------------------------------------------------------------------

    def set_expiry(self, seconds: float | timedelta | None) -> None:
        """Set this session's idle timeout (remember-me), or None for a browser-session cookie.

        The configured absolute timeout still applies.
        """
        self._use()
        if seconds is None:
            self._expiry = None
            self._browser_session = True
        else:
            self._expiry = to_seconds(seconds, "set_expiry()")
            self._browser_session = False
        self.modified = True

    @property
    def expiry(self) -> float | None:
        """The per-session idle timeout set with :meth:`set_expiry`, in seconds."""
        self._use()
        return self._expiry

    @property
    def browser_session(self) -> bool:
        """True when the cookie is a browser-session cookie (no Max-Age)."""
        self._use()
        return self._browser_session

    @property
    def created(self) -> float | None:
        """When the stored session was created (epoch seconds), None when new."""
        self._use()
        return self._entry.created if self._entry is not None else None

    @property
    def last_seen(self) -> float | None:
        self._use()
        return self._entry.last_seen if self._entry is not None else None

    @property
    def expires(self) -> float | None:
        """When the stored session expires if unused (epoch seconds), None when new."""
        self._use()
        return self._entry.expires if self._entry is not None else None

    # -- flashes -------------------------------------------------------------------

    def flash(self, message: Any, category: str = "message") -> None:
        """Queue a message for the next page the user sees."""
        self._use()
        if type(category) is not str:
            # The payload format stores [str, message]; anything else would not load again.
            raise TypeError(f"flash category must be str, not {type(category).__name__}")
        check_value("_flashes", message)
        self._flashes.append((category, message))
        self._flashes_added.append((category, message))
        self.modified = True

    def peek_flashes(self, category: str | None = None) -> list[tuple[str, Any]]:
        """The queued ``(category, message)`` pairs, left in place."""
        self._use()
        if category is None:
            return list(self._flashes)
        return [f for f in self._flashes if f[0] == category]

    def pop_flashes(self, category: str | None = None) -> list[tuple[str, Any]]:
        """The queued ``(category, message)`` pairs, removed from the session."""
        self._use()
        if category is None:
            taken, kept = self._flashes, []
        else:
            taken = [f for f in self._flashes if f[0] == category]
            kept = [f for f in self._flashes if f[0] != category]
        if taken:
            self._flashes_consumed.extend(taken)
            self._flashes = kept
            self.modified = True
        return taken

    # -- CSRF ----------------------------------------------------------------------

    def csrf_token(self) -> str:
        """The session's CSRF token, created on first use; put it in forms."""
        self._use()
        if self._csrf is None:
            self._csrf = secrets.token_urlsafe(32)
            self.modified = True
        return self._csrf

    def check_csrf(self, token: str | bytes | None) -> bool:
        """True when ``token`` is this session's CSRF token (constant-time comparison)."""
        self._use()
        expected = self._csrf
        if expected is None or not token or not isinstance(token, str | bytes):
            return False
        if isinstance(token, str):
            try:
                token = token.encode("ascii")
            except UnicodeEncodeError:
                return False
        return hmac.compare_digest(expected.encode("ascii"), token)

    # -- state the flow reads ----------------------------------------------------------

    def _is_empty(self) -> bool:
        return not self._data and not self._user_id and self._csrf is None and not self._flashes
