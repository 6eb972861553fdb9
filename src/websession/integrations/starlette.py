"""Starlette: a drop-in ``SessionMiddleware`` with server-side stores.

Swap the import and keep everything else::

    from websession.integrations.starlette import SessionMiddleware

    app = Starlette(middleware=[Middleware(SessionMiddleware, secret_key=SECRET)])

It takes Starlette's arguments (``secret_key``, ``session_cookie``, ``max_age``,
``path``, ``same_site``, ``https_only``, ``domain``, ``partitioned``) and behaves
as Starlette's middleware does: the same cookie attributes, written the same
way, ``Vary: Cookie`` when the session was accessed, a ``Set-Cookie`` only when
the session was modified, and a removal cookie when a session becomes empty.
Without ``store=`` the session is a signed cookie (websession's
:class:`~websession.stores.CookieStore`, keyed by ``secret_key``); with
``store=`` (a store or a URL; network stores in their async form) the cookie
carries only an id and the data stays on the server. ``legacy_cookie_cutoff``
accepts cookies written by Starlette's own middleware until that date and
carries their data into a websession session.

Design: two objects, one set of data
------------------------------------
``request.session`` must be a ``dict``: Starlette's ``Request.session`` calls
``mark_accessed()`` on it and apps hand it to ``json.dumps``, ``dict(...)`` and
``**``, which read a dict's storage at C level and skip any Python override.
So the data lives in :class:`Session` itself, a ``dict`` subclass with
Starlette's constructor, ``accessed``/``modified`` flags and methods; and the
websession :class:`websession.Session` of the request (the core: change log,
expiry, flashes, CSRF, login) keeps *that same dict* as its data.

- Loading is lazy: ``mark_accessed()`` (so ``request.session``) or any read
  or write of the dict loads the core session, whose data is copied into the
  dict once. A network store loads before the app runs, when the request
  carries a cookie, as with :mod:`websession.asgi`.
- Writes through the dict (``session["k"] = v``, ``update``, ``|=``, ``pop``...)
  mark Starlette's flags and append to the core's change log, which is what
  conflict replay re-applies. Writes through the core (``get_session()``)
  reach the dict as well, because the core writes into it.
- Values handed out by reads are recorded like the core's own reads, so an
  in-place change (``request.session["cart"].append(x)``) is saved too; only
  reads at C level from outside (``dict.get(session, k)``) go unnoticed.
- At commit the core encodes a plain copy of the dict (the codec accepts exact
  dicts only), the flow decides what reaches the store, and the cookie is
  written in Starlette's format.

Differences from Starlette, on purpose: a 5xx response saves nothing; the
secret must be at least 16 bytes; session keys must be ``str`` and values
must be storable (checked when set, raising :class:`~websession.SessionError`).
"""

from __future__ import annotations

import binascii
import dataclasses
import json
import logging
import math
import time
from base64 import b64decode
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack, cast

import itsdangerous
from starlette.datastructures import MutableHeaders, Secret
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._driver import Driver
from ..asgi import UNAVAILABLE_BODY, UNAVAILABLE_HEADERS, _header
from ..codecs import check_value
from ..config import Duration
from ..cookies import get_cookie
from ..errors import SessionConfigError, StoreUnavailable
from ..session import _IMMUTABLE
from ..session import Session as CoreSession
from ..stores.cookie import CookieStore

if TYPE_CHECKING:
    from _collections_abc import dict_items, dict_keys, dict_values

    from ..codecs import Payload
    from ..stores.base import Entry

__all__ = ["ExtraFields", "Session", "SessionMiddleware", "get_session"]

log = logging.getLogger("websession")
security_log = logging.getLogger("websession.security")

DEFAULT_MAX_AGE = 14 * 24 * 60 * 60
_EPOCH = "expires=Thu, 01 Jan 1970 00:00:00 GMT; "
# Keys the Starlette arguments already set; giving them again would be ambiguous.
_OWN = frozenset(
    {
        "cookie_name",
        "cookie_path",
        "cookie_domain",
        "cookie_secure",
        "cookie_httponly",
        "cookie_samesite",
        "cookie_partitioned",
        "transport",
        "header_name",
        "store",
    }
)


class ExtraFields(TypedDict, total=False):
    """websession settings beyond Starlette's arguments (see :class:`~websession.SessionConfig`).

    ``idle_timeout`` is only for ``max_age=None``, where it bounds how long a
    record lives without a change (``max_age`` is the idle timeout otherwise).
    """

    idle_timeout: Duration
    absolute_timeout: Duration | None
    touch_interval: Duration
    trusted_proxies: tuple[str, ...] | list[str] | str
    max_payload_bytes: int
    conflict_retries: int
    on_store_error: Literal["raise", "fail_open"]
    legacy_session_cutoff: datetime | None


