"""Session: the mapping, lazy loading, change log, flashes, CSRF, login/logout and expiry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from conftest import FakeClock
from websession import Session, SessionConfig, SessionConfigError, SessionError, UnserializableValue
from websession.flow import Flow, run_sync
from websession.stores import MemoryStore


class Loader:
    """A loader that counts its calls and fills the session with ``data``."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.calls = 0
        self.data = data or {}

    def __call__(self, session: Session) -> None:
        self.calls += 1
        for key, value in self.data.items():
            session._data[key] = value


class Opaque:
    pass


# -- mapping -----------------------------------------------------------------------------------


def test_behaves_like_a_dict() -> None:
    s = Session()
    s["a"] = 1
    s.update({"b": [2], "c": {"d": 3}})
    assert s["a"] == 1
    assert s.get("missing") is None
    assert s.get("missing", "x") == "x"
    assert "b" in s
    assert "zz" not in s
    assert len(s) == 3
    assert sorted(s) == ["a", "b", "c"]
    assert dict(s.items()) == {"a": 1, "b": [2], "c": {"d": 3}}
    assert s == {"a": 1, "b": [2], "c": {"d": 3}}
    assert s.setdefault("a", 99) == 1
    assert s.setdefault("e", 5) == 5
    assert s["e"] == 5
    assert s.to_dict() == {"a": 1, "b": [2], "c": {"d": 3}, "e": 5}
    del s["a"]
    assert "a" not in s
    with pytest.raises(KeyError):
        _ = s["a"]
    with pytest.raises(KeyError):
        del s["a"]


def test_initial_data() -> None:
    data = {"x": 1}
    s = Session(data)
    assert s["x"] == 1
    s["y"] = 2
    assert data == {"x": 1}  # the caller's dict is not shared


def test_iterating_while_changing_does_not_break() -> None:
    s = Session({"a": 1, "b": 2})
    for key in s:
        del s[key]
    assert len(s) == 0


def test_pop_and_popitem() -> None:
    s = Session({"a": 1, "b": 2})
    assert s.pop("a") == 1
    assert s.pop("a", "default") == "default"
    with pytest.raises(KeyError):
        s.pop("a")
    assert s.popitem() == ("b", 2)
    assert len(s) == 0


@pytest.mark.parametrize("key", [1, None, b"bytes", ("t",), 1.5])
def test_non_str_keys_are_rejected(key: Any) -> None:
    s = Session()
    with pytest.raises(TypeError, match="str"):
        s[key] = "value"
    assert len(s) == 0
    assert s.changes == ()


def test_repr_does_not_load() -> None:
    loader = Loader({"secret": "value"})
    s = Session(loader=loader)
    assert "not loaded" in repr(s)
    assert loader.calls == 0
    s["a"] = 1
    assert "'a'" in repr(s)
    assert "value" not in repr(s)


# -- accessed / modified / is_new --------------------------------------------------------------


def test_fresh_session_flags() -> None:
    s = Session()
    assert (s.accessed, s.modified, s.is_new) == (False, False, True)


@pytest.mark.parametrize(
    "read",
    [
        lambda s: s.get("x"),
        lambda s: "x" in s,
        lambda s: len(s),
        lambda s: list(s),
        lambda s: s.to_dict(),
        lambda s: s.user_id,
        lambda s: s.peek_flashes(),
        lambda s: s.check_csrf("x"),
        lambda s: s.expiry,
    ],
)
def test_reading_marks_accessed_not_modified(read: Callable[[Session], Any]) -> None:
    s = Session({"x": 1})
    read(s)
    assert s.accessed is True
    assert s.modified is False


