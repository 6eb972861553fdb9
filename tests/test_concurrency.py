"""No lost updates: concurrent requests on one session merge by conflict replay, on every store."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from collections.abc import Callable, Iterable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from helpers import (
    CountingStore,
    FakeClock,
    SlowAsyncStore,
    call_wsgi,
    cookie_value,
    load_session,
    path_of,
    set_cookies,
    wsgi_app,
)
from websession import SessionConfig, SessionError
from websession.asgi import SessionMiddleware as ASGIMiddleware
from websession.errors import Conflict
from websession.flow import Flow, run_sync
from websession.session import Session
from websession.stores import MemoryStore
from websession.stores.base import Entry, Meta, Store
from websession.wsgi import SessionMiddleware

REQUESTS = 50
WORKERS = 16
# Long enough that concurrent requests all load the same version and must replay.
OVERLAP = 0.003


def _missing(module: str) -> bool:
    return importlib.util.find_spec(f"websession.stores.{module}") is None


def make_store(kind: str, tmp_path: Path) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "file":
        from websession.stores import FileStore

        return FileStore(tmp_path / "sessions")
    from websession.stores import SQLiteStore

    return SQLiteStore(tmp_path / "sessions.db")


@pytest.fixture(
    params=[
        "memory",
        pytest.param(
            "file",
            marks=pytest.mark.skipif(
                _missing("file"), reason="websession.stores.file is not written yet"
            ),
        ),
        pytest.param(
            "sqlite",
            marks=pytest.mark.skipif(
                _missing("sqlite"), reason="websession.stores.sqlite is not written yet"
            ),
        ),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> CountingStore:
    return CountingStore(make_store(request.param, tmp_path))


def query(env: dict[str, Any]) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(env.get("QUERY_STRING", "")).items()}


def concurrent_view(session: Session, env: dict[str, Any]) -> Any:
    path, args = path_of(env), query(env)
    if path == "/start":
        session["base"] = "kept"
        return None
    if path == "/read":
        return {"data": session.to_dict(), "flashes": session.pop_flashes()}
    session.get("base")  # load now, so every request starts from the same version
    time.sleep(OVERLAP)
    i = int(args["i"])
    if path == "/add":
        session[f"k{i}"] = i
    elif path == "/flash":
        session.flash(f"m{i}")
    elif path == "/same":
        session["same"] = i
        session[f"own{i}"] = i
    return None


def run_concurrently(app: Callable[..., Iterable[bytes]], path: str, token: str) -> list[int]:
    cookie = f"session={token}"

    def one(i: int) -> int:
        status, headers, _ = call_wsgi(app, f"{path}?i={i}", cookie=cookie)
        # Every response keeps the same session id (no rotation, no clearing).
        assert [cookie_value(c) for c in set_cookies(headers)] == [token]
        return status

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(one, range(REQUESTS)))


def start_session(app: Callable[..., Iterable[bytes]]) -> str:
    _, headers, _ = call_wsgi(app, "/start")
    (set_cookie,) = set_cookies(headers)
    return cookie_value(set_cookie)


def read(app: Callable[..., Iterable[bytes]], token: str) -> dict[str, Any]:
    _, _, body = call_wsgi(app, "/read", cookie=f"session={token}")
    result: dict[str, Any] = json.loads(body)
    return result


def test_concurrent_requests_adding_keys_lose_nothing(store: CountingStore) -> None:
    app = SessionMiddleware(wsgi_app(concurrent_view), store=store)
    token = start_session(app)
    assert run_concurrently(app, "/add", token) == [200] * REQUESTS
    data = read(app, token)["data"]
    assert data == {"base": "kept", **{f"k{i}": i for i in range(REQUESTS)}}
    assert store.conflicts > 0  # the replay path really ran


def test_concurrent_flashes_all_arrive(store: CountingStore) -> None:
    app = SessionMiddleware(wsgi_app(concurrent_view), store=store)
    token = start_session(app)
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        statuses = list(
            pool.map(
                lambda i: call_wsgi(app, f"/flash?i={i}", cookie=f"session={token}")[0], range(20)
            )
        )
    assert statuses == [200] * 20
    messages = [message for _category, message in read(app, token)["flashes"]]
    assert sorted(messages) == sorted(f"m{i}" for i in range(20))
    assert read(app, token)["flashes"] == []
    assert store.conflicts > 0


def test_concurrent_writes_to_one_key_keep_one_value_and_lose_nothing_else(
    store: CountingStore,
) -> None:
    app = SessionMiddleware(wsgi_app(concurrent_view), store=store)
    token = start_session(app)
    run_concurrently(app, "/same", token)
    data = read(app, token)["data"]
    assert data.pop("same") in range(REQUESTS)
    assert data == {"base": "kept", **{f"own{i}": i for i in range(REQUESTS)}}


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asgi_with_an_async_store_under_gather(store: CountingStore) -> None:
    async_store = SlowAsyncStore(store.inner)

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        session: Session = scope["session"]
        args = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        if "seed" in args:
            session["seed"] = True
        elif "i" in args:
            await asyncio.sleep(0.001)  # every request has loaded before any saves
            session[f"k{args['i']}"] = int(args["i"])
        body = json.dumps(session.to_dict()).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    transport = httpx.ASGITransport(ASGIMiddleware(app, store=async_store))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        await client.get("/?seed=1")
        responses = await asyncio.gather(*(client.get(f"/?i={i}") for i in range(REQUESTS)))
        assert [r.status_code for r in responses] == [200] * REQUESTS
        final = (await client.get("/")).json()
    assert final == {"seed": True, **{f"k{i}": i for i in range(REQUESTS)}}
    assert async_store.conflicts > 0


# -- replay, step by step, with the flow alone ---------------------------------------------


@pytest.fixture
def flow(clock: FakeClock) -> Flow:
    return Flow(SessionConfig(), clock=clock)


def seed(flow: Flow, store: Store) -> str:
    base = Session()
    base["keep"] = 1
    base["del_me"] = 2
    base["cart"] = [1]
    base["over"] = "base"
    base.flash("old1")
    base.flash("old2")
    outcome = run_sync(flow.commit(base), store)
    assert outcome.token is not None
    return str(outcome.token)


def test_replay_merges_this_requests_changes_onto_the_fresh_copy(
    flow: Flow, clock: FakeClock
) -> None:
    store = CountingStore(MemoryStore(clock=clock))
    token = seed(flow, store)
    mine = load_session(flow, store, token)
    theirs = load_session(flow, store, token)

    theirs["b"] = 2
    theirs["over"] = "B"
    their_csrf = theirs.csrf_token()
    theirs.flash("fromB")
    run_sync(flow.commit(theirs), store)

    mine["a"] = 1
    del mine["del_me"]
    mine["cart"].append(2)  # in place: only the diff against the loaded copy shows it
    assert mine.pop_flashes() == [("message", "old1"), ("message", "old2")]
    mine.flash("fromA")
    my_csrf = mine.csrf_token()
    mine.set_expiry(600)
    store.reset()
    outcome = run_sync(flow.commit(mine), store)
    assert store.conflicts == 1
    assert store.calls == {"save": 2, "load": 1}
    assert outcome.token == token

    final = load_session(flow, store, token)
    assert final.to_dict() == {"keep": 1, "cart": [1, 2], "over": "B", "b": 2, "a": 1}
    assert final.peek_flashes() == [("message", "fromB"), ("message", "fromA")]
    # Set-if-absent: the token the other request created first stays valid.
    assert final.check_csrf(their_csrf)
    assert not final.check_csrf(my_csrf)
    assert final.expiry == 600


def test_replay_keeps_my_csrf_when_the_other_writer_made_none(flow: Flow, clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    token = seed(flow, store)
    mine, theirs = load_session(flow, store, token), load_session(flow, store, token)
    theirs["b"] = 2
    run_sync(flow.commit(theirs), store)
    my_csrf = mine.csrf_token()
    run_sync(flow.commit(mine), store)
    final = load_session(flow, store, token)
    assert final.check_csrf(my_csrf)
    assert final["b"] == 2


def test_replay_of_clear_and_same_key_writes(flow: Flow, clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    token = seed(flow, store)
    mine, theirs = load_session(flow, store, token), load_session(flow, store, token)
    theirs["keep"] = "theirs"
    theirs["b"] = 2
    run_sync(flow.commit(theirs), store)
    mine.clear()
    mine["after_clear"] = True
    run_sync(flow.commit(mine), store)
    # The later commit's clear() wins over everything saved before it.
    assert load_session(flow, store, token).to_dict() == {"after_clear": True}


def test_unchanged_keys_take_the_other_writers_values(flow: Flow, clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    token = seed(flow, store)
    mine, theirs = load_session(flow, store, token), load_session(flow, store, token)
    theirs["cart"] = ["theirs"]
    del theirs["keep"]
    run_sync(flow.commit(theirs), store)
    mine["over"] = "mine"
    assert mine["cart"] == [1]  # read but not changed: no write-back of a stale copy
    run_sync(flow.commit(mine), store)
    final = load_session(flow, store, token).to_dict()
    assert final == {"del_me": 2, "cart": ["theirs"], "over": "mine"}


def test_replay_onto_a_deleted_session_does_not_resurrect_it(flow: Flow, clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    token = seed(flow, store)
    mine, theirs = load_session(flow, store, token), load_session(flow, store, token)
    theirs["b"] = 1
    run_sync(flow.commit(theirs), store)
    gone = load_session(flow, store, token)
    gone.logout()
    run_sync(flow.commit(gone), store)
    mine["a"] = 1
    outcome = run_sync(flow.commit(mine), store)
    assert outcome.clear
    assert len(store) == 0


class AlwaysConflicting(MemoryStore):
    def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        if expected_version is not None:
            raise Conflict("someone always saves first")
        return super().save(key, payload, expected_version=expected_version, ttl=ttl, meta=meta)

    def load(self, key: str) -> Entry | None:
        return super().load(key)


def test_endless_conflicts_end_in_a_clear_error(clock: FakeClock) -> None:
    flow = Flow(SessionConfig(conflict_retries=3), clock=clock)
    store = AlwaysConflicting(clock=clock)
    token = seed(flow, store)
    session = load_session(flow, store, token)
    session["x"] = 1
    with pytest.raises(SessionError, match="conflicting after 3 retries"):
        run_sync(flow.commit(session), store)