class Session(dict[str, Any]):
    """``request.session``: a ``dict`` with Starlette's ``accessed``/``modified`` flags.

    Built like a dict (``Session({"a": 1})``) it is a plain Starlette session.
    Under :class:`SessionMiddleware` it is also the data of the request's
    websession session (see :func:`get_session`), loaded on first use.
    """

    accessed: bool = False
    modified: bool = False
    _core: _LinkedSession | None = None
    _pending: bool = False

    # -- Starlette's API -------------------------------------------------------------

    def mark_accessed(self) -> None:
        self.accessed = True
        if self._pending:
            self._load()

    def mark_modified(self) -> None:
        self.accessed = True
        self.modified = True

    # -- bookkeeping -------------------------------------------------------------------

    def _load(self) -> None:
        self._pending = False
        core = self._core
        if core is not None:
            core._use()  # runs the loader; _LinkedSession._adopt fills this dict

    def _record(self, op: str, key: str | None) -> None:
        """Log a change with the core, so a conflicting save replays it."""
        core = self._core
        if core is not None:
            core.accessed = core.modified = True
            core._log.append((op, key))
            if op == "clear":
                core._cleared = True

    def _check(self, key: Any, value: Any) -> None:
        core = self._core
        if core is None:
            return
        if type(key) is not str:
            raise TypeError(f"session keys must be str, not {type(key).__name__}")
        if core._frozen and core._key is None:
            core._check_not_frozen("storing data in a session that has no record yet")
        check_value(key, value)

    def _handed_out(self, key: str, value: Any) -> None:
        core = self._core
        if core is not None and type(value) not in _IMMUTABLE:
            core._expose(key, value)

    def _all_handed_out(self) -> None:
        core = self._core
        if core is not None and not core._exposed_all:
            for value in dict.values(self):
                if type(value) not in _IMMUTABLE:
                    core._exposed_all = True
                    return

    # -- writes ----------------------------------------------------------------------------

    def __setitem__(self, key: str, value: Any) -> None:
        if self._pending:
            self._load()
        self._check(key, value)
        self.mark_modified()
        dict.__setitem__(self, key, value)
        self._record("set", key)

    def __delitem__(self, key: str) -> None:
        if self._pending:
            self._load()
        self.mark_modified()
        dict.__delitem__(self, key)
        self._record("delete", key)

    def clear(self) -> None:
        if self._pending:
            self._load()
        self.mark_modified()
        dict.clear(self)
        self._record("clear", None)

    def pop(self, key: str, *default: Any) -> Any:
        if self._pending:
            self._load()
        if dict.__contains__(self, key):
            self.mark_modified()
            self._record("delete", key)
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[str, Any]:
        if self._pending:
            self._load()
        item = dict.popitem(self)
        self.mark_modified()
        self._record("delete", item[0])
        return item

    def setdefault(self, key: str, default: Any = None) -> Any:
        if self._pending:
            self._load()
        if dict.__contains__(self, key):
            return self[key]
        self[key] = default
        return default

    def update(self, *args: Any, **kwargs: Any) -> None:
        if self._pending:
            self._load()
        self.mark_modified()
        if self._core is None:
            dict.update(self, *args, **kwargs)
            return
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other: Any, /) -> Session:  # type: ignore[override]
        self.update(other)
        return self

    # -- reads (each one loads first: code may read scope["session"] directly) ------------

    def __getitem__(self, key: str) -> Any:
        if self._pending:
            self._load()
        value = dict.__getitem__(self, key)
        self._handed_out(key, value)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        if self._pending:
            self._load()
        if not dict.__contains__(self, key):
            return default
        value = dict.__getitem__(self, key)
        self._handed_out(key, value)
        return value

    def __contains__(self, key: object) -> bool:
        if self._pending:
            self._load()
        return dict.__contains__(self, key)

    def __iter__(self) -> Iterator[str]:
        if self._pending:
            self._load()
        return dict.__iter__(self)

    def __reversed__(self) -> Iterator[str]:
        if self._pending:
            self._load()
        return dict.__reversed__(self)

    def __len__(self) -> int:
        if self._pending:
            self._load()
        return dict.__len__(self)

    def keys(self) -> dict_keys[str, Any]:
        if self._pending:
            self._load()
        return dict.keys(self)

    def values(self) -> dict_values[str, Any]:
        if self._pending:
            self._load()
        self._all_handed_out()
        return dict.values(self)

    def items(self) -> dict_items[str, Any]:
        if self._pending:
            self._load()
        self._all_handed_out()
        return dict.items(self)

    def copy(self) -> dict[str, Any]:
        if self._pending:
            self._load()
        self._all_handed_out()
        return dict.copy(self)

    def __or__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        if self._pending:
            self._load()
        self._all_handed_out()
        return dict.__or__(self, other)

    def __ror__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        if self._pending:
            self._load()
        self._all_handed_out()
        return dict.__ror__(self, other)

    def __eq__(self, other: object) -> bool:
        if self._pending:
            self._load()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None

    def __repr__(self) -> str:
        if self._pending:
            self._load()
        return dict.__repr__(self)

    def __reduce__(self) -> tuple[Any, ...]:
        # A copy or pickle is detached data, never a second handle on the request's session.
        return (type(self), (dict.copy(self),))