@pytest.mark.parametrize(
    "write",
    [
        lambda s: s.__setitem__("y", 2),
        lambda s: s.__delitem__("x"),
        lambda s: s.pop("x"),
        lambda s: s.clear(),
        lambda s: s.update(y=1),
        lambda s: s.setdefault("y", 1),
        lambda s: s.flash("hi"),
        lambda s: s.csrf_token(),
        lambda s: s.login("alice"),
        lambda s: s.logout(),
        lambda s: s.regenerate(),
        lambda s: s.set_expiry(60),
    ],
)
def test_writing_marks_modified(write: Callable[[Session], Any]) -> None:
    s = Session({"x": 1})
    write(s)
    assert s.accessed is True
    assert s.modified is True


def test_reads_that_change_nothing_leave_modified_false() -> None:
    s = Session({"x": 1})
    s.pop("missing", None)
    s.pop_flashes()
    s.setdefault("x", 2)
    assert s.modified is False


# -- lazy loading ------------------------------------------------------------------------------


def test_loader_never_runs_for_an_untouched_session() -> None:
    loader = Loader({"a": 1})
    s = Session(loader=loader)
    repr(s)
    _ = s.accessed, s.modified, s.is_new, s.changes, s.handle
    assert loader.calls == 0
    assert s.accessed is False


def test_loader_runs_once_on_first_touch() -> None:
    loader = Loader({"a": 1})
    s = Session(loader=loader)
    assert s["a"] == 1
    assert s.get("a") == 1
    s["b"] = 2
    assert len(s) == 2
    assert loader.calls == 1


def test_loader_runs_before_a_first_write() -> None:
    loader = Loader({"a": 1})
    s = Session(loader=loader)
    s["b"] = 2
    assert loader.calls == 1
    assert s.to_dict() == {"a": 1, "b": 2}


# -- change log --------------------------------------------------------------------------------


def test_change_log_records_sets_deletes_pops_and_clears() -> None:
    s = Session({"a": 1, "b": 2, "c": 3})
    s["a"] = 10
    del s["b"]
    s.pop("c")
    s.pop("missing", None)
    s["d"] = 4
    s.clear()
    assert s.changes == (
        ("set", "a"),
        ("delete", "b"),
        ("delete", "c"),
        ("set", "d"),
        ("clear", None),
    )
    assert len(s) == 0


def test_reads_leave_no_change_log() -> None:
    s = Session({"a": 1})
    _ = s["a"], s.get("b"), list(s)
    assert s.changes == ()


def test_clear_keeps_user_flashes_and_csrf() -> None:
    s = Session({"a": 1})
    s.login("alice")
    s.flash("hi")
    token = s.csrf_token()
    s.clear()
    assert len(s) == 0
    assert s.user_id == "alice"
    assert s.peek_flashes() == [("message", "hi")]
    assert s.csrf_token() == token


# -- unserialisable values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [Opaque(), {1: "int key"}, [1, Opaque()], {"deep": {"er": {Opaque()}}}, lambda: None],
    ids=repr,
)
def test_unserialisable_value_is_rejected_when_set_naming_the_key(value: Any) -> None:
    s = Session({"keep": 1})
    with pytest.raises(UnserializableValue, match=r"session\['cart'\]") as info:
        s["cart"] = value
    assert info.value.key == "cart"
    assert isinstance(info.value, SessionError)
    assert isinstance(info.value, TypeError)
    assert "cart" not in s
    assert s.changes == ()
    assert s.modified is False


@pytest.mark.parametrize(
    "value",
    [
        (1, 2),
        {1, 2},
        b"bytes",
        dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        float("nan"),
        {"nested": [(1, frozenset({"a"}))]},
    ],
    ids=repr,
)
def test_supported_values_are_accepted(value: Any) -> None:
    s = Session()
    s["k"] = value
    assert s["k"] is value


def test_unserialisable_flash_is_rejected() -> None:
    s = Session()
    with pytest.raises(UnserializableValue):
        s.flash(Opaque())
    assert s.peek_flashes() == []


# -- flashes -----------------------------------------------------------------------------------


