"""Prepared sessions: start a test already signed in, with data, for any framework's test client.

:func:`prepare_session` writes a session straight into the store the app
uses, exactly as a request would have left it (a fresh 256-bit id, only its
hash as the store key, websession's payload, metadata and a TTL from the
config), and returns a :class:`PreparedSession` holding the cookie value.
``prepared.apply(client)`` puts that cookie on a Flask/Werkzeug test client,
Django's test ``Client``, Starlette's or FastAPI's ``TestClient``, an
``httpx.Client``/``AsyncClient``, WebTest's ``TestApp`` (Pyramid) or aiohttp's
``TestClient``; ``prepared.cookies`` is a plain dict for anything else.

With a :class:`~websession.stores.CookieStore` nothing is written anywhere:
the signed (or encrypted) cookie value itself is the session.

No framework is imported here; clients are recognised by what they offer.
"""

from __future__ import annotations

import dataclasses
import inspect
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from http.cookiejar import Cookie, CookieJar
from http.cookies import SimpleCookie
from typing import Any, TypeVar, Unpack

from .codecs import Payload, encode_payload
from .config import SessionConfig, SessionFields, build_config
from .errors import PayloadTooLarge, SessionConfigError
from .ids import handle_of, hash_id, new_id
from .stores.base import InlineAsyncStore, Meta
from .stores.cookie import CookieStore
from .urls import store_from_url

__all__ = ["PreparedSession", "aprepare_session", "prepare_session"]

C = TypeVar("C")


@dataclasses.dataclass(frozen=True, slots=True)
class PreparedSession:
    """A session written for a test: what a client must present to be that visitor.

    ``token`` is the cookie (or header) value; ``key`` is what the store keeps
    (the id's hash; None for a cookie store), ``handle`` its short form as the
    CLI shows it. ``csrf_token`` is set when the session was prepared with
    one, so a test can post a form without fetching a page first.
    """

    token: str
    cookie_name: str
    header_name: str
    transport: str
    key: str | None
    data: Mapping[str, Any]
    user_id: str | None
    csrf_token: str | None
    expires: float

    def __repr__(self) -> str:
        # The token is a live credential for the store it was written to.
        return (
            f"PreparedSession(handle={self.handle!r}, user_id={self.user_id!r}, "
            f"keys={sorted(self.data)})"
        )

    @property
    def handle(self) -> str | None:
        """The short public handle (``websession ls``); None for a cookie store."""
        return handle_of(self.key) if self.key is not None else None

    @property
    def cookies(self) -> dict[str, str]:
        """``{cookie_name: token}``, e.g. for ``httpx.Client(cookies=...)``."""
        return {self.cookie_name: self.token}

    @property
    def headers(self) -> dict[str, str]:
        """``{header_name: token}``, for apps with ``transport="header"``."""
        return {self.header_name: self.token}

    def apply(self, client: C, *, cookie_name: str | None = None, domain: str | None = None) -> C:
        """Make ``client`` present this session on its next requests; returns ``client``.

        ``cookie_name`` overrides the config's name (a Django client defaults
        to ``settings.SESSION_COOKIE_NAME``); ``domain`` is the cookie's domain
        for clients that keep one per host (Werkzeug's default is
        ``localhost``). With header transport the header is set instead.
        """
        if self.transport == "header":
            _set_default_header(client, self.header_name, self.token)
            return client
        name = cookie_name or _default_cookie_name(client) or self.cookie_name
        _set_cookie(client, name, self.token, domain)
        return client


def prepare_session(
    store: Any,
    data: Mapping[str, Any] | None = None,
    user_id: str | int | None = None,
    *,
    config: SessionConfig | None = None,
    flashes: Iterable[tuple[str, Any] | str] = (),
    csrf: bool | str = False,
    clock: Callable[[], float] | None = None,
    **fields: Unpack[SessionFields],
) -> PreparedSession:
    """Write a session into ``store`` (or sign one for a cookie store) and describe it.

    ``store`` is the store object the app under test uses (a sync store, the
    async form of an inline one, a :class:`~websession.stores.CookieStore`),
    or a URL naming a shared store (``sqlite:///...``). ``data`` becomes the
    session's data, ``user_id`` the bound user (as after ``login()``),
    ``flashes`` queued flash messages (``(category, message)`` pairs or plain
    messages), ``csrf=True`` a fresh CSRF token (or a str, that token).
    ``config`` and keyword arguments are the app's session settings: the
    cookie name and the timeouts that set the TTL.

    Values are checked as a request would check them: one that cannot be
    stored raises :class:`~websession.UnserializableValue` naming its key.
    """
    target = _sync_target(store)
    built = _build(target, data, user_id, config, flashes, csrf, clock, fields)
    if isinstance(target, CookieStore):
        return built.signed(target)
    built.check_limit(getattr(target, "max_payload_size", None))
    target.save(built.key, built.payload, expected_version=None, ttl=built.ttl, meta=built.meta)
    return built.result()


