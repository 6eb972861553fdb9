"""Flask: ``app.session_interface = SessionInterface(...)``.

``flask.session`` stays what Flask taught: a mapping with ``permanent``,
``flash()`` and ``get_flashed_messages()``, ``session_transaction()`` in tests.
Behind it runs the websession core: with ``store=`` a server-side session,
without it a signed cookie keyed by ``app.secret_key`` (a drop-in for Flask's
default). Flask's settings (``SESSION_COOKIE_*``, ``PERMANENT_SESSION_LIFETIME``,
``SESSION_REFRESH_EACH_REQUEST``) are read at an app's first request, and again
whenever they change. Flask's own signed cookie can be carried into the new
session until a cutoff date, so switching logs nobody out. Flask-Login needs
no extra code: its ``login_user()`` binds the user and rotates the id, its
``logout_user()`` unbinds the user and rotates the id again.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import weakref
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Unpack, cast

import flask
from flask.sessions import SessionInterface as _FlaskSessionInterface
from flask.sessions import SessionMixin, session_json_serializer
from itsdangerous import BadData, URLSafeTimedSerializer
from markupsafe import Markup

from .._driver import Driver
from ..codecs import register_type
from ..config import SessionConfig, SessionFields, build_config
from ..cookies import get_cookie
from ..errors import SessionConfigError, SessionStateError, StoreUnavailable, UnserializableValue
from ..identity import SessionInfo, TooManySessions, UserIndexMissing
from ..session import Session
from ..stores.base import default_clock
from ..stores.cookie import CookieStore
from ..urls import store_from_url
from ..wsgi import UNAVAILABLE_BODY, UNAVAILABLE_HEADERS

if TYPE_CHECKING:
    from flask import Flask
    from flask.wrappers import Request, Response

__all__ = ["FlaskSession", "SessionInterface", "current_session", "login", "logout"]

log = logging.getLogger("websession")
security_log = logging.getLogger("websession.security")

# Flask's own cookie sessions round-trip Markup (flash(Markup(...)) is common), so ours do too.
register_type(Markup, "markup", str, Markup)

_FLASHES = "_flashes"
_PERMANENT = "_permanent"
_VIRTUAL = frozenset({_FLASHES, _PERMANENT})
# Where Flask-Login keeps the signed-in user's id: login_user() sets it (with
# "_fresh" and "_id"), logout_user() and strong session protection pop it.
_LOGIN_KEY = "_user_id"
_MISSING: Any = object()
# SESSION_REFRESH_EACH_REQUEST: the smallest interval the config accepts, i.e. every request.
_EVERY_REQUEST = 1e-6
# What Flask's default SecureCookieSessionInterface signs with (flask/sessions.py).
_LEGACY_SALT = "cookie-session"
_STATES_PER_APP = 8


def _flash_pair(item: Any) -> tuple[str, Any]:
    try:
        category, message = item
    except (TypeError, ValueError):
        raise TypeError(
            f"session['_flashes'] holds (category, message) pairs, not {item!r}"
        ) from None
    return category, message


class _FlashList(list[tuple[str, Any]]):
    """``session["_flashes"]`` as Flask code sees it: appending queues a real flash.

    Old extensions still write ``session.setdefault("_flashes", []).append(...)``
    and never assign the list back; this keeps that working.
    """

    __slots__ = ("_session",)

    def __init__(self, session: FlaskSession, items: Iterable[tuple[str, Any]]) -> None:
        super().__init__(items)
        self._session = session

    def append(self, item: tuple[str, Any], /) -> None:
        category, message = _flash_pair(item)
        self._session.flash(message, category)
        super().append((category, message))


class FlaskSession(Session, SessionMixin):
    """``flask.session`` under :class:`SessionInterface`: the core session with Flask's face.

    It is a websession :class:`~websession.Session` (``login()``, ``logout()``,
    ``csrf_token()``, ``set_expiry()``...) and a Flask ``SessionMixin``.
    ``session["_flashes"]``, which ``flask.flash`` and ``get_flashed_messages``
    use, is the core flash queue, so flashes from concurrent requests merge;
    ``permanent`` is the opposite of a browser-session cookie.
    ``clear()`` behaves as Flask's does: data, pending flashes and the
    ``permanent`` flag go; the CSRF token stays, and so does a user bound with
    :meth:`login` (``logout()`` drops those too).

    ``session["_user_id"]``, Flask-Login's key, follows the bound user: setting
    it to another user is a :meth:`login` (user bound, id and CSRF token
    rotated, data kept), removing it unbinds the user and rotates the id.
    """

    __slots__ = ("_environ", "_state")

    def __init__(self, state: _AppState, environ: dict[str, Any]) -> None:
        super().__init__(loader=state.load)
        self._state = state
        self._environ = environ

    # -- what SessionMixin promises ------------------------------------------------

    @property
    def permanent(self) -> bool:
        """True when the cookie outlives the browser (Max-Age: ``PERMANENT_SESSION_LIFETIME``)."""
        return not self.browser_session

    @permanent.setter
    def permanent(self, value: bool) -> None:
        self._use()
        if bool(value) == (not self._browser_session):
            return
        if value:
            self._browser_session = False
            self.modified = True
        else:
            self.set_expiry(None)

    @property
    def new(self) -> bool:
        """True until the session exists in the store."""
        self._use()
        return self.is_new

    @new.setter
    def new(self, value: bool) -> None:
        raise AttributeError("session.new is decided by the store and cannot be set")

    # -- the mapping, with Flask's two special keys -----------------------------------

    def __getitem__(self, key: str) -> Any:
        if key in _VIRTUAL:
            value = self._virtual(key)
            if value is _MISSING:
                raise KeyError(key)
            return value
        return Session.__getitem__(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        if key in _VIRTUAL:
            value = self._virtual(key)
            return default if value is _MISSING else value
        return Session.get(self, key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        if key == _FLASHES:
            self._set_flashes(value)
        elif key == _PERMANENT:
            self.permanent = bool(value)
        elif key == _LOGIN_KEY:
            self._follow_login(value)
            Session.__setitem__(self, key, value)
        else:
            Session.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        if key in _VIRTUAL:
            self.pop(key)
        elif key == _LOGIN_KEY:
            value = Session.__getitem__(self, key)
            Session.__delitem__(self, key)
            self._follow_logout(value)
        else:
            Session.__delitem__(self, key)

    def __contains__(self, key: object) -> bool:
        if key in _VIRTUAL:
            return self._virtual(key) is not _MISSING
        return Session.__contains__(self, key)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key == _FLASHES:
            if default:
                self._set_flashes([*self.peek_flashes(), *default])
            return _FlashList(self, self.peek_flashes())
        if key == _PERMANENT:
            if not self.permanent:
                self.permanent = bool(default)
            return self.permanent
        return Session.setdefault(self, key, default)

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        if key in _VIRTUAL:
            value = self._virtual(key)
            if key == _FLASHES:
                self.pop_flashes()
            else:
                self.permanent = False
            if value is _MISSING:
                if default is _MISSING:
                    raise KeyError(key)
                return default
            return list(value) if key == _FLASHES else value
        if key == _LOGIN_KEY and Session.__contains__(self, key):
            value = Session.pop(self, key)
            self._follow_logout(value)
            return value
        return Session.pop(self, key, default)

    def clear(self) -> None:
        """Remove the data, pending flashes and the ``permanent`` flag, as Flask's ``clear()``.

        Clearing away Flask-Login's ``_user_id`` signs that user out, as ``logout_user()``.
        """
        signed_in = Session.get(self, _LOGIN_KEY)
        Session.clear(self)
        self.pop_flashes()
        self.permanent = False
        if signed_in is not None:
            self._follow_logout(signed_in)

    def logout(self) -> None:
        Session.logout(self)
        # What follows in this request lands in a fresh session, non-permanent as in Flask.
        self._browser_session = True

    def _follow_login(self, value: Any) -> None:
        """``session["_user_id"] = value`` (Flask-Login's login_user): bind, as :meth:`login`."""
        if value is None:
            self._follow_logout(Session.get(self, _LOGIN_KEY))
            return
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            raise TypeError(
                f"session[{_LOGIN_KEY!r}] (Flask-Login's user id) must be a non-empty str or "
                f"int, not {value!r}: get_id() should return a str"
            )
        # The same user again (login() already ran, or a repeated login_user) keeps the id.
        if str(value) != self.user_id:
            self.login(value)

    def _follow_logout(self, value: Any) -> None:
        """Flask-Login's ``_user_id`` went (logout_user): unbind, rotate the id and CSRF token.

        The data stays, as Flask-Login leaves it; ``logout()`` is the way to destroy it all.
        """
        if value is None:
            return
        self._user_id = None
        if self._csrf is not None:
            self._csrf = secrets.token_urlsafe(32)
        self.regenerate()

    def _virtual(self, key: str) -> Any:
        if key == _FLASHES:
            flashes = self.peek_flashes()
            return _FlashList(self, flashes) if flashes else _MISSING
        return True if self.permanent else _MISSING

    def _set_flashes(self, value: Any) -> None:
        wanted = [_flash_pair(item) for item in value]
        current = self.peek_flashes()
        if wanted[: len(current)] != current:
            # Not an append to what is queued: replace the queue.
            self.pop_flashes()
            current = []
        for category, message in wanted[len(current) :]:
            self.flash(message, category)


class _AppState:
    """One app's drivers for one snapshot of its Flask settings."""

    __slots__ = ("driver", "header_key", "legacy", "legacy_max_age", "refresh_driver")

    def __init__(
        self,
        driver: Driver,
        refresh_driver: Driver | None,
        legacy: URLSafeTimedSerializer | None,
        legacy_max_age: int,
    ) -> None:
        self.driver = driver
        #: Used for permanent sessions when SESSION_REFRESH_EACH_REQUEST is on.
        self.refresh_driver = refresh_driver
        self.legacy = legacy
        self.legacy_max_age = legacy_max_age
        self.header_key = "HTTP_" + driver.header_name.upper().replace("-", "_")

    def load(self, session: Session) -> None:
        self.driver.load(session)
        if session._entry is None:
            # Flask's sessions are browser-session cookies until made permanent.
            session._browser_session = True


def _looks_like_flask(token: str) -> bool:
    """Flask's cookie is ``payload.timestamp.signature``; ours names an 8-hex-digit key id."""
    parts = token.split(".")
    if len(parts) < 3:
        return False
    middle = parts[-2]
    return not (len(middle) == 8 and all(c in "0123456789abcdef" for c in middle))


class SessionInterface(_FlaskSessionInterface):
    """websession sessions for Flask: ``app.session_interface = SessionInterface(...)``.

    ``store`` is a store object or URL for server-side sessions (a sync store:
    Flask is WSGI); without it (and without ``config.store``) sessions live in
    a signed cookie keyed by ``app.secret_key`` plus ``SECRET_KEY_FALLBACKS``,
    and an app without a secret key gets Flask's null session. ``config`` is a
    :class:`~websession.SessionConfig`; keyword arguments override its fields.

    Flask's settings win over ``config``, keyword arguments win over both; a
    ``SESSION_COOKIE_*`` left at Flask's default keeps websession's (safer)
    value. ``PERMANENT_SESSION_LIFETIME`` is the idle timeout and a permanent
    session's ``Max-Age``; the absolute timeout is raised to it if shorter.
    ``SESSION_REFRESH_EACH_REQUEST`` refreshes permanent sessions on every
    request that uses them (``touch_interval=`` throttles that; off, activity
    alone never extends a session).

    ``legacy_cookie_cutoff`` (an aware datetime): until then a request that
    carries Flask's own signed session cookie gets its contents carried into a
    new websession session. The interface may be shared by several apps.

    With a server store, :meth:`sessions_for`, :meth:`revoke` and
    :meth:`revoke_user` list and end a user's sessions ("your devices").
    """

    def __init__(
        self,
        store: Any = None,
        config: SessionConfig | None = None,
        *,
        legacy_cookie_cutoff: datetime | None = None,
        clock: Callable[[], float] | None = None,
        **fields: Unpack[SessionFields],
    ) -> None:
        if config is not None and not isinstance(config, SessionConfig):
            raise SessionConfigError(
                f"config must be a websession.SessionConfig, not {type(config).__name__}"
            )
        probe = build_config(config, fields)  # unknown or invalid fields fail here, not per request
        if store is None:
            store = probe.store
        if isinstance(store, str):
            store = store_from_url(store)
        # Refuses async stores now; and lists or revokes a user's sessions, which needs
        # no Flask settings.
        self._users = (
            None if store is None else Driver(store, probe, {}, asynchronous=False, clock=clock)
        )
        if legacy_cookie_cutoff is not None and (
            not isinstance(legacy_cookie_cutoff, datetime)
            or legacy_cookie_cutoff.utcoffset() is None
        ):
            raise SessionConfigError(
                "legacy_cookie_cutoff must be a timezone-aware datetime, "
                "e.g. datetime(2026, 1, 1, tzinfo=UTC)"
            )
        self.store = store
        self.config = config
        self.legacy_cookie_cutoff = legacy_cookie_cutoff
        self._fields: dict[str, Any] = dict(fields)
        self._clock = clock
        self._now: Callable[[], float] = clock or time.time
        self._states: weakref.WeakKeyDictionary[Flask, dict[tuple[Any, ...], _AppState | None]]
        self._states = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        kind = "signed cookie" if self.store is None else repr(self.store)
        return f"SessionInterface({kind})"

    # -- Flask's hooks ----------------------------------------------------------------

    def open_session(self, app: Flask, request: Request) -> FlaskSession | None:
        state = self._state(app)
        if state is None:
            return None  # cookie sessions without app.secret_key: Flask's null session
        driver = state.driver
        environ = request.environ
        if driver.cookie_transport:
            token = get_cookie(environ.get("HTTP_COOKIE"), driver.cookie_name) or None
        else:
            token = environ.get(state.header_key) or None
        session = FlaskSession(state, environ)
        session._token = token
        driver.prepare(session)
        if token is not None and state.legacy is not None and _looks_like_flask(token):
            self._carry_legacy(session, state, token)
        return session

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, FlaskSession):
            return
        state = session._state
        driver = state.driver
        if state.refresh_driver is not None and session._loaded and not session._browser_session:
            driver = state.refresh_driver
        environ = session._environ
        peer = environ.get("REMOTE_ADDR")
        try:
            outcome = driver.close(
                session,
                response.status_code,
                driver.client_ip(peer, environ.get("HTTP_X_FORWARDED_FOR")),
                environ.get("HTTP_USER_AGENT"),
            )
        except StoreUnavailable as exc:
            log.error("session not saved, answering 503: %s", exc)
            _unavailable(response)
            return
        if session.accessed:
            response.vary.add("Cookie" if driver.cookie_transport else driver.header_name)
        if outcome.token is not None or outcome.clear:
            secure = driver.secure(
                environ.get("wsgi.url_scheme", "http"), peer, environ.get("HTTP_X_FORWARDED_PROTO")
            )
            for name, value in driver.response_headers(outcome, secure):
                if driver.cookie_transport:
                    response.headers.add(name, value)
                else:
                    response.headers[name] = value

    # -- a user's sessions ("your devices", "sign out everywhere else") ---------------------

    def sessions_for(self, user_id: str, current: Session | None = None) -> list[SessionInfo]:
        """The live sessions of ``user_id``, most recently seen first; ``current`` (e.g.
        ``flask.session``) is marked."""
        return self._index().sessions_for(user_id, _unproxy(current))

    def revoke(self, user_id: str, handle: str) -> bool:
        """Sign out one of ``user_id``'s sessions, named by its handle."""
        return self._index().revoke(user_id, handle)

    def revoke_user(self, user_id: str, keep: Session | Iterable[str] | None = None) -> int:
        """Sign out all of ``user_id``'s sessions but ``keep`` (``flask.session``, or
        handles); returns how many went."""
        return self._index().revoke_user(user_id, _unproxy(keep))

    def _index(self) -> Driver:
        if self._users is None:
            raise UserIndexMissing(
                "signed-cookie sessions live in the browser and keep no per-user index; "
                "give SessionInterface a server store to list or revoke a user's sessions"
            )
        return self._users

    # -- per-app state ------------------------------------------------------------------

    def _state(self, app: Flask) -> _AppState | None:
        settings = self._settings(app)
        states = self._states.get(app)
        if states is None:
            states = self._states.setdefault(app, {})
        try:
            return states[settings]
        except KeyError:
            pass
        state = self._build(app, settings)
        if len(states) >= _STATES_PER_APP:
            states.clear()  # settings that keep changing (a per-request cookie name)
        states[settings] = state
        return state

    def _settings(self, app: Flask) -> tuple[Any, ...]:
        config = app.config
        return (
            app.secret_key,
            tuple(config.get("SECRET_KEY_FALLBACKS") or ()),
            self.get_cookie_name(app),
            self.get_cookie_domain(app),
            self.get_cookie_path(app),
            self.get_cookie_httponly(app),
            self.get_cookie_secure(app),
            self.get_cookie_samesite(app),
            bool(config.get("SESSION_COOKIE_PARTITIONED", False)),
            app.permanent_session_lifetime,
            bool(config.get("SESSION_REFRESH_EACH_REQUEST", True)),
        )

    def _build(self, app: Flask, settings: tuple[Any, ...]) -> _AppState | None:
        (secret, fallbacks, name, domain, path, httponly, secure, samesite, partitioned) = settings[
            :9
        ]
        lifetime: timedelta = settings[9]
        refresh: bool = settings[10]
        fields = self._fields
        changes: dict[str, Any] = {}
        # Flask's defaults are left out, so websession's safer ones (SameSite=Lax,
        # Secure on HTTPS) and the config= object's values apply.
        if name != "session":
            changes["cookie_name"] = name
        if domain:
            # Werkzeug drops a leading dot, as RFC 6265 browsers do; so the same cookie results.
            changes["cookie_domain"] = domain.lstrip(".") if isinstance(domain, str) else domain
        if path and path != "/":
            changes["cookie_path"] = path
        if not httponly:
            changes["cookie_httponly"] = False
        if secure:
            changes["cookie_secure"] = True
        if samesite is not None:
            changes["cookie_samesite"] = samesite
        if partitioned:
            changes["cookie_partitioned"] = True
        seconds = lifetime.total_seconds()
        changes["idle_timeout"] = seconds
        if "absolute_timeout" not in fields:
            absolute = (self.config or SessionConfig()).absolute_seconds
            if absolute is not None and absolute < seconds:
                changes["absolute_timeout"] = seconds
        if not refresh and "touch_interval" not in fields:
            changes["touch_interval"] = seconds
        changes.update(fields)
        config = build_config(self.config, changes)

        store = self.store
        if store is None:
            if not secret:
                return None
            store = CookieStore([secret, *fallbacks], clock=self._clock or default_clock)
        driver = Driver(store, config, {}, asynchronous=False, clock=self._clock)
        refresh_driver = None
        if refresh and "touch_interval" not in fields:
            every = config.replace(touch_interval=_EVERY_REQUEST)
            refresh_driver = Driver(store, every, {}, asynchronous=False, clock=self._clock)

        legacy = None
        if self.legacy_cookie_cutoff is not None and secret:
            # Exactly how Flask's SecureCookieSessionInterface signs: the keys verify,
            # nothing here ever signs with them.
            legacy = URLSafeTimedSerializer(
                [*fallbacks, secret],
                salt=_LEGACY_SALT,
                serializer=session_json_serializer,
                signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha1},
            )
        return _AppState(driver, refresh_driver, legacy, int(seconds))

    # -- migration from Flask's cookie sessions -----------------------------------------

    def _carry_legacy(self, session: FlaskSession, state: _AppState, token: str) -> None:
        cutoff = self.legacy_cookie_cutoff
        if cutoff is None or datetime.fromtimestamp(self._now(), UTC) >= cutoff:
            return
        legacy = state.legacy
        if legacy is None:
            return
        try:
            data = legacy.loads(token, max_age=state.legacy_max_age)
        except BadData as exc:
            security_log.warning("Flask session cookie rejected: %s", type(exc).__name__)
            return
        if not isinstance(data, dict):
            return
        # A fresh session (the old cookie names no record); saving it sets our cookie
        # over Flask's, and an empty one clears Flask's.
        session._token = None
        session._use()
        session._stale = True
        permanent = bool(data.pop(_PERMANENT, False))
        flashes = data.pop(_FLASHES, None) or []
        for key, value in data.items():
            try:
                session[key] = value
            except (UnserializableValue, TypeError, TooManySessions) as exc:
                log.warning("Flask session value %r not carried over: %s", key, exc)
        try:
            session[_FLASHES] = flashes
        except (UnserializableValue, TypeError) as exc:
            log.warning("Flask session flashes not carried over: %s", exc)
        session.permanent = permanent
        session.accessed = True
        log.info("Flask session cookie carried into a websession session")


