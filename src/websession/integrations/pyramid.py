"""Pyramid: ``config.set_session_factory(session_factory(...))``, or settings-driven.

``request.session`` is a :class:`PyramidSession`: Pyramid's ``ISession``
(flash queues, ``invalidate``, ``changed``, ``new``, ``created``, and the
``new_csrf_token``/``get_csrf_token`` pair that Pyramid's default
``LegacySessionCSRFStoragePolicy`` calls) on top of a websession
:class:`~websession.Session`, so ``login()``, ``logout()`` and the rest are
there too. The session is saved in a response callback, before the status
line leaves, so a 5xx saves nothing and a store failure can still become a 503.

From an ini file::

    [app:main]
    session.url = sqlite:///%(here)s/sessions.db
    session.cookie_name = session
    session.idle_timeout = 1800

    # in main(): config.include("websession.integrations.pyramid")
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any, Unpack

from pyramid.interfaces import ISession  # type: ignore[import-untyped,unused-ignore]
from pyramid.response import Response  # type: ignore[import-untyped,unused-ignore]
from zope.interface import classImplements  # type: ignore[import-untyped,unused-ignore]

from .._driver import Driver, add_vary
from ..config import SessionConfig, SessionFields
from ..cookies import get_cookie
from ..errors import StoreUnavailable
from ..session import Session
from ..wsgi import UNAVAILABLE_BODY, UNAVAILABLE_HEADERS, UNAVAILABLE_STATUS

__all__ = [
    "PyramidSession",
    "SessionFactory",
    "includeme",
    "session_factory",
    "session_factory_from_settings",
    "store_unavailable_view",
]

log = logging.getLogger("websession")


class PyramidSession(Session):
    """``request.session`` under Pyramid: a websession :class:`~websession.Session`
    that also speaks Pyramid's ``ISession``.

    Flash queues are websession flash categories (the queue name is the
    category; Pyramid's default queue ``""`` is the category ``""``), so
    flashes queued by another framework sharing the session are read with
    ``pop_flash(category)``.
    """

    __slots__ = ("_opened_at",)

    def __init__(self, *, loader: Callable[[Session], None] | None, opened_at: float) -> None:
        super().__init__(loader=loader)
        self._opened_at = opened_at

    # -- ISession attributes -------------------------------------------------------

    @property
    def created(self) -> float:
        """When the session was created (epoch seconds); for a new one, when this request began."""
        stored = super().created
        return self._opened_at if stored is None else stored

    @property
    def new(self) -> bool:
        """True when the request brought no stored session (the visitor's first, or a fresh one)."""
        self._use()
        return self.is_new

    def invalidate(self) -> None:
        """Destroy the session (websession's :meth:`~websession.Session.logout`).

        The stored record is deleted when the response is sent; anything set
        afterwards in the same request goes into a brand-new session.
        """
        self.logout()

    def changed(self) -> None:
        """Mark the session as changed after mutating a value in place.

        websession finds in-place changes itself by comparing payloads at the
        end of the request; this forces the full comparison (and a save if
        the data differ), as Pyramid's contract asks.
        """
        self._use()
        self._exposed_all = True
        self.modified = True

    # -- flash queues --------------------------------------------------------------

    def flash(self, msg: Any, queue: str = "", allow_duplicate: bool = True) -> None:
        """Append ``msg`` to flash ``queue``; with ``allow_duplicate=False``, only if absent."""
        if not allow_duplicate and any(m == msg for _, m in self.peek_flashes(queue)):
            return
        super().flash(msg, queue)

    def pop_flash(self, queue: str = "") -> list[Any]:
        """The messages of ``queue``, removed from the session."""
        return [message for _, message in self.pop_flashes(queue)]

    def peek_flash(self, queue: str = "") -> list[Any]:
        """The messages of ``queue``, left in place."""
        return [message for _, message in self.peek_flashes(queue)]

    # -- CSRF (what LegacySessionCSRFStoragePolicy calls) ---------------------------

    def new_csrf_token(self) -> str:
        """Replace the session's CSRF token with a fresh one and return it."""
        self._use()
        self._csrf = secrets.token_urlsafe(32)
        self.modified = True
        return self._csrf

    def get_csrf_token(self) -> str:
        """The session's CSRF token, created on first use."""
        return self.csrf_token()


classImplements(PyramidSession, ISession)


class SessionFactory:
    """What :func:`session_factory` returns: called by Pyramid once per request that
    reads ``request.session``. ``config`` and ``store`` are the resolved settings."""

    __slots__ = ("_driver", "config", "store")

    def __init__(self, driver: Driver) -> None:
        self._driver = driver
        self.config = driver.config
        self.store = driver.store

    def __repr__(self) -> str:
        return f"SessionFactory(store={self.store!r})"

    def __call__(self, request: Any) -> PyramidSession:
        driver = self._driver
        if driver.cookie_transport:
            # An empty value (a half-deleted cookie) is no session, not an attack to log.
            token = get_cookie(request.headers.get("Cookie"), driver.cookie_name) or None
        else:
            token = request.headers.get(driver.header_name) or None
        session = PyramidSession(loader=driver.load, opened_at=driver.flow.clock())
        session._token = token
        request.add_response_callback(self._commit)
        return session

    def _commit(self, request: Any, response: Any) -> None:
        session: PyramidSession = request.session
        if not session.accessed:
            return
        driver = self._driver
        peer = request.remote_addr
        headers = request.headers
        try:
            outcome = driver.close(
                session,
                response.status_int,
                driver.client_ip(peer, headers.get("X-Forwarded-For")),
                headers.get("User-Agent"),
            )
        except StoreUnavailable as exc:
            log.error("session not saved, answering 503: %s", exc)
            _make_unavailable(response)
            return
        headerlist: list[tuple[str, str]] = response.headerlist
        add_vary(headerlist, "Cookie" if driver.cookie_transport else driver.header_name)
        if outcome.token is not None or outcome.clear:
            secure = driver.secure(request.scheme, peer, headers.get("X-Forwarded-Proto"))
            headerlist.extend(driver.response_headers(outcome, secure))


def session_factory(
    store: Any = None,
    config: SessionConfig | None = None,
    *,
    clock: Callable[[], float] | None = None,
    **fields: Unpack[SessionFields],
) -> SessionFactory:
    """A Pyramid session factory: ``config.set_session_factory(session_factory(...))``.

    ``store`` is a store object or URL (default: ``config.store``, else
    ``sqlite:///websession.db``); ``config`` a :class:`~websession.SessionConfig`;
    keyword arguments override config fields, e.g. ``idle_timeout=3600``.
    The store must be a sync one (Pyramid is WSGI).
    """
    return SessionFactory(Driver(store, config, fields, asynchronous=False, clock=clock))


def session_factory_from_settings(
    settings: Mapping[str, Any], prefix: str = "session."
) -> SessionFactory:
    """A session factory configured by ``session.*`` keys of Pyramid settings (the ini file).

    ``session.url`` (or ``session.store``) names the store; every
    :class:`~websession.SessionConfig` field is ``session.<field>``. An
    unknown ``session.*`` key raises :class:`~websession.SessionConfigError`.
    """
    return session_factory(config=SessionConfig.from_settings(settings, prefix=prefix))


def store_unavailable_view(exc: StoreUnavailable, request: Any) -> Any:
    """Pyramid exception view: a 503 when the store fails while a view reads the session.

    ``includeme`` registers it; register it yourself with
    ``config.add_exception_view(store_unavailable_view, context=StoreUnavailable)``
    when you call ``set_session_factory`` directly.
    """
    log.error("session store unavailable, answering 503: %s", exc)
    response = Response()
    _make_unavailable(response)
    return response


def includeme(config: Any) -> None:
    """``config.include("websession.integrations.pyramid")``: the session factory from the
    ``session.*`` settings, and a 503 for store failures."""
    config.set_session_factory(session_factory_from_settings(config.get_settings()))
    config.add_exception_view(store_unavailable_view, context=StoreUnavailable)


def _make_unavailable(response: Any) -> None:
    # A response callback cannot swap the response object, only rewrite it.
    response.status = UNAVAILABLE_STATUS
    response.headerlist = list(UNAVAILABLE_HEADERS)
    response.body = UNAVAILABLE_BODY
