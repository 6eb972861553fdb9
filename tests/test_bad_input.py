"""Garbage in, through both drivers: an empty session and a security warning, never a 500.

Values that cannot be stored are the app's own mistake: they raise a clear
SessionError naming the key, at ``__setitem__`` where possible, else when the
response starts (out of WSGI ``start_response`` / ASGI ``send``, so the
server answers 500 and nothing is saved).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import (
    CountingStore,
    asgi_app,
    call_asgi,
    call_wsgi,
    cookie_attributes,
    cookie_value,
    path_of,
    set_cookies,
    wsgi_app,
)
from websession import PayloadTooLarge, SessionError, UnserializableValue
from websession.asgi import SessionMiddleware as ASGIMiddleware
from websession.ids import hash_id, is_valid_id, new_id
from websession.session import Session
from websession.stores import CookieStore, MemoryStore
from websession.stores.base import Meta
from websession.wsgi import SessionMiddleware as WSGIMiddleware

DRIVERS = ["wsgi", "asgi"]
SECRET = "a-test-secret-that-is-long-enough"
Call = Callable[..., tuple[int, list[tuple[str, str]], bytes]]
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def view(session: Session, env: dict[str, Any]) -> Any:
    path = path_of(env)
    if path == "/set":
        session["user"] = "ada"
        session["cart"] = [1, 2]
    elif path == "/big":
        session["small"] = "x"
        session["big"] = "y" * 5000
    elif path == "/bad":
        try:
            session["obj"] = object()
        except UnserializableValue as exc:
            return {"error": type(exc).__name__, "key": exc.key, "message": str(exc)}
    elif path == "/bad-nested":
        try:
            session["nested"] = {"ok": [1, {2: "int key"}]}
        except SessionError as exc:
            return {"error": type(exc).__name__, "message": str(exc)}
    elif path == "/bad-in-place":
        session["cart"].append(object())
    return {"data": session.to_dict(), "new": session.is_new}


def serve(driver: str, store: Any, **options: Any) -> Call:
    """A function that sends one request through ``driver`` and returns status, headers, body."""
    if driver == "wsgi":
        wsgi = WSGIMiddleware(wsgi_app(view), store=store, **options)
        return lambda path="/", **kw: call_wsgi(wsgi, path, **kw)
    asgi = ASGIMiddleware(asgi_app(view), store=store, **options)
    return lambda path="/", **kw: call_asgi(asgi, path, **kw)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def security_warnings() -> Iterator[list[logging.LogRecord]]:
    handler = Records()
    logger = logging.getLogger("websession.security")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


def body_of(response: tuple[int, list[tuple[str, str]], bytes]) -> Any:
    import json

    status, _, body = response
    assert status == 200
    return json.loads(body)


def assert_empty(response: tuple[int, list[tuple[str, str]], bytes]) -> None:
    assert body_of(response) == {"data": {}, "new": True}


def start(call: Call) -> str:
    _, headers, _ = call("/set")
    (set_cookie,) = set_cookies(headers)
    return cookie_value(set_cookie)


# -- cookies on a server store ------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
@FUZZ
@given(value=st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF), max_size=300))
def test_random_cookie_values_give_an_empty_session(driver: str, value: str) -> None:
    store = CountingStore(MemoryStore())
    call = serve(driver, store)
    with security_warnings() as warnings:
        response = call("/", cookie=f"session={value}")
    assert_empty(response)
    if not is_valid_id(value.strip().strip('"')):
        assert store.calls["load"] == 0
        if value.strip().strip('"') and ";" not in value:
            assert warnings
    assert store.calls["save"] == 0


@pytest.mark.parametrize("driver", DRIVERS)
@FUZZ
@given(header=st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_random_cookie_headers_never_fail(driver: str, header: str) -> None:
    call = serve(driver, MemoryStore())
    assert_empty(call("/", cookie=header))


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(
    "token",
    [
        "A" * 10_000,  # oversized, ~10 KB
        new_id()[:-1],  # truncated
        new_id() + "A",  # one too long
        new_id()[:-1] + "+",  # standard base64 alphabet, not URL-safe
        new_id()[:-1] + "/",
        new_id()[:-1] + "=",
        "../" * 14 + "x",  # a path, 43 characters
        new_id()[:-1] + "\xe9",  # latin-1
    ],
    ids=["10KB", "truncated", "too-long", "plus", "slash", "padding", "path", "latin1"],
)
def test_ids_of_the_wrong_shape_never_reach_the_store(driver: str, token: str) -> None:
    store = CountingStore(MemoryStore())
    call = serve(driver, store)
    with security_warnings() as warnings:
        assert_empty(call("/", cookie=f"session={token}"))
    assert store.calls == {}
    assert warnings
    assert all(token not in r.getMessage() for r in warnings)


@pytest.mark.parametrize("driver", DRIVERS)
def test_tampered_server_id_is_not_adopted(driver: str) -> None:
    store = CountingStore(MemoryStore())
    call = serve(driver, store)
    token = start(call)
    flipped = token[:10] + ("B" if token[10] != "B" else "C") + token[11:]
    assert_empty(call("/", cookie=f"session={flipped}"))
    _, headers, _ = call("/set", cookie=f"session={flipped}")
    assert cookie_value(set_cookies(headers)[0]) not in (flipped, token)


# -- corrupt or foreign payloads in a store -----------------------------------------------


def plant(store: MemoryStore, payload: bytes) -> str:
    token = new_id()
    store.save(
        hash_id(token), payload, expected_version=None, ttl=600, meta=Meta(store._clock(), 0)
    )
    return token


FOREIGN = [
    b"\xff\x00garbage",
    b"",
    b"null",
    b"[]",
    b'{"d": 5}',
    b'{"d": {"k": 1}, "f": "not a list"}',
    b'{"d": {"x": {"\\u0000t": ["b", "not base64!"]}}}',
    b'{"d": {"x": {"\\u0000t": ["dt", "yesterday"]}}}',
    b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.",  # a pickle: never unpickled
    b"[" * 5000 + b"]" * 5000,
    # Tagged values whose decoding once raised AttributeError / InvalidOperation / OverflowError.
    b'{"d": {"x": {"\\u0000t": ["o", 5]}}}',
    b'{"d": {"x": {"\\u0000t": ["u", 5]}}}',
    b'{"d": {"x": {"\\u0000t": ["dec", "not a number"]}}}',
    b'{"d": {"x": {"\\u0000t": ["td", [1000000000000, 0, 0]]}}}',
]


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("payload", FOREIGN)
def test_corrupt_or_foreign_store_payload_gives_an_empty_session(
    driver: str, payload: bytes
) -> None:
    store = MemoryStore()
    call = serve(driver, store)
    token = plant(store, payload)
    with security_warnings() as warnings:
        assert_empty(call("/", cookie=f"session={token}"))
    assert warnings
    # Writing then starts a new session under a new id; the corrupt record is never reused.
    _, headers, _ = call("/set", cookie=f"session={token}")
    assert cookie_value(set_cookies(headers)[0]) != token


@pytest.mark.parametrize("driver", DRIVERS)
@FUZZ
@given(payload=st.binary(max_size=200))
def test_random_store_payloads_never_fail(driver: str, payload: bytes) -> None:
    store = MemoryStore()
    token = plant(store, payload)
    status, _, _ = serve(driver, store)("/", cookie=f"session={token}")
    assert status == 200


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


@FUZZ
@given(
    tag=st.sampled_from(["t", "s", "fs", "b", "dt", "d", "tm", "td", "u", "dec", "o", "zz"]),
    value=json_values,
)
def test_foreign_tagged_values_never_fail(tag: str, value: Any) -> None:
    import json

    store = MemoryStore()
    payload = json.dumps({"d": {"x": {"\x00t": [tag, value]}}}).encode()
    token = plant(store, payload)
    status, _, _ = serve("wsgi", store)("/", cookie=f"session={token}")
    assert status == 200


# -- cookie stores --------------------------------------------------------------------------


@pytest.fixture(params=[False, True], ids=["signed", "encrypted"])
def cookie_store(request: pytest.FixtureRequest) -> CookieStore:
    return CookieStore([SECRET], encrypt=request.param)


@pytest.mark.parametrize("driver", DRIVERS)
def test_cookie_store_round_trip(driver: str, cookie_store: CookieStore) -> None:
    call = serve(driver, cookie_store)
    token = start(call)
    assert body_of(call("/", cookie=f"session={token}")) == {
        "data": {"user": "ada", "cart": [1, 2]},
        "new": False,
    }


@pytest.mark.parametrize("driver", DRIVERS)
@FUZZ
@given(data=st.data())
def test_tampered_or_truncated_cookie_gives_an_empty_session(
    driver: str, cookie_store: CookieStore, data: st.DataObject
) -> None:
    call = serve(driver, cookie_store)
    token = start(call)
    # Drawn independently of the token's length, which varies between runs.
    cut = data.draw(st.integers(0, 10_000), label="cut") % len(token)
    where = data.draw(st.integers(0, 10_000), label="where") % len(token)
    char = data.draw(st.sampled_from("AZaz09-_.~"), label="char")
    for bad in (token[:cut], token[:where] + char + token[where + 1 :]):
        with security_warnings() as warnings:
            response = call("/", cookie=f"session={bad}")
        result = body_of(response)
        if result["new"]:
            assert result == {"data": {}, "new": True}
            assert warnings or not bad
        else:
            # Only a change base64 ignores (padding bits of the last character) may pass.
            assert result["data"] == {"user": "ada", "cart": [1, 2]}


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(
    "value", ["x" * 10_000, "not.a.signature", "é" * 20, "....", "a.b.c.d"], ids=repr
)
def test_garbage_cookie_on_a_cookie_store(
    driver: str, cookie_store: CookieStore, value: str
) -> None:
    call = serve(driver, cookie_store)
    with security_warnings() as warnings:
        response = call("/", cookie=f"session={value}")
    assert_empty(response)
    assert warnings
    (set_cookie,) = set_cookies(response[1])
    assert cookie_attributes(set_cookie)["max-age"] == "0"


@pytest.mark.parametrize("driver", DRIVERS)
def test_cookie_signed_with_another_key_is_rejected(driver: str) -> None:
    token = start(serve(driver, CookieStore(["another-secret-of-enough-length"])))
    with security_warnings() as warnings:
        assert_empty(serve(driver, CookieStore([SECRET]))("/", cookie=f"session={token}"))
    assert warnings


@pytest.mark.parametrize("driver", DRIVERS)
def test_cookie_session_over_the_browser_limit_raises_naming_the_key(
    driver: str, cookie_store: CookieStore
) -> None:
    call = serve(driver, cookie_store)
    token = start(call)
    # Surfaces when the response starts: out of start_response (WSGI) or send (ASGI).
    # The app's server turns it into a 500; no Set-Cookie left, the old cookie still works.
    with pytest.raises(PayloadTooLarge) as caught:
        call("/big", cookie=f"session={token}")
    assert caught.value.largest_key == "big"
    assert caught.value.limit == 4093
    assert "session['big']" in str(caught.value)
    assert isinstance(caught.value, SessionError)
    assert body_of(call("/", cookie=f"session={token}"))["data"] == {
        "user": "ada",
        "cart": [1, 2],
    }


@pytest.mark.parametrize("driver", DRIVERS)
def test_server_session_over_max_payload_bytes_raises_naming_the_key(driver: str) -> None:
    store = MemoryStore()
    call = serve(driver, store, max_payload_bytes=1000)
    with pytest.raises(PayloadTooLarge, match=r"session\['big'\]"):
        call("/big")
    assert len(store) == 0


# -- values that cannot be stored -------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_unserializable_value_is_refused_at_setitem(driver: str) -> None:
    store = MemoryStore()
    result = body_of(serve(driver, store)("/bad"))
    assert result["error"] == "UnserializableValue"
    assert result["key"] == "obj"
    assert "session['obj'] holds a object" in result["message"]
    assert len(store) == 0


@pytest.mark.parametrize("driver", DRIVERS)
def test_unserializable_nested_value_is_refused_at_setitem(driver: str) -> None:
    result = body_of(serve(driver, MemoryStore())("/bad-nested"))
    assert result["error"] == "UnserializableValue"
    assert "session['nested']" in result["message"]


@pytest.mark.parametrize("driver", DRIVERS)
def test_unserializable_in_place_change_raises_at_commit_naming_the_key(driver: str) -> None:
    store = MemoryStore()
    call = serve(driver, store)
    token = start(call)
    with pytest.raises(UnserializableValue, match=r"session\['cart'\]"):
        call("/bad-in-place", cookie=f"session={token}")
    assert body_of(call("/", cookie=f"session={token}"))["data"]["cart"] == [1, 2]


# -- a record deleted mid-request -------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_record_deleted_mid_request_is_not_resurrected(driver: str) -> None:
    store = MemoryStore()

    def deleting_view(session: Session, env: dict[str, Any]) -> Any:
        session.get("user")
        store.delete(session._key or "")  # a revocation lands while the view runs
        session["user"] = "mallory"
        return "ok"

    token = start(serve(driver, store))
    app: Any
    if driver == "wsgi":
        app = WSGIMiddleware(wsgi_app(deleting_view), store=store)
        status, headers, _ = call_wsgi(app, "/", cookie=f"session={token}")
    else:
        app = ASGIMiddleware(asgi_app(deleting_view), store=store)
        status, headers, _ = call_asgi(app, "/", cookie=f"session={token}")
    assert status == 200
    (set_cookie,) = set_cookies(headers)
    assert cookie_attributes(set_cookie)["max-age"] == "0"
    assert len(store) == 0