async def aprepare_session(
    store: Any,
    data: Mapping[str, Any] | None = None,
    user_id: str | int | None = None,
    *,
    config: SessionConfig | None = None,
    flashes: Iterable[tuple[str, Any] | str] = (),
    csrf: bool | str = False,
    clock: Callable[[], float] | None = None,
    **fields: Unpack[SessionFields],
) -> PreparedSession:
    """:func:`prepare_session` for async stores (``AsyncRedisStore``...): the save is awaited.

    Sync and inline stores are accepted too, so one helper serves any ASGI test.
    """
    if isinstance(store, str):
        store = store_from_url(store, asynchronous=True) if "://" in store else store
    save = getattr(store, "save", None)
    if isinstance(store, CookieStore | InlineAsyncStore) or not _is_coroutine(save):
        return prepare_session(
            store,
            data,
            user_id,
            config=config,
            flashes=flashes,
            csrf=csrf,
            clock=clock,
            **fields,
        )
    built = _build(store, data, user_id, config, flashes, csrf, clock, fields)
    built.check_limit(getattr(store, "max_payload_size", None))
    await store.save(
        built.key, built.payload, expected_version=None, ttl=built.ttl, meta=built.meta
    )
    return built.result()


# -- building the record -----------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Built:
    config: SessionConfig
    token: str
    key: str
    payload: bytes
    ttl: float
    meta: Meta
    data: dict[str, Any]
    csrf: str | None

    def check_limit(self, store_limit: int | None) -> None:
        limit = self.config.max_payload_bytes
        if store_limit is not None:
            limit = min(limit, store_limit)
        if len(self.payload) > limit:
            raise PayloadTooLarge(len(self.payload), limit, "this store", None)

    def result(self, token: str | None = None, key: str | None = "") -> PreparedSession:
        config = self.config
        return PreparedSession(
            token=token if token is not None else self.token,
            cookie_name=config.cookie_name,
            header_name=config.header_name,
            transport=config.transport,
            key=self.key if key == "" else key,
            data=self.data,
            user_id=self.meta.user_id,
            csrf_token=self.csrf,
            expires=self.meta.last_seen + self.ttl,
        )

    def signed(self, store: CookieStore) -> PreparedSession:
        token = store.dump_token(self.payload, ttl=self.ttl, meta=self.meta)
        size = len(self.config.cookie_name) + 1 + len(token)
        if size > store.max_cookie_size:
            raise PayloadTooLarge(
                size, store.max_cookie_size, "a browser cookie (name=value)", None
            )
        return self.result(token, None)


def _build(
    store: Any,
    data: Mapping[str, Any] | None,
    user_id: str | int | None,
    config: SessionConfig | None,
    flashes: Iterable[tuple[str, Any] | str],
    csrf: bool | str,
    clock: Callable[[], float] | None,
    fields: Mapping[str, Any],
) -> _Built:
    if config is not None and not isinstance(config, SessionConfig):
        raise SessionConfigError(
            f"config must be a websession.SessionConfig, not {type(config).__name__}"
        )
    resolved = build_config(config, fields)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a mapping, not {type(data).__name__}")
    copied = dict(data)
    for name in copied:
        if type(name) is not str:
            raise TypeError(f"session keys must be str, not {type(name).__name__}")
    if user_id is not None and (
        isinstance(user_id, bool) or not isinstance(user_id, str | int) or user_id == ""
    ):
        raise TypeError("user_id must be a non-empty str or int, as login() takes")
    queued: list[tuple[str, Any]] = []
    for item in flashes:
        if isinstance(item, str):
            queued.append(("message", item))
            continue
        category, message = item
        if type(category) is not str:
            raise TypeError(f"flash category must be str, not {type(category).__name__}")
        queued.append((category, message))
    if csrf is True:
        token_csrf: str | None = secrets.token_urlsafe(32)
    elif csrf is False:
        token_csrf = None
    elif isinstance(csrf, str) and csrf:
        token_csrf = csrf
    else:
        raise TypeError("csrf must be True, False or a non-empty str token")
    # encode_payload names the offending key when a value cannot be stored.
    payload = encode_payload(Payload(d=copied, f=queued, c=token_csrf))
    now = (clock or time.time)()
    ttl = resolved.idle_seconds
    if resolved.absolute_seconds is not None:
        ttl = min(ttl, resolved.absolute_seconds)
    meta = Meta(now, now, None if user_id is None else str(user_id))
    token = new_id()
    key = "" if isinstance(store, CookieStore) else hash_id(token)
    return _Built(resolved, token, key, payload, ttl, meta, copied, token_csrf)