def test_flash_peek_and_pop() -> None:
    s = Session()
    s.flash("saved")
    s.flash("careful", "warning")
    s.flash({"rich": ["message"]}, "info")
    assert s.peek_flashes() == [
        ("message", "saved"),
        ("warning", "careful"),
        ("info", {"rich": ["message"]}),
    ]
    assert s.peek_flashes() == s.peek_flashes()  # peeking leaves them in place
    assert s.peek_flashes("warning") == [("warning", "careful")]
    assert s.pop_flashes("warning") == [("warning", "careful")]
    assert s.peek_flashes("warning") == []
    assert s.pop_flashes() == [("message", "saved"), ("info", {"rich": ["message"]})]
    assert s.pop_flashes() == []
    assert s.peek_flashes() == []


def test_flashes_keep_order_within_a_category() -> None:
    s = Session()
    for i in range(5):
        s.flash(f"m{i}", "error" if i % 2 else "message")
    assert s.pop_flashes("error") == [("error", "m1"), ("error", "m3")]
    assert [m for _c, m in s.pop_flashes()] == ["m0", "m2", "m4"]


def test_peek_returns_a_copy() -> None:
    s = Session()
    s.flash("a")
    s.peek_flashes().clear()
    assert s.peek_flashes() == [("message", "a")]


@pytest.mark.parametrize("category", [None, 5, b"error", ("a",)])
def test_flash_category_must_be_str(category: Any) -> None:
    s = Session()
    with pytest.raises(TypeError):
        s.flash("msg", category)
    assert s.peek_flashes() == []


def test_flashes_are_not_data() -> None:
    s = Session()
    s.flash("hi")
    assert len(s) == 0
    assert "_flashes" not in s


# -- CSRF --------------------------------------------------------------------------------------


def test_csrf_token_is_created_once_and_stable() -> None:
    s = Session()
    token = s.csrf_token()
    assert isinstance(token, str)
    assert len(token) >= 43
    assert token.isascii()
    assert s.csrf_token() == token
    s["x"] = 1
    assert s.csrf_token() == token
    assert Session().csrf_token() != token


def test_csrf_token_is_not_in_the_data() -> None:
    s = Session()
    s.csrf_token()
    assert len(s) == 0


@pytest.mark.parametrize("wrong", ["", None, b"", "x", "é" * 43, "\u0000", b"\xff\xfe", 5, ["t"]])
def test_check_csrf_false_for_anything_but_the_token(wrong: Any) -> None:
    s = Session()
    token = s.csrf_token()
    assert s.check_csrf(wrong) is False
    assert s.check_csrf(token[:-1]) is False
    assert s.check_csrf(token + "x") is False


def test_check_csrf_true_for_the_token_as_str_or_bytes() -> None:
    s = Session()
    token = s.csrf_token()
    assert s.check_csrf(token) is True
    assert s.check_csrf(token.encode("ascii")) is True


def test_check_csrf_without_a_token_is_false_and_creates_none() -> None:
    s = Session()
    assert s.check_csrf("anything") is False
    assert s.check_csrf(None) is False
    assert s.modified is False
    assert s._csrf is None


# -- login / logout / regenerate ---------------------------------------------------------------


def test_login_binds_user_keeps_data_and_rotates() -> None:
    s = Session({"cart": [1, 2]})
    before = s.csrf_token()
    s.login("alice")
    assert s.user_id == "alice"
    assert s["cart"] == [1, 2]
    assert s.csrf_token() != before
    assert s._rotate is True
    assert s.modified is True


def test_login_with_an_int_user_id_stores_its_text() -> None:
    s = Session()
    s.login(42)
    assert s.user_id == "42"


@pytest.mark.parametrize("user_id", ["", None, True, False, 1.5, b"alice", ["alice"], object()])
def test_login_rejects_bad_user_ids(user_id: Any) -> None:
    s = Session()
    with pytest.raises(TypeError):
        s.login(user_id)
    assert s.user_id is None
    assert s._rotate is False