def _unavailable(response: Response) -> None:
    """Turn the app's response into the 503 the WSGI middleware sends when the store is down."""
    close = getattr(response.response, "close", None)
    if callable(close):
        close()
    response.status_code = 503
    response.set_data(UNAVAILABLE_BODY)
    for name, value in UNAVAILABLE_HEADERS:
        response.headers[name] = value


def _unproxy(session: Any) -> Any:
    """The session behind ``flask.session`` (a proxy), or ``session`` itself."""
    unwrap = getattr(session, "_get_current_object", None)
    return unwrap() if callable(unwrap) else session


def current_session() -> FlaskSession:
    """The current request's session, typed: ``flask.session`` as a :class:`FlaskSession`.

    Raises :class:`~websession.SessionStateError` outside a request, or when
    the app's ``session_interface`` is not websession's.
    """
    if not flask.has_request_context():
        raise SessionStateError("no request: current_session() works inside a Flask request")
    session = cast(Any, flask.session)._get_current_object()
    if not isinstance(session, FlaskSession):
        raise SessionStateError(
            "flask.session is not a websession session: set "
            "app.session_interface = websession.integrations.flask.SessionInterface(...)"
        )
    return session


def login(user_id: str | int) -> None:
    """Bind ``user_id`` to the current session and rotate its id (fixation defence).

    Data is kept; the pre-login id is deleted when the response is saved.
    """
    current_session().login(user_id)


def logout() -> None:
    """Destroy the current session (record deleted, data, user and flashes dropped)."""
    current_session().logout()