class _LinkedSession(CoreSession):
    """The core session of a request, whose data is the request's :class:`Session` dict."""

    __slots__ = ("_legacy", "_view")

    def __init__(
        self, view: Session, token: str | None, loader: Callable[[CoreSession], None] | None
    ) -> None:
        super().__init__(loader=loader)
        self._view = view
        self._data = view
        self._token = token
        self._legacy = False

    def _adopt(self, entry: Entry, payload: Payload, key: str, tagged: bool) -> None:
        super()._adopt(entry, payload, key, tagged)
        view = self._view
        dict.clear(view)
        dict.update(view, self._data)
        self._data = view

    def logout(self) -> None:
        super().logout()  # replaces the data dict; point it back at the view
        view = self._view
        dict.clear(view)
        view.mark_modified()
        self._data = view


def get_session(connection: HTTPConnection) -> CoreSession:
    """The request's websession :class:`~websession.Session` (``login``, ``flash``, CSRF...).

    It shares its data with ``request.session``. Works for requests and
    websockets; raises ``RuntimeError`` when this module's
    :class:`SessionMiddleware` is not installed.
    """
    view = connection.scope.get("session")
    if not isinstance(view, Session) or view._core is None:
        raise RuntimeError(
            "websession.integrations.starlette.SessionMiddleware must be installed "
            "to use get_session()"
        )
    view.mark_accessed()
    return view._core


class _LegacySigner(itsdangerous.TimestampSigner):
    """Starlette's cookie signer, on the middleware's clock."""

    def __init__(self, secret_key: str, clock: Callable[[], float]) -> None:
        super().__init__(secret_key)
        self._clock = clock

    def get_timestamp(self) -> int:
        return int(self._clock())