def test_logout_drops_everything() -> None:
    s = Session({"a": 1})
    s.login("alice")
    s.flash("hi")
    s.set_expiry(60)
    s.logout()
    assert len(s) == 0
    assert s.user_id is None
    assert s.peek_flashes() == []
    assert s.expiry is None
    assert s.browser_session is False
    assert s.is_new is True
    assert s._csrf is None
    assert s._is_empty()


def test_flash_after_logout_goes_into_a_new_session() -> None:
    s = Session({"a": 1})
    s.login("alice")
    s.logout()
    s.flash("signed out")
    assert s.peek_flashes() == [("message", "signed out")]
    assert s.user_id is None
    assert len(s) == 0


def test_regenerate_keeps_everything_but_asks_for_a_new_id() -> None:
    s = Session({"a": 1})
    s.login("alice")
    token = s.csrf_token()
    s.regenerate()
    assert s._rotate is True
    assert s["a"] == 1
    assert s.user_id == "alice"
    assert s.csrf_token() == token


# -- through the flow: what the store and the next request see ---------------------------------


class Roundtrip:
    """Runs requests through the sans-I/O flow against a memory store, carrying the token."""

    def __init__(self, store: MemoryStore, clock: FakeClock) -> None:
        self.store = store
        self.flow = Flow(SessionConfig(), clock=clock)
        self.token: str | None = None

    def request(self, handler: Callable[[Session], None]) -> Session:
        flow = self.flow
        session = Session(loader=lambda s: run_sync(flow.load(s), self.store))
        session._token = self.token
        handler(session)
        outcome = run_sync(flow.commit(session), self.store)
        if outcome.clear:
            self.token = None
        elif outcome.token is not None:
            self.token = outcome.token
        return session


@pytest.fixture
def browser(memory_store: MemoryStore, clock: FakeClock) -> Roundtrip:
    return Roundtrip(memory_store, clock)


def test_data_flashes_and_csrf_survive_into_the_next_request(browser: Roundtrip) -> None:
    seen: dict[str, Any] = {}

    def first(s: Session) -> None:
        s["when"] = dt.date(2024, 1, 1)
        s.flash("saved", "success")
        seen["csrf"] = s.csrf_token()

    def second(s: Session) -> None:
        seen["when"] = s["when"]
        seen["flashes"] = s.pop_flashes()
        seen["ok"] = s.check_csrf(seen["csrf"])

    browser.request(first)
    assert browser.request(second).is_new is False
    assert seen["when"] == dt.date(2024, 1, 1)
    assert seen["flashes"] == [("success", "saved")]
    assert seen["ok"] is True
    browser.request(lambda s: seen.__setitem__("after", s.peek_flashes()))
    assert seen["after"] == []


def test_untouched_request_never_loads(browser: Roundtrip, memory_store: MemoryStore) -> None:
    browser.request(lambda s: s.__setitem__("a", 1))
    calls = 0
    real_load = memory_store.load

    def counting_load(key: str) -> Any:
        nonlocal calls
        calls += 1
        return real_load(key)

    memory_store.load = counting_load  # type: ignore[method-assign]
    browser.request(lambda s: None)
    assert calls == 0
    browser.request(lambda s: s.get("a"))
    assert calls == 1


def test_login_rotates_the_id_and_the_old_id_is_dead(
    browser: Roundtrip, memory_store: MemoryStore
) -> None:
    browser.request(lambda s: s.__setitem__("cart", [1]))
    old_token = browser.token
    seen: dict[str, Any] = {}
    browser.request(lambda s: s.login("alice"))
    assert browser.token is not None
    assert browser.token != old_token
    assert len(memory_store) == 1
    browser.request(lambda s: seen.update(user=s.user_id, cart=s["cart"]))
    assert seen == {"user": "alice", "cart": [1]}
    # A request presenting the old id gets a fresh, empty session.
    browser.token = old_token
    stale = browser.request(lambda s: seen.update(old=s.to_dict(), old_user=s.user_id))
    assert seen["old"] == {}
    assert seen["old_user"] is None
    assert stale.is_new is True


