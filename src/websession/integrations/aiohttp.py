"""aiohttp: ``setup(app, store=...)`` and ``session = await get_session(request)``.

A middleware notes the request's session token; :func:`get_session` loads the
session on first use (so requests that never ask for it cost nothing, even on
a network store). The session is committed just before the response's headers
are written: by the middleware for a response the handler returns, and in the
``on_response_prepare`` signal for a streamed response the handler prepared
itself. A store failure at either point becomes a 503.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Unpack

from aiohttp import web
from multidict import CIMultiDict

from .._driver import Driver, add_vary
from ..config import SessionConfig, SessionFields
from ..cookies import get_cookie
from ..errors import SessionStateError, StoreUnavailable
from ..session import Session
from ..wsgi import UNAVAILABLE_BODY, UNAVAILABLE_HEADERS

__all__ = ["get_session", "setup"]

log = logging.getLogger("websession")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _RequestState:
    """One request's session bookkeeping: loaded on demand, committed once."""

    __slots__ = ("broken", "committed", "driver", "session", "token")

    def __init__(self, driver: Driver, token: str | None) -> None:
        self.driver = driver
        self.token = token
        self.session: Session | None = None
        self.committed = False
        #: A streamed response whose prepare() failed in the session commit.
        self.broken: web.StreamResponse | None = None


_DRIVER = web.AppKey("websession.driver", Driver)
# aiohttp >= 3.13 warns about plain string keys in the request's storage.
_STATE: Any = (
    web.RequestKey("websession.state", _RequestState)
    if hasattr(web, "RequestKey")
    else "websession.state"
)


def setup(
    app: web.Application,
    store: Any = None,
    config: SessionConfig | None = None,
    *,
    clock: Callable[[], float] | None = None,
    **fields: Unpack[SessionFields],
) -> None:
    """Give ``app`` (and its sub-applications) sessions; read them with :func:`get_session`.

    ``store`` is a store object or URL (default: ``config.store``, else
    ``sqlite:///websession.db``). Memory, file, SQLite and cookie stores run
    inline; network stores must be async (a URL builds the async form, e.g.
    ``redis://``). Keyword arguments override config fields. The session
    middleware goes first in ``app.middlewares``, so every other middleware
    can use the session.
    """
    driver = Driver(store, config, fields, asynchronous=True, clock=clock)
    app[_DRIVER] = driver
    app.middlewares.insert(0, _middleware)
    app.on_response_prepare.append(_on_response_prepare)


async def get_session(request: web.Request) -> Session:
    """The request's session, loaded on the first call (an async store is awaited here).

    Raises :class:`~websession.StoreUnavailable` when the store is down (the
    middleware answers 503) and :class:`~websession.SessionStateError` when
    :func:`setup` was not called for the app.
    """
    state: _RequestState | None = request.get(_STATE)
    if state is None:
        raise SessionStateError(
            "no session for this request: call websession.integrations.aiohttp.setup(app) "
            "before the app starts"
        )
    session = state.session
    if session is None:
        session = state.session = await state.driver.aopen(state.token)
        if not session._loaded:
            # get_session() is this integration's lazy load already: with
            # autoload=False too, what it returns is loaded.
            await session.load()
    return session


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    driver = request.config_dict[_DRIVER]
    if driver.cookie_transport:
        # An empty value (a half-deleted cookie) is no session, not an attack to log.
        token = get_cookie(request.headers.get("Cookie"), driver.cookie_name) or None
    else:
        token = request.headers.get(driver.header_name) or None
    state = _RequestState(driver, token)
    request[_STATE] = state
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        # A raised redirect (after a login, say) carries the cookie like a returned one.
        if not state.committed:
            try:
                await _commit(state, request, exc.status, exc.headers)
            except StoreUnavailable as failure:
                return _unavailable(failure)
        raise
    except StoreUnavailable as exc:
        # The store failed in get_session(), or at a streamed response's prepare().
        return _unavailable(exc, state.broken)
    if not state.committed:
        try:
            await _commit(state, request, response.status, response.headers)
        except StoreUnavailable as exc:
            return _unavailable(exc)
    elif response.prepared:
        session = state.session
        if session is not None and session._key is not None:
            # Changes after a streamed response's prepare() still reach the
            # stored record; only a new cookie could not reach the browser.
            try:
                await driver.aclose(session, response.status, *_client(driver, request))
            except StoreUnavailable as exc:
                log.error("session changes after prepare() not saved: %s", exc)
    return response


async def _on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    state: _RequestState | None = request.get(_STATE)
    if state is None or state.committed:
        return
    # A handler's own prepare() (streaming): the headers leave right after this.
    # A store failure propagates out of prepare() into the handler, and on to the
    # middleware, which answers 503 instead.
    try:
        await _commit(state, request, response.status, response.headers)
    except StoreUnavailable:
        state.broken = response
        raise
    if state.session is not None:
        state.session._frozen = True


async def _commit(
    state: _RequestState, request: web.Request, status: int, headers: CIMultiDict[str]
) -> None:
    state.committed = True
    session = state.session
    if session is None or not session.accessed:
        return
    driver = state.driver
    outcome = await driver.aclose(session, status, *_client(driver, request))
    current = ", ".join(headers.getall("Vary", ()))
    vary = [("Vary", current)] if current else []
    add_vary(vary, "Cookie" if driver.cookie_transport else driver.header_name)
    headers["Vary"] = vary[0][1]
    if outcome.token is not None or outcome.clear:
        secure = driver.secure(
            request.scheme, request.remote, request.headers.get("X-Forwarded-Proto")
        )
        for name, value in driver.response_headers(outcome, secure):
            headers.add(name, value)


def _client(driver: Driver, request: web.Request) -> tuple[str | None, str | None]:
    ip = driver.client_ip(request.remote, request.headers.get("X-Forwarded-For"))
    return ip, request.headers.get("User-Agent")


def _unavailable(exc: StoreUnavailable, broken: web.StreamResponse | None = None) -> web.Response:
    log.error("session store unavailable, answering 503: %s", exc)
    response = web.Response(status=503, body=UNAVAILABLE_BODY, headers=dict(UNAVAILABLE_HEADERS))
    if broken is not None:
        # The failed prepare() had already set the connection's framing and
        # compression (aiohttp does that just before the signal); the 503 must
        # match them or the client reads garbage.
        if broken.headers.get("Transfer-Encoding") == "chunked":
            del response.headers["Content-Length"]
            response.enable_chunked_encoding()
        coding = broken.headers.get("Content-Encoding")
        if coding is not None:
            response.headers["Content-Encoding"] = coding
    return response