class SessionMiddleware:
    """Starlette's ``SessionMiddleware``, with websession underneath.

    Starlette's arguments mean what they mean there: ``max_age`` (seconds,
    default 14 days; None for a browser-session cookie) is the cookie's
    ``Max-Age`` and the session's idle timeout, renewed whenever the session
    is modified; ``https_only`` adds ``Secure``. ``store`` keeps the data on
    the server (e.g. ``"sqlite:///sessions.db"``, ``"redis://..."``).
    ``legacy_cookie_cutoff`` (an aware datetime) accepts cookies written by
    Starlette's own middleware until then. ``extra`` settings are listed in
    :class:`ExtraFields`.
    """

    def __init__(
        self,
        app: ASGIApp,
        secret_key: str | Secret,
        session_cookie: str = "session",
        max_age: int | None = DEFAULT_MAX_AGE,
        path: str = "/",
        same_site: Literal["lax", "strict", "none"] = "lax",
        https_only: bool = False,
        domain: str | None = None,
        partitioned: bool = False,
        *,
        store: Any = None,
        legacy_cookie_cutoff: datetime | None = None,
        clock: Callable[[], float] | None = None,
        **extra: Unpack[ExtraFields],
    ) -> None:
        self.app = app
        secret = str(secret_key)
        if not secret:
            raise SessionConfigError("secret_key must not be empty")
        self.session_cookie = session_cookie
        self.max_age = max_age
        self.path = path
        flags = f"httponly; samesite={same_site}"
        if https_only:
            flags += "; secure"
        if domain is not None:
            flags += f"; domain={domain}"
        if partitioned:
            flags += "; partitioned"
        self._flags = flags
        # Starlette accepts max_age <= 0: every cookie is already expired, nothing is kept.
        self._keeps_nothing = max_age is not None and max_age <= 0

        if not cast(dict[str, Any], extra).get("autoload", True):
            raise SessionConfigError(
                "autoload=False: this drop-in's request.session is a dict that Starlette code "
                "reads without awaiting, so it loads before the app runs; use "
                "websession.asgi.SessionMiddleware for a session loaded by "
                "`await request.session.load()`"
            )
        clashing = sorted(_OWN & set(extra))
        if clashing:
            raise SessionConfigError(
                f"{', '.join(clashing)}: set these with Starlette's arguments "
                "(session_cookie, path, domain, same_site, https_only, partitioned)"
            )
        fields: dict[str, Any] = {
            "cookie_name": session_cookie,
            "cookie_path": path,
            "cookie_domain": domain,
            "cookie_samesite": same_site,
            # The cookie is rendered here, as Starlette renders it; "auto" only keeps the
            # config valid for same_site="none" and partitioned without https_only.
            "cookie_secure": True if https_only else "auto",
            "cookie_partitioned": partitioned,
            "absolute_timeout": None,
        }
        if max_age is not None and not self._keeps_nothing:
            if "idle_timeout" in extra:
                raise SessionConfigError(
                    "idle_timeout: max_age is the idle timeout; give idle_timeout only "
                    "with max_age=None"
                )
            fields["idle_timeout"] = max_age
        else:
            fields["idle_timeout"] = extra.get("idle_timeout", DEFAULT_MAX_AGE)
        fields.update(extra)
        # Starlette renews the cookie only when the session is modified; a touch on a
        # read-only request would renew the record but not the cookie.
        fields.setdefault("touch_interval", fields["idle_timeout"])

        now = clock or time.time
        if store is None:
            store = CookieStore([secret], clock=now)
        self._driver = driver = Driver(store, None, fields, asynchronous=True, clock=clock)
        self.config = driver.config
        self.store = driver.store
        self._inline = driver.inline
        self._clock = now

        self._legacy_until: float | None = None
        if legacy_cookie_cutoff is not None:
            if not isinstance(legacy_cookie_cutoff, datetime):
                raise SessionConfigError("legacy_cookie_cutoff must be a datetime")
            if legacy_cookie_cutoff.tzinfo is None:
                raise SessionConfigError(
                    "legacy_cookie_cutoff must be timezone-aware, "
                    "e.g. datetime(2026, 1, 1, tzinfo=timezone.utc)"
                )
            self._legacy_until = legacy_cookie_cutoff.timestamp()
            self._legacy_signer = _LegacySigner(secret, now)

    def __repr__(self) -> str:
        return f"SessionMiddleware(app={self.app!r}, store={self.store!r})"

    # -- the request -------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        if self._keeps_nothing:
            await self._expired_at_once(scope, receive, send)
            return
        cookie = _header(scope, b"cookie")
        token = (get_cookie(cookie, self.session_cookie) or None) if cookie else None

        view = Session()
        core: _LinkedSession
        if self._inline:
            core = _LinkedSession(view, token, self._load)
            view._pending = True
        else:
            core = _LinkedSession(view, token, None)
            try:
                await self._aload(core)
            except StoreUnavailable as exc:
                if kind != "http":
                    raise
                log.error("session store unavailable, answering 503: %s", exc)
                await _unavailable(send)
                return
        view._core = core
        scope["session"] = view
        failed = started = False

        async def send_with_session(message: Message) -> None:
            nonlocal failed, started
            kind = message["type"]
            if kind == "http.response.start":
                try:
                    await self._commit(view, core, scope, message, message["status"])
                except StoreUnavailable as exc:
                    log.error("session not saved, answering 503: %s", exc)
                    failed = started = True
                    await _unavailable(send)
                    return
                started = True
            elif kind == "http.response.body":
                if failed:
                    return  # the 503 went out instead of this response
            elif kind == "websocket.accept":
                await self._commit(view, core, scope, message, 200)
                core._frozen = True
            await send(message)

        try:
            await self.app(scope, receive, send_with_session)
        except StoreUnavailable as exc:
            # Raised by the lazy load inside the app; answer for it if nothing went out yet.
            if kind != "http" or started:
                raise
            log.error("session store unavailable, answering 503: %s", exc)
            await _unavailable(send)
            return
        if kind == "websocket" and core._key is not None and (view.accessed or core.accessed):
            # Changes made after the handshake still reach the store; only a new
            # cookie could not reach the browser any more.
            await self._commit(view, core, scope, {"type": "websocket.close"}, 200)

    def _load(self, core: CoreSession) -> None:
        """The lazy loader of inline stores (runs on first touch)."""
        legacy = self._legacy_data(core._token)
        if legacy is not None:
            self._carry(cast(_LinkedSession, core), legacy)
            return
        self._driver.load(core)

    async def _aload(self, core: _LinkedSession) -> None:
        """Load from an async store before the app runs (a sync read cannot await)."""
        legacy = self._legacy_data(core._token)
        if legacy is not None:
            self._carry(core, legacy)
            return
        await self._driver.aload(core)

    # -- Starlette's own cookie, accepted until the cutoff -------------------------------

    def _legacy_data(self, token: str | None) -> dict[str, Any] | None:
        until = self._legacy_until
        # Starlette's cookie is base64 of a JSON object ("eyJ" is '{"'); ids never hold '.'.
        if until is None or token is None or not token.startswith("eyJ") or "." not in token:
            return None
        if self._clock() >= until:
            log.debug("Starlette session cookie ignored: legacy_cookie_cutoff has passed")
            return None
        try:
            raw = self._legacy_signer.unsign(token.encode("ascii"), max_age=self.max_age)
            data = json.loads(b64decode(raw))
        except itsdangerous.BadSignature:
            return None  # expired or not Starlette's; the websession reader rejects it too
        except (UnicodeError, binascii.Error, ValueError) as exc:
            security_log.warning("signed Starlette session cookie is undecodable: %s", exc)
            return None
        if not isinstance(data, dict):
            return None
        return data

    @staticmethod
    def _carry(core: _LinkedSession, data: dict[str, Any]) -> None:
        """Start a new websession session holding a Starlette cookie's data."""
        core._token = None
        core._legacy = True
        core._stale = True  # emptied, the old cookie is removed (as Starlette clears one)
        view = core._view
        for key, value in data.items():
            if type(key) is str:
                dict.__setitem__(view, key, value)
                core._log.append(("set", key))
        core.modified = True

    # -- the response ----------------------------------------------------------------------

    async def _commit(
        self, view: Session, core: _LinkedSession, scope: Scope, message: Message, status: int
    ) -> None:
        if not (view.accessed or core.accessed):
            return
        core.accessed = True  # reads through the dict alone never reach the core
        message.setdefault("headers", [])
        headers = MutableHeaders(scope=message)
        if message["type"] != "websocket.close":
            headers.add_vary_header("Cookie")
        had_data = core._entry is not None or bool(core._destroyed_keys) or core._legacy
        modified = view.modified
        # A websocket commits again after close: only later changes count then.
        view.modified = False
        driver = self._driver
        client = scope.get("client")
        peer = client[0] if client else None
        ip = driver.client_ip(peer, _header(scope, b"x-forwarded-for"))
        user_agent = _header(scope, b"user-agent")
        core._data = dict.copy(view)  # the payload codec takes exact dicts
        try:
            outcome = await driver.aclose(core, status, ip, user_agent)
            if (
                modified
                and outcome.token is None
                and not outcome.clear
                and status < 500
                and core._entry is not None
                and not core._degraded
            ):
                # Starlette re-issues a modified session's cookie with a fresh Max-Age even
                # when the data came out the same; an overdue touch makes the flow renew
                # the record and hand back the cookie.
                core._entry = dataclasses.replace(core._entry, last_seen=-math.inf)
                outcome = await driver.aclose(core, status, ip, user_agent)
        finally:
            core._data = view
        if outcome.token is not None:
            max_age = outcome.max_age
            if self.max_age is None and core._expiry is None:
                max_age = None
            age = f"Max-Age={max_age}; " if max_age is not None else ""
            headers.append(
                "set-cookie",
                f"{self.session_cookie}={outcome.token}; path={self.path}; {age}{self._flags}",
            )
        elif outcome.clear and had_data:
            headers.append(
                "set-cookie", f"{self.session_cookie}=null; path={self.path}; {_EPOCH}{self._flags}"
            )

    async def _expired_at_once(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``max_age <= 0``: Starlette's behaviour, where every cookie arrives expired."""
        view = Session()
        scope["session"] = view

        async def send_expired(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept") and view.accessed:
                message.setdefault("headers", [])
                headers = MutableHeaders(scope=message)
                headers.add_vary_header("Cookie")
                if view.modified and dict.__len__(view):
                    headers.append(
                        "set-cookie",
                        f"{self.session_cookie}=null; path={self.path}; "
                        f"Max-Age={self.max_age}; {self._flags}",
                    )
            await send(message)

        await self.app(scope, receive, send_expired)


async def _unavailable(send: Send) -> None:
    await send({"type": "http.response.start", "status": 503, "headers": UNAVAILABLE_HEADERS})
    await send({"type": "http.response.body", "body": UNAVAILABLE_BODY})
