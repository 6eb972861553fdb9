"""Starlette: the app alone, with websession's ASGI middleware, Starlette's SessionMiddleware,
and starsessions. Every middleware wraps the same Starlette app from outside (pure ASGI)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import network
from .common import (
    NETWORK_STORES,
    SECRET,
    STORES,
    Case,
    Family,
    Unavailable,
    asgi_builder,
    asgi_caller,
    asgi_scope,
    fill_session,
    looped_asgi_caller,
    read_session,
    write_session,
)
from .websession_stores import make_async_store, make_store


def make_app(load: Callable[[Any], Any] | None, *, uses_session: bool = True) -> Any:
    """A Starlette app with one async endpoint per scenario.

    ``load`` is awaited before the session is used (starsessions needs it);
    ``uses_session=False`` gives the baseline, whose endpoints never look at it.
    """
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    def endpoint(scenario: str) -> Callable[[Any], Any]:
        async def handler(request: Any) -> Any:
            if not uses_session or scenario == "untouched":
                return PlainTextResponse("ok")
            if load is not None:
                await load(request)
            session = request.session
            if scenario == "read":
                read_session(session)
            elif scenario == "write":
                write_session(session)
            elif scenario == "new":
                fill_session(session)
            elif scenario == "check":
                return PlainTextResponse(str(read_session(session)))
            return PlainTextResponse("ok")

        return handler

    routes = [Route("/" + s, endpoint(s)) for s in ("read", "write", "new", "untouched", "check")]
    return Starlette(routes=routes)


def bare_app(load: Callable[[Any], Any] | None, *, uses_session: bool = True) -> Any:
    """A bare ASGI callable (no framework) with the same scenarios as :func:`make_app`."""
    from starlette.requests import HTTPConnection

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        body = b"1"
        if uses_session and path != "/untouched":
            if load is not None:
                await load(HTTPConnection(scope))
            session = scope["session"]
            if path == "/read":
                read_session(session)
            elif path == "/write":
                write_session(session)
            elif path == "/new":
                fill_session(session)
            elif path == "/check":
                body = str(read_session(session)).encode()
        # A fresh message each time: middlewares append their Set-Cookie to its headers.
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def _baseline(scenario: str) -> Callable[[], None]:
    return asgi_caller(make_app(None, uses_session=False), asgi_scope("/" + scenario))


def _bare_baseline(scenario: str) -> Callable[[], None]:
    return asgi_caller(bare_app(None, uses_session=False), asgi_scope("/" + scenario))


AppFactory = Callable[..., Any]


def _looped_baseline(factory: AppFactory) -> Callable[[str], Callable[[], None]]:
    """The baseline for apps run on the event loop: the same app, run on it too."""

    def baseline(scenario: str) -> Callable[[], None]:
        return looped_asgi_caller(factory(None, uses_session=False), asgi_scope("/" + scenario))

    return baseline


def _async_reference(kind: str) -> Callable[[str], Callable[[], None] | None]:
    """The raw asyncio client work an async websession case is judged against."""

    def reference(scenario: str) -> Callable[[], None] | None:
        from .raw_network import references

        ref: Callable[[], None] | None = references(kind).request_reference(
            scenario, asynchronous=True
        )
        return ref

    return reference


async def _load_websession(connection: Any) -> None:
    """What a handler awaits first under ``autoload=False`` (as starsessions' load_session)."""
    await connection.scope["session"].load()


def _websession(
    kind: str, workdir: Path, factory: AppFactory, *, autoload: bool = True
) -> Callable[[str], Callable[[], None]]:
    from websession.asgi import SessionMiddleware

    looped = kind in NETWORK_STORES

    def build(scenario: str) -> Callable[[], None]:
        variant = "" if autoload else "-lazy"
        label = f"asgi-{factory.__name__}-{scenario}{variant}"
        # Network stores in their async form, as the ASGI middleware requires.
        store = make_async_store(kind, label) if looped else make_store(kind, workdir, label)
        if autoload:  # the default, as an app gets it
            app = SessionMiddleware(factory(None), store=store)
        else:
            app = SessionMiddleware(factory(_load_websession), store=store, autoload=False)
        name = f"websession{variant} {kind} ({factory.__name__})"
        return asgi_builder(app, name, looped=looped)(scenario)

    return build


def _starlette_cookie(factory: AppFactory) -> Callable[[str], Callable[[], None]]:
    def build(scenario: str) -> Callable[[], None]:
        from starlette.middleware.sessions import SessionMiddleware

        app = SessionMiddleware(factory(None), secret_key=SECRET)
        return asgi_builder(app, "starlette cookie")(scenario)

    return build


def _starsessions(kind: str, factory: AppFactory) -> Callable[[str], Callable[[], None]]:
    def build(scenario: str) -> Callable[[], None]:
        try:
            from starsessions import CookieStore, InMemoryStore, SessionMiddleware, load_session
        except ImportError as exc:
            raise Unavailable(f"starsessions not installed: {exc}") from None
        store: Any
        if kind == "memory":
            store = InMemoryStore()
        elif kind == "cookie":
            store = CookieStore(secret_key=SECRET)
        elif kind == "redis":
            network.require("redis")
            import redis.asyncio
            from starsessions.stores.redis import RedisStore

            client = redis.asyncio.Redis.from_url(network.REDIS_URL)
            network.on_aclose(client.aclose)
            store = RedisStore(
                connection=client, prefix=network.redis_prefix(f"starsessions-{scenario}")
            )
        else:
            raise Unavailable(f"starsessions has no {kind} store (memory, cookie and Redis only)")
        app = SessionMiddleware(
            factory(load_session), store=store, lifetime=1800, cookie_https_only=False
        )
        return asgi_builder(app, f"starsessions {kind}", looped=kind in NETWORK_STORES)(scenario)

    return build


def _no_server_side(kind: str) -> Callable[[str], Callable[[], None]]:
    def build(scenario: str) -> Callable[[], None]:
        raise Unavailable(f"Starlette's SessionMiddleware has only the cookie, no {kind} store")

    return build


def _cases(fam: Family, workdir: Path, factory: AppFactory) -> Family:
    for kind in STORES:
        network_store = kind in NETWORK_STORES
        fam.cases.append(
            Case(
                fam.name,
                "websession",
                kind,
                _websession(kind, workdir, factory),
                is_websession=True,
                baseline=_looped_baseline(factory) if network_store else None,
                reference=_async_reference(kind) if network_store else None,
            )
        )
        if kind == "memory":
            fam.cases.append(
                Case(
                    fam.name,
                    "starsessions",
                    kind,
                    _starsessions(kind, factory),
                    note="InMemoryStore",
                )
            )
        elif kind == "cookie":
            fam.cases.append(
                Case(
                    fam.name,
                    "starlette",
                    kind,
                    _starlette_cookie(factory),
                    note="starlette.middleware.sessions (itsdangerous, JSON + base64)",
                )
            )
            fam.cases.append(
                Case(
                    fam.name,
                    "starsessions",
                    kind,
                    _starsessions(kind, factory),
                    note="starsessions CookieStore (itsdangerous)",
                )
            )
        elif network_store:
            fam.cases.append(
                Case(
                    fam.name,
                    "websession lazy",
                    kind,
                    _websession(kind, workdir, factory, autoload=False),
                    note="autoload=False: handlers await session.load() first (as starsessions)",
                    baseline=_looped_baseline(factory),
                )
            )
            fam.cases.append(
                Case(
                    fam.name,
                    "starsessions",
                    kind,
                    _starsessions(kind, factory),
                    note="starsessions RedisStore (redis.asyncio, JSON, SET EX)"
                    if kind == "redis"
                    else "",
                    baseline=_looped_baseline(factory),
                )
            )
            fam.cases.append(Case(fam.name, "starlette", kind, _no_server_side(kind)))
    return fam


def _require_starlette() -> None:
    try:
        import starlette  # noqa: F401
    except ImportError as exc:
        raise Unavailable(f"starlette not installed: {exc}") from None


def family(workdir: Path) -> Family:
    """Everything inside a Starlette application."""
    _require_starlette()
    return _cases(
        Family("starlette", "Starlette app (async endpoints)", _baseline), workdir, make_app
    )


def bare_family(workdir: Path) -> Family:
    """The same middlewares around a bare ASGI callable: the least framework noise."""
    _require_starlette()
    return _cases(Family("asgi", "bare ASGI callable", _bare_baseline), workdir, bare_app)
