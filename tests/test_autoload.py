"""``autoload=False``: ASGI with an async store loads only when the app awaits ``session.load()``.

The default (``autoload=True``) loads before the app runs whenever the request
carries a token, because a sync ``request.session[...]`` cannot await. With
``autoload=False`` a request that never loads its session costs no store call,
which the SlowAsyncStore counts and a real Redis server confirms.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from helpers import SlowAsyncStore, cookie_value
from services import REDIS_URL, redis_scope, run_prefix
from websession import SessionConfig, SessionConfigError, SessionStateError
from websession.asgi import SessionMiddleware
from websession.stores import MemoryStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def count(request: Request) -> JSONResponse:
    await request.session.load()
    request.session["n"] = request.session.get("n", 0) + 1
    return JSONResponse(request.session["n"])


async def plain(request: Request) -> PlainTextResponse:
    return PlainTextResponse("no session here")


async def too_early(request: Request) -> PlainTextResponse:
    try:
        request.session.get("n")
    except SessionStateError as exc:
        return PlainTextResponse(str(exc), status_code=409)
    return PlainTextResponse("read without loading")


async def logout(request: Request) -> PlainTextResponse:
    await request.session.load()
    request.session.logout()
    return PlainTextResponse("bye")


def app() -> Starlette:
    return Starlette(
        routes=[
            Route("/", count),
            Route("/plain", plain),
            Route("/early", too_early),
            Route("/logout", logout),
        ]
    )


def client(asgi: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(asgi), base_url="http://testserver")


async def test_untouched_request_makes_no_store_call() -> None:
    store = SlowAsyncStore(MemoryStore())
    async with client(SessionMiddleware(app(), store=store, autoload=False)) as http:
        token = cookie_value((await http.get("/")).headers["set-cookie"])
        store.calls.clear()
        response = await http.get("/plain", headers={"Cookie": f"session={token}"})
        assert response.text == "no session here"
        assert store.calls == {}
        assert "set-cookie" not in response.headers
        assert "vary" not in response.headers
        # The same session, loaded when the app asks: one load, one save.
        response = await http.get("/", headers={"Cookie": f"session={token}"})
        assert response.json() == 2
        assert store.calls == {"load": 1, "save": 1}
        assert response.headers["vary"] == "Cookie"


async def test_default_still_loads_before_the_app() -> None:
    store = SlowAsyncStore(MemoryStore())
    async with client(SessionMiddleware(app(), store=store)) as http:
        token = cookie_value((await http.get("/")).headers["set-cookie"])
        store.calls.clear()
        await http.get("/plain", headers={"Cookie": f"session={token}"})
        assert store.calls == {"load": 1}
        # Without autoload=False, a sync read needs no await.
        response = await http.get("/early", headers={"Cookie": f"session={token}"})
        assert response.text == "read without loading"


async def test_touching_before_load_names_the_fix_and_loses_nothing() -> None:
    store = SlowAsyncStore(MemoryStore())
    async with client(SessionMiddleware(app(), store=store, autoload=False)) as http:
        token = cookie_value((await http.get("/")).headers["set-cookie"])
        response = await http.get("/early", headers={"Cookie": f"session={token}"})
        assert response.status_code == 409
        assert "await session.load()" in response.text
        assert "autoload=False" in response.text
        assert "set-cookie" not in response.headers
        # The stored session is untouched by the refused read.
        assert (await http.get("/", headers={"Cookie": f"session={token}"})).json() == 2


async def test_load_is_idempotent_and_a_no_op_without_a_token() -> None:
    store = SlowAsyncStore(MemoryStore())

    async def twice(request: Request) -> JSONResponse:
        await request.session.load()
        await request.session.load()
        return JSONResponse(dict(request.session))

    asgi = SessionMiddleware(Starlette(routes=[Route("/", twice)]), store=store, autoload=False)
    async with client(asgi) as http:
        assert (await http.get("/")).json() == {}
        assert store.calls == {}


async def test_logout_after_load_deletes_the_record() -> None:
    store = SlowAsyncStore(MemoryStore())
    async with client(SessionMiddleware(app(), store=store, autoload=False)) as http:
        token = cookie_value((await http.get("/")).headers["set-cookie"])
        response = await http.get("/logout", headers={"Cookie": f"session={token}"})
        assert "Max-Age=0" in response.headers["set-cookie"]
        assert len(store.inner) == 0


async def test_csrf_enforcement_loads_the_session_itself() -> None:
    store = SlowAsyncStore(MemoryStore())

    async def form(request: Request) -> JSONResponse:
        await request.session.load()
        return JSONResponse({"csrf": request.session.csrf_token()})

    async def post(request: Request) -> PlainTextResponse:
        return PlainTextResponse("accepted")

    routes = [Route("/form", form), Route("/post", post, methods=["POST"])]
    asgi = SessionMiddleware(
        Starlette(routes=routes), store=store, autoload=False, csrf_protect=True
    )
    async with client(asgi) as http:
        response = await http.get("/form")
        token = cookie_value(response.headers["set-cookie"])
        cookie = {"Cookie": f"session={token}"}
        refused = await http.post("/post", headers=cookie)
        assert refused.status_code == 403
        accepted = await http.post(
            "/post", headers={**cookie, "X-CSRF-Token": response.json()["csrf"]}
        )
        assert accepted.text == "accepted"


def test_autoload_is_a_validated_config_field() -> None:
    assert SessionConfig().autoload is True
    assert SessionConfig.from_settings({"session.autoload": "false"}).autoload is False
    with pytest.raises(SessionConfigError, match="autoload"):
        SessionConfig(autoload="sometimes")  # type: ignore[arg-type]


@pytest.fixture
async def redis_store() -> AsyncIterator[Any]:
    prefix = run_prefix("autoload")
    with redis_scope(prefix):  # skips (fails under CI) without a server; removes our keys
        from websession.stores import AsyncRedisStore

        store = AsyncRedisStore(REDIS_URL, prefix=prefix)
        try:
            yield store
        finally:
            await store.aclose()


async def test_real_redis_untouched_request_sends_no_command(redis_store: Any) -> None:
    # Counted as they go over the wire, on every connection (the client's pool and the
    # store's own connections for GET and EVALSHA are built from this class).
    sent: list[Any] = []
    pool = redis_store.client.connection_pool

    class Counting(pool.connection_class):  # type: ignore[name-defined,misc]
        def pack_command(self, *args: Any) -> Any:
            sent.append(args[0])
            return super().pack_command(*args)

    pool.connection_class = Counting
    async with client(SessionMiddleware(app(), store=redis_store, autoload=False)) as http:
        token = cookie_value((await http.get("/")).headers["set-cookie"])
        cookie = {"Cookie": f"session={token}"}
        assert (await http.get("/", headers=cookie)).json() == 2
        sent.clear()
        for _ in range(20):
            assert (await http.get("/plain", headers=cookie)).text == "no session here"
        assert sent == []
        assert (await http.get("/", headers=cookie)).json() == 3
        assert len(sent) == 2  # one load, one save