def test_logout_then_flash_reaches_the_next_request_only(
    browser: Roundtrip, memory_store: MemoryStore
) -> None:
    def login(s: Session) -> None:
        s.login("alice")
        s["secret"] = 1

    browser.request(login)
    logged_in_token = browser.token

    def logout(s: Session) -> None:
        s.logout()
        s.flash("signed out")

    browser.request(logout)
    assert browser.token not in (None, logged_in_token)
    assert len(memory_store) == 1
    seen: dict[str, Any] = {}
    browser.request(lambda s: seen.update(f=s.pop_flashes(), d=s.to_dict(), u=s.user_id))
    assert seen == {"f": [("message", "signed out")], "d": {}, "u": None}
    browser.token = logged_in_token
    browser.request(lambda s: seen.update(old=s.to_dict(), old_user=s.user_id))
    assert (seen["old"], seen["old_user"]) == ({}, None)


def test_regenerate_changes_the_token(browser: Roundtrip) -> None:
    browser.request(lambda s: s.__setitem__("a", 1))
    before = browser.token
    browser.request(lambda s: s.regenerate())
    assert browser.token not in (None, before)
    seen: dict[str, Any] = {}
    browser.request(lambda s: seen.update(a=s["a"]))
    assert seen == {"a": 1}


def test_set_expiry_controls_the_cookie_max_age(
    memory_store: MemoryStore, clock: FakeClock
) -> None:
    flow = Flow(SessionConfig(), clock=clock)

    def max_age(handler: Callable[[Session], None]) -> int | None:
        s = Session()
        handler(s)
        return run_sync(flow.commit(s), memory_store).max_age  # type: ignore[no-any-return]

    def with_expiry(expiry: float | dt.timedelta | None) -> Callable[[Session], None]:
        def handler(s: Session) -> None:
            s["remember"] = True
            s.set_expiry(expiry)

        return handler

    assert max_age(lambda s: s.__setitem__("a", 1)) == 1800
    assert max_age(with_expiry(600)) == 600
    assert max_age(with_expiry(dt.timedelta(days=30))) == 12 * 3600  # the absolute cap
    assert max_age(with_expiry(None)) is None
    # An expiry alone is no data: an empty session is never stored.
    assert max_age(lambda s: s.set_expiry(600)) is None
    assert len(memory_store) == 4


# -- set_expiry --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(60, 60.0), (1.5, 1.5), (dt.timedelta(days=14), 14 * 86400.0)],
)
def test_set_expiry(value: Any, seconds: float) -> None:
    s = Session()
    s.set_expiry(value)
    assert s.expiry == seconds
    assert s.browser_session is False


def test_set_expiry_none_makes_a_browser_session_cookie() -> None:
    s = Session()
    s.set_expiry(60)
    s.set_expiry(None)
    assert s.expiry is None
    assert s.browser_session is True
    s.set_expiry(30)
    assert s.browser_session is False


@pytest.mark.parametrize(
    "value",
    [
        0,
        -5,
        dt.timedelta(0),
        dt.timedelta(seconds=-1),
        "soon",
        True,
        float("nan"),
        float("inf"),
        [],
    ],
    ids=repr,
)
def test_set_expiry_rejects_invalid_values(value: Any) -> None:
    s = Session()
    with pytest.raises(SessionConfigError, match=r"set_expiry"):
        s.set_expiry(value)
    assert s.expiry is None
    assert s.browser_session is False


def test_new_session_metadata_is_empty() -> None:
    s = Session()
    assert s.created is None
    assert s.last_seen is None
    assert s.expires is None
    assert s.handle is None
