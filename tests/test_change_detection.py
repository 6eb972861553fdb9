"""Change detection on the hot path: what is saved when the app changes values in place."""

from __future__ import annotations

import datetime as dt
from typing import Any

from helpers import CountingStore, call_wsgi, cookie_value, set_cookies, wsgi_app
from websession.session import Session
from websession.stores import MemoryStore
from websession.wsgi import SessionMiddleware

SEEN: dict[str, Any] = {}


def _view(session: Session, env: dict[str, Any]) -> Any:
    path = env["PATH_INFO"]
    if path == "/seed":
        session["cart"] = ["book"]
        session["name"] = "Ada"
    elif path == "/read-scalar":
        SEEN["name"] = session["name"]
    elif path == "/read-list":
        SEEN["cart"] = list(session["cart"])
    elif path == "/append-tuple":
        session["cart"].append(("pen", 2))
    elif path == "/retained":
        cart: list[Any] = []
        session["cart"] = cart
        cart.append(dt.date(2026, 1, 2))  # changed after the set, through our own reference
    elif path == "/show":
        SEEN["cart"] = session["cart"]
    return "ok"


def _app() -> tuple[Any, CountingStore]:
    store = CountingStore(MemoryStore())
    return SessionMiddleware(wsgi_app(_view), store=store), store


def _seed(app: Any) -> str:
    _, headers, _ = call_wsgi(app, "/seed")
    (cookie,) = set_cookies(headers)
    return f"session={cookie_value(cookie)}"


def test_reading_values_saves_nothing() -> None:
    app, store = _app()
    cookie = _seed(app)
    store.calls.clear()
    for path in ("/read-scalar", "/read-list"):
        _, headers, _ = call_wsgi(app, path, cookie=cookie)
        assert set_cookies(headers) == []
    assert store.calls.get("save", 0) == 0
    assert SEEN["cart"] == ["book"]


def test_in_place_append_of_a_tuple_is_saved_as_a_tuple() -> None:
    app, store = _app()
    cookie = _seed(app)
    store.calls.clear()
    call_wsgi(app, "/append-tuple", cookie=cookie)
    assert store.calls.get("save", 0) == 1
    call_wsgi(app, "/show", cookie=cookie)
    assert SEEN["cart"] == ["book", ("pen", 2)]
    assert type(SEEN["cart"][1]) is tuple


def test_value_changed_through_a_retained_reference_keeps_its_types() -> None:
    app, _ = _app()
    cookie = _seed(app)
    call_wsgi(app, "/retained", cookie=cookie)
    call_wsgi(app, "/show", cookie=cookie)
    assert SEEN["cart"] == [dt.date(2026, 1, 2)]
    assert type(SEEN["cart"][0]) is dt.date
