"""ASGI middleware: ``scope["session"]`` for http and websocket connections.

Pure ASGI: it wraps ``send`` and commits the session when the response starts
(``http.response.start``) or the websocket handshake is accepted
(``websocket.accept``), the last moments a cookie can still be set.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Unpack

from ._driver import QUIET, Driver, marked_public, merged_vary
from .config import SessionConfig, SessionFields
from .cookies import header_value
from .csrf import FORBIDDEN_BODY, MAX_FORM_BYTES, SAFE_METHODS, form_token, is_form
from .errors import StoreUnavailable
from .events import Hook
from .identity import SessionInfo
from .session import Session

__all__ = ["SessionMiddleware"]

log = logging.getLogger("websession")
security_log = logging.getLogger("websession.security")
FORBIDDEN = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", str(len(FORBIDDEN_BODY)).encode("ascii")),
    (b"cache-control", b"no-store"),
]
UNAVAILABLE_BODY = b"503 Service Unavailable: the session store cannot be reached.\n"
UNAVAILABLE_HEADERS = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", str(len(UNAVAILABLE_BODY)).encode("ascii")),
    (b"retry-after", b"5"),
    (b"cache-control", b"no-store"),
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _header(scope: Scope, name: bytes) -> str | None:
    return header_value(scope.get("headers", ()), name)


async def _buffer_body(receive: Receive) -> tuple[bytes | None, Receive]:
    """Read the request body (up to MAX_FORM_BYTES) and a ``receive`` that replays it.

    None when the body is larger than the limit (the token must then come in
    the header); the app still gets every byte that was read.
    """
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if size > MAX_FORM_BYTES or not message.get("more_body", False):
            break
    body: bytes | None = None
    if size <= MAX_FORM_BYTES and messages[-1]["type"] == "http.request":
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return body, replay


class SessionMiddleware:
    """Give an ASGI app server-side sessions at ``scope["session"]``.

    Memory, file, SQLite and cookie stores run inline and load lazily on first
    touch. Network stores must be async here (a URL builds the async form);
    they load when the request carries a session token, because a sync
    ``request.session[...]`` cannot await, or, with ``autoload=False``, only
    when the app awaits ``session.load()``. Hooks (``on_create``, ``on_rotate``,
    ``on_destroy``, ``on_expire``) may be plain or async functions.
    """

    def __init__(
        self,
        app: ASGIApp,
        store: Any = None,
        config: SessionConfig | None = None,
        *,
        clock: Callable[[], float] | None = None,
        on_create: Hook | None = None,
        on_rotate: Hook | None = None,
        on_destroy: Hook | None = None,
        on_expire: Hook | None = None,
        on_revoke: Hook | None = None,
        scope_key: str = "session",
        **fields: Unpack[SessionFields],
    ) -> None:
        self.app = app
        self._driver = driver = Driver(
            store,
            config,
            fields,
            asynchronous=True,
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
        self.scope_key = scope_key
        self._header_key = driver.header_name.lower().encode("latin-1")
        self._vary_value = (
            b"Cookie" if driver.cookie_transport else driver.header_name.encode("latin-1")
        )
        self._inline = driver.inline
        self._load = driver.load

    def __repr__(self) -> str:
        return f"SessionMiddleware(app={self.app!r}, store={self.store!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        driver = self._driver
        if self._inline:
            session = Session(loader=self._load)
            if driver.cookie_transport:
                # Looked up on first touch (Driver.load): untouched requests skip it.
                session._cookies = scope.get("headers", ())
            else:
                session._token = _header(scope, self._header_key) or None
            if driver.cap is not None:
                driver.prepare(session)
        else:
            if driver.cookie_transport:
                token = driver.cookie_token(scope.get("headers", ()))
            else:
                token = _header(scope, self._header_key) or None
            try:
                session = await driver.aopen(token)
            except StoreUnavailable as exc:
                if kind != "http":
                    raise
                log.error("session store unavailable, answering 503: %s", exc)
                await self._unavailable(send)
                return
        scope[self.scope_key] = session
        if (
            kind == "http"
            and driver.csrf_protect
            and scope.get("method", "GET") not in SAFE_METHODS
        ):
            try:
                allowed, receive = await self._csrf_ok(session, scope, receive)
            except StoreUnavailable as exc:
                log.error("session store unavailable, answering 503: %s", exc)
                await self._unavailable(send)
                return
            if not allowed:
                security_log.warning(
                    "CSRF check failed: %s %s refused with 403",
                    scope.get("method"),
                    scope.get("path", "/"),
                )
                await send({"type": "http.response.start", "status": 403, "headers": FORBIDDEN})
                await send({"type": "http.response.body", "body": FORBIDDEN_BODY})
                return
        failed = started = False

        async def send_with_session(message: Message) -> None:
            nonlocal failed, started
            kind = message["type"]
            if kind == "http.response.start":
                if session.accessed:
                    headers = list(message.get("headers", ()))
                    try:
                        await self._commit(session, scope, message["status"], headers)
                    except StoreUnavailable as exc:
                        log.error("session not saved, answering 503: %s", exc)
                        failed = started = True
                        await self._unavailable(send)
                        return
                    message["headers"] = headers
                started = True
            elif kind == "http.response.body":
                if failed:
                    return  # the 503 went out instead of this response
            elif kind == "websocket.accept":
                if session.accessed:
                    headers = list(message.get("headers", ()))
                    await self._commit(session, scope, 200, headers)
                    message["headers"] = headers
                session._frozen = True
            await send(message)

        try:
            await self.app(scope, receive, send_with_session)
        except StoreUnavailable as exc:
            # Raised by the lazy load inside the app; answer for it if nothing went out yet.
            if kind != "http" or started:
                raise
            log.error("session store unavailable, answering 503: %s", exc)
            await self._unavailable(send)
            return
        if kind == "websocket" and session.accessed and session._key is not None:
            # Changes made after the handshake still reach the store; only a new
            # token could not reach the browser any more.
            await self._commit(session, scope, 200, [])

    # -- a user's sessions ("your devices", "sign out everywhere else") ---------------------

    async def sessions_for(self, user_id: str, current: Session | None = None) -> list[SessionInfo]:
        """The live sessions of ``user_id``, most recently seen first; ``current`` marks one."""
        return await self._driver.asessions_for(user_id, current)

    async def revoke(self, user_id: str, handle: str) -> bool:
        """Sign out one of ``user_id``'s sessions, named by its handle; runs ``on_revoke``."""
        return await self._driver.arevoke(user_id, handle)

    async def delete_expired(self, limit: int = 1000) -> int:
        """Remove up to ``limit`` expired sessions, running ``on_expire`` where possible."""
        return await self._driver.adelete_expired(limit)

    async def revoke_user(self, user_id: str, keep: Session | Iterable[str] | None = None) -> int:
        """Sign out all of ``user_id``'s sessions but ``keep``; returns how many went."""
        return await self._driver.arevoke_user(user_id, keep)

    async def _csrf_ok(
        self, session: Session, scope: Scope, receive: Receive
    ) -> tuple[bool, Receive]:
        driver = self._driver
        await session.load()  # with autoload=False the check is this request's first touch
        token = _header(scope, driver.csrf_header_key)
        if not token and is_form(_header(scope, b"content-type")):
            body, receive = await _buffer_body(receive)
            if body is not None:
                token = form_token(body, driver.config.csrf_field_name)
        return session.check_csrf(token), receive

    @staticmethod
    async def _unavailable(send: Send) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": UNAVAILABLE_HEADERS})
        await send({"type": "http.response.body", "body": UNAVAILABLE_BODY})

    async def _commit(
        self, session: Session, scope: Scope, status: int, headers: list[tuple[bytes, bytes]]
    ) -> None:
        driver = self._driver
        settled = driver.quiet(session, status)
        if settled is QUIET:
            # Read-only (or untouched) and no expiry refresh due: no store call, no cookie.
            self._vary(headers)
            return
        client = scope.get("client")
        peer = client[0] if client else None
        proxies = driver.proxies
        # X-Forwarded-* count only from a trusted proxy: without one, never scanned for.
        ip = driver.client_ip(peer, _header(scope, b"x-forwarded-for")) if proxies else peer
        outcome = await driver.aclose(
            session,
            status,
            ip,
            _header(scope, b"user-agent"),
            public=marked_public(headers),
            settled=settled,
        )
        self._vary(headers)
        if outcome.token is not None or outcome.clear:
            forwarded = _header(scope, b"x-forwarded-proto") if proxies else None
            secure = driver.secure(scope.get("scheme", "http"), peer, forwarded)
            for key, text in driver.response_headers(outcome, secure):
                headers.append((key.lower().encode("latin-1"), text.encode("latin-1")))

    def _vary(self, headers: list[tuple[bytes, bytes]]) -> None:
        value = self._vary_value
        for header in headers:
            name = header[0]
            if len(name) == 4 and name.lower() == b"vary":
                merged = merged_vary(header[1].decode("latin-1"), value.decode("latin-1"))
                headers[headers.index(header)] = (name, merged.encode("latin-1"))
                return
        headers.append((b"vary", value))