def _sync_target(store: Any) -> Any:
    if isinstance(store, str):
        if store.partition("://")[0].lower() == "memory":
            raise SessionConfigError(
                "memory:// builds a new, empty store: pass the MemoryStore object the app uses"
            )
        store = store_from_url(store)
    if isinstance(store, InlineAsyncStore):
        return store.sync
    if isinstance(store, CookieStore):
        return store
    save = getattr(store, "save", None)
    if not callable(save) or not callable(getattr(store, "load", None)):
        raise SessionConfigError(f"store={store!r} is not a session store or a store URL")
    if _is_coroutine(save):
        raise SessionConfigError(
            f"{type(store).__name__} is an async store: use `await aprepare_session(...)`"
        )
    return store


def _is_coroutine(func: Any) -> bool:
    return inspect.iscoroutinefunction(func)


# -- putting the cookie on a client (duck-typed) -----------------------------------------------


def _default_cookie_name(client: Any) -> str | None:
    """Django's test client: the cookie its SessionMiddleware reads."""
    if _is_django_client(client):
        from django.conf import settings  # type: ignore[import-untyped]

        name = getattr(settings, "SESSION_COOKIE_NAME", None)
        return name if isinstance(name, str) else None
    return None


def _is_django_client(client: Any) -> bool:
    return isinstance(getattr(client, "cookies", None), SimpleCookie) and hasattr(
        client, "force_login"
    )


def _set_cookie(client: Any, name: str, value: str, domain: str | None) -> None:
    if _is_django_client(client):
        client.cookies[name] = value
        return
    session = getattr(client, "session", None)
    jar = getattr(session, "cookie_jar", None)
    if jar is not None and callable(getattr(jar, "update_cookies", None)):
        # aiohttp's TestClient: a cookie without a domain is sent to its test server.
        jar.update_cookies({name: value})
        return
    jar = getattr(client, "cookiejar", None)
    if isinstance(jar, CookieJar):
        # WebTest's TestApp (Pyramid). Its own set_cookie() files the cookie under
        # ".localhost", beside (not over) the "localhost.local" the app's cookies get,
        # so a rotated cookie would travel with the stale one; file it where they go.
        host = domain or client.extra_environ.get("HTTP_HOST", "localhost").split(":", 1)[0]
        jar.set_cookie(_jar_cookie(name, value, host if "." in host else host + ".local"))
        return
    cookies = getattr(client, "cookies", None)
    if cookies is not None and callable(getattr(cookies, "set", None)):
        # httpx clients, Starlette's and FastAPI's TestClient. The cookie gets the
        # domain the jar gives the server's own cookies, so a rotated cookie from the
        # app replaces it instead of standing beside it.
        cookies.set(name, value, domain=domain or _jar_domain(client))
        return
    if callable(getattr(client, "set_cookie", None)):
        # Werkzeug's and Flask's test clients (domain defaults to "localhost" there).
        if domain is None:
            client.set_cookie(name, value)
        else:
            client.set_cookie(name, value, domain=domain)
        return
    raise TypeError(
        f"do not know how to set a cookie on {type(client).__name__}; "
        f"send the prepared session's .cookies ({name}=...) with each request"
    )


def _jar_cookie(name: str, value: str, domain: str) -> Cookie:
    return Cookie(
        version=0,
        name=name,
        value=value,
        port=None,
        port_specified=False,
        domain=domain,
        domain_specified=False,
        domain_initial_dot=False,
        path="/",
        path_specified=True,
        secure=False,
        expires=None,
        discard=True,
        comment=None,
        comment_url=None,
        rest={},
    )


def _jar_domain(client: Any) -> str:
    host = getattr(getattr(client, "base_url", None), "host", "") or ""
    if not host:
        return ""
    # http.cookiejar files a dotless host's cookies under "<host>.local".
    return host if "." in host or ":" in host else host + ".local"


def _set_default_header(client: Any, name: str, value: str) -> None:
    environ_key = "HTTP_" + name.upper().replace("-", "_")
    if _is_django_client(client):
        client.defaults[environ_key] = value
        return
    session = getattr(client, "session", None)
    if session is not None and getattr(session, "cookie_jar", None) is not None:
        session.headers[name] = value  # aiohttp's TestClient: the session's default headers
        return
    environ = getattr(client, "extra_environ", None)  # WebTest
    if environ is None:
        environ = getattr(client, "environ_base", None)  # Werkzeug/Flask
    if isinstance(environ, dict):
        environ[environ_key] = value
        return
    headers = getattr(client, "headers", None)
    if headers is not None and hasattr(headers, "__setitem__"):
        headers[name] = value  # httpx clients, Starlette's TestClient
        return
    raise TypeError(
        f"do not know how to set a default header on {type(client).__name__}; "
        f"send the prepared session's .headers ({name}: ...) with each request"
    )
