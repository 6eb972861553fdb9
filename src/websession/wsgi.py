"""WSGI middleware: ``environ["websession.session"]`` for any WSGI app.

The session is loaded on first touch and committed inside ``start_response``,
before the status line leaves, so nothing is written for a 5xx response.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Unpack

from ._driver import QUIET, Driver, add_vary, marked_public
from .config import SessionConfig, SessionFields
from .csrf import FORBIDDEN_BODY, MAX_FORM_BYTES, SAFE_METHODS, form_token, is_form
from .errors import StoreUnavailable
from .events import Hook
from .identity import SessionInfo
from .session import Session

__all__ = ["ENVIRON_KEY", "SessionMiddleware", "get_session"]

ENVIRON_KEY = "websession.session"
UNAVAILABLE_STATUS = "503 Service Unavailable"
UNAVAILABLE_BODY = b"503 Service Unavailable: the session store cannot be reached.\n"
UNAVAILABLE_HEADERS = (
    ("Content-Type", "text/plain; charset=utf-8"),
    ("Content-Length", str(len(UNAVAILABLE_BODY))),
    ("Retry-After", "5"),
    ("Cache-Control", "no-store"),
)
log = logging.getLogger("websession")
security_log = logging.getLogger("websession.security")
FORBIDDEN_HEADERS = (
    ("Content-Type", "text/plain; charset=utf-8"),
    ("Content-Length", str(len(FORBIDDEN_BODY))),
    ("Cache-Control", "no-store"),
)

ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class SessionMiddleware:
    """Give a WSGI app server-side sessions.

    ``store`` is a store object or URL (default: ``config.store``, else
    ``sqlite:///websession.db``); ``config`` a :class:`~websession.SessionConfig`;
    extra keyword arguments override config fields, e.g. ``idle_timeout=3600``.
    ``on_create``, ``on_rotate``, ``on_destroy`` and ``on_expire`` take hooks that
    receive a :class:`~websession.events.SessionEvent` after each good commit.
    """

    def __init__(
        self,
        app: WSGIApp,
        store: Any = None,
        config: SessionConfig | None = None,
        *,
        clock: Callable[[], float] | None = None,
        on_create: Hook | None = None,
        on_rotate: Hook | None = None,
        on_destroy: Hook | None = None,
        on_expire: Hook | None = None,
        on_revoke: Hook | None = None,
        environ_key: str = ENVIRON_KEY,
        **fields: Unpack[SessionFields],
    ) -> None:
        self.app = app
        self._driver = driver = Driver(
            store,
            config,
            fields,
            asynchronous=False,
            clock=clock,
            hooks={
                "on_create": on_create,
                "on_rotate": on_rotate,
                "on_destroy": on_destroy,
                "on_expire": on_expire,
                "on_revoke": on_revoke,
            },
        )
        self.config = driver.config
        self.store = driver.store
        self.environ_key = environ_key
        self._token_key = "HTTP_" + driver.header_name.upper().replace("-", "_")
        self._load = driver.load

    def __repr__(self) -> str:
        return f"SessionMiddleware(app={self.app!r}, store={self.store!r})"

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        driver = self._driver
        session = Session(loader=self._load)
        if driver.cookie_transport:
            # Found in the header on first touch (Driver.load): untouched requests skip it.
            session._cookies = environ.get("HTTP_COOKIE")
        else:
            session._token = environ.get(self._token_key) or None
        if driver.cap is not None:
            driver.prepare(session)
        environ[self.environ_key] = session
        if driver.csrf_protect and environ.get("REQUEST_METHOD", "GET") not in SAFE_METHODS:
            try:
                allowed = self._csrf_ok(session, environ)
            except StoreUnavailable as exc:
                log.error("session store unavailable, answering 503: %s", exc)
                start_response(UNAVAILABLE_STATUS, list(UNAVAILABLE_HEADERS))
                return [UNAVAILABLE_BODY]
            if not allowed:
                security_log.warning(
                    "CSRF check failed: %s %s refused with 403",
                    environ.get("REQUEST_METHOD"),
                    environ.get("PATH_INFO", "/"),
                )
                start_response("403 Forbidden", list(FORBIDDEN_HEADERS))
                return [FORBIDDEN_BODY]

        failed: list[StoreUnavailable] = []
        started: list[bool] = []

        def session_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
        ) -> Any:
            started.append(True)
            if session.accessed:
                headers = list(headers)
                try:
                    self._commit(session, environ, status, headers)
                except StoreUnavailable as exc:
                    log.error("session not saved, answering 503: %s", exc)
                    failed.append(exc)
                    status, headers = UNAVAILABLE_STATUS, list(UNAVAILABLE_HEADERS)
            if exc_info is not None:
                return start_response(status, headers, exc_info)
            return start_response(status, headers)

        try:
            result = self.app(environ, session_start_response)
        except StoreUnavailable as exc:
            # Raised by the lazy load inside the app; answer for it if nothing went out yet.
            if started:
                raise
            log.error("session store unavailable, answering 503: %s", exc)
            start_response(UNAVAILABLE_STATUS, list(UNAVAILABLE_HEADERS))
            return [UNAVAILABLE_BODY]
        if failed:
            _close(result)
            return [UNAVAILABLE_BODY]
        if not started:
            # A generator app calls start_response with its first chunk.
            return _Guard(result, failed)
        return result

    # -- a user's sessions ("your devices", "sign out everywhere else") ---------------------

    def sessions_for(self, user_id: str, current: Session | None = None) -> list[SessionInfo]:
        """The live sessions of ``user_id``, most recently seen first; ``current`` marks one."""
        return self._driver.sessions_for(user_id, current)

    def revoke(self, user_id: str, handle: str) -> bool:
        """Sign out one of ``user_id``'s sessions, named by its handle; runs ``on_revoke``."""
        return self._driver.revoke(user_id, handle)

    def delete_expired(self, limit: int = 1000) -> int:
        """Remove up to ``limit`` expired sessions (stores without native TTL), running
        ``on_expire`` for each where the store can say which went."""
        return self._driver.delete_expired(limit)

    def revoke_user(self, user_id: str, keep: Session | Iterable[str] | None = None) -> int:
        """Sign out all of ``user_id``'s sessions but ``keep`` (the current Session, or
        handles); returns how many went."""
        return self._driver.revoke_user(user_id, keep)

    def _csrf_ok(self, session: Session, environ: dict[str, Any]) -> bool:
        driver = self._driver
        token = environ.get(driver.csrf_environ_key)
        if not token and is_form(environ.get("CONTENT_TYPE")):
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if 0 < length <= MAX_FORM_BYTES:
                body = environ["wsgi.input"].read(length)
                # The app still reads the whole form: hand it the bytes we took.
                environ["wsgi.input"] = io.BytesIO(body)
                token = form_token(body, driver.config.csrf_field_name)
        return session.check_csrf(token)

    def _commit(
        self,
        session: Session,
        environ: dict[str, Any],
        status: str,
        headers: list[tuple[str, str]],
    ) -> None:
        driver = self._driver
        try:
            code = int(status[:3])
        except ValueError:
            code = 500
        settled = driver.quiet(session, code)
        if settled is QUIET:
            # Read-only (or untouched) and no expiry refresh due: no store call, no cookie.
            add_vary(headers, driver.vary_value)
            return
        peer = environ.get("REMOTE_ADDR")
        outcome = driver.close(
            session,
            code,
            driver.client_ip(peer, environ.get("HTTP_X_FORWARDED_FOR")),
            environ.get("HTTP_USER_AGENT"),
            public=marked_public(headers),
            settled=settled,
        )
        add_vary(headers, driver.vary_value)
        if outcome.token is not None or outcome.clear:
            secure = driver.secure(
                environ.get("wsgi.url_scheme", "http"), peer, environ.get("HTTP_X_FORWARDED_PROTO")
            )
            headers.extend(driver.response_headers(outcome, secure))


class _Guard:
    """Passes the app's body through, unless the session save failed at start_response."""

    __slots__ = ("_failed", "_result")

    def __init__(self, result: Iterable[bytes], failed: list[StoreUnavailable]) -> None:
        self._result = result
        self._failed = failed

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._result:
            if self._failed:
                yield UNAVAILABLE_BODY
                return
            yield chunk
        if self._failed:
            yield UNAVAILABLE_BODY

    def close(self) -> None:
        _close(self._result)


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


def get_session(environ: dict[str, Any]) -> Session:
    """The session of a request handled by :class:`SessionMiddleware`."""
    try:
        session: Session = environ[ENVIRON_KEY]
    except KeyError:
        from .errors import SessionStateError

        raise SessionStateError(
            "no session in this request: wrap the app in websession.wsgi.SessionMiddleware"
        ) from None
    return session
