"""CookieStore: signed and encrypted cookie tokens, expiry, keys from the environment."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FakeClock
from websession import SessionConfigError, store_from_url
from websession.codecs import DecodeError, Payload, decode_payload, encode_payload
from websession.stores import CookieStore, Meta

KEY = "k" * 32
OLD_KEY = "o" * 32
PAYLOAD = encode_payload(Payload(d={"cart": (1, 2), "name": "ünï"}, c="csrf"))


@pytest.fixture(params=[False, True], ids=["signed", "encrypted"])
def store(request: pytest.FixtureRequest, clock: FakeClock) -> CookieStore:
    return CookieStore([KEY], encrypt=request.param, clock=clock)


def dump(store: CookieStore, clock: FakeClock, ttl: float = 600, user: str | None = "u1") -> str:
    return store.dump_token(PAYLOAD, ttl=ttl, meta=Meta(clock() - 100, clock(), user))


def test_round_trip(store: CookieStore, clock: FakeClock) -> None:
    token = dump(store, clock)
    assert token.isascii()
    entry = store.load_token(token)
    assert entry is not None
    assert entry.payload == PAYLOAD
    assert decode_payload(entry.payload).d == {"cart": (1, 2), "name": "ünï"}
    assert entry.created == clock() - 100
    assert entry.last_seen == clock()
    assert entry.expires == clock() + 600
    assert entry.user_id == "u1"


def test_token_is_cookie_safe(store: CookieStore, clock: FakeClock) -> None:
    token = dump(store, clock)
    # RFC 6265 cookie-octet: visible ASCII except DQUOTE, comma, semicolon, backslash.
    assert all(0x21 <= ord(c) <= 0x7E and c not in '",;\\' for c in token)


def test_signed_token_is_readable_encrypted_is_not(clock: FakeClock) -> None:
    signed = CookieStore([KEY], clock=clock)
    encrypted = CookieStore([KEY], encrypt=True, clock=clock)
    assert signed.encrypted is False
    assert encrypted.encrypted is True
    for store, visible in ((signed, True), (encrypted, False)):
        token = store.dump_token(b'{"d":{"k":"plaintext-marker"}}', ttl=60, meta=Meta(0, 0))
        body = token.split(".")[0]
        decoded = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        assert (b"plaintext-marker" in decoded) is visible


def test_expired_token_is_none(store: CookieStore, clock: FakeClock) -> None:
    token = dump(store, clock, ttl=60)
    clock.advance(59)
    assert store.load_token(token) is not None
    clock.advance(1)
    assert store.load_token(token) is None


def test_keys_rotate(clock: FakeClock) -> None:
    for encrypt in (False, True):
        old = CookieStore([OLD_KEY], encrypt=encrypt, clock=clock)
        rotated = CookieStore([KEY, OLD_KEY], encrypt=encrypt, clock=clock)
        new_only = CookieStore([KEY], encrypt=encrypt, clock=clock)
        old_token = dump(old, clock)
        assert rotated.load_token(old_token) is not None
        new_token = dump(rotated, clock)
        assert new_only.load_token(new_token) is not None
        with pytest.raises(DecodeError):
            old.load_token(new_token)
        with pytest.raises(DecodeError):
            new_only.load_token(old_token)


def test_signed_and_encrypted_tokens_do_not_cross(clock: FakeClock) -> None:
    signed = CookieStore([KEY], clock=clock)
    encrypted = CookieStore([KEY], encrypt=True, clock=clock)
    with pytest.raises(DecodeError):
        encrypted.load_token(dump(signed, clock))
    with pytest.raises(DecodeError):
        signed.load_token(dump(encrypted, clock))


def test_salt_separates_apps(clock: FakeClock) -> None:
    token = dump(CookieStore([KEY], salt="app-a", clock=clock), clock)
    with pytest.raises(DecodeError):
        CookieStore([KEY], salt="app-b", clock=clock).load_token(token)


def test_every_tampered_character_fails(store: CookieStore, clock: FakeClock) -> None:
    token = dump(store, clock)
    for i, char in enumerate(token):
        forged = token[:i] + ("A" if char != "A" else "B") + token[i + 1 :]
        with pytest.raises(DecodeError):
            store.load_token(forged)


def test_every_truncation_fails(store: CookieStore, clock: FakeClock) -> None:
    token = dump(store, clock)
    for cut in range(len(token)):
        with pytest.raises(DecodeError):
            store.load_token(token[:cut])


@pytest.mark.parametrize(
    "token", ["", ".", "a.b", "ééé", "\x00", "session=abc", "x" * 5000, "A" * 43 + ".AAAA"]
)
def test_garbage_tokens_fail(store: CookieStore, token: str) -> None:
    with pytest.raises(DecodeError):
        store.load_token(token)


def test_foreign_body_with_a_valid_signature_fails(clock: FakeClock) -> None:
    # Correctly signed, but not a websession cookie body: still only a DecodeError.
    from websession.codecs import Signer

    signer = Signer([KEY], salt="websession.cookie")
    store = CookieStore([KEY], clock=clock)
    for body in (b"", b"[]", b"{}", b"[2,0,0,0,null,{}]", b"[1,0,0]", b'"x"', b"\xff"):
        with pytest.raises(DecodeError):
            store.load_token(signer.sign(body).decode())


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_property_random_text_raises_only_decode_error(token: str) -> None:
    for encrypt in (False, True):
        store = CookieStore([KEY], encrypt=encrypt)
        with pytest.raises(DecodeError):
            store.load_token(token)


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=200), st.sampled_from([False, True]))
def test_property_random_base64_raises_only_decode_error(blob: bytes, encrypt: bool) -> None:
    store = CookieStore([KEY], encrypt=encrypt)
    body = base64.urlsafe_b64encode(blob).decode().rstrip("=")
    for token in (body, body + "." + body[:43]):
        with pytest.raises(DecodeError):
            store.load_token(token)


@settings(max_examples=200)
@given(st.data())
def test_property_mangled_real_tokens_raise_only_decode_error(data: st.DataObject) -> None:
    encrypt = data.draw(st.booleans())
    # A fixed clock keeps the token length fixed between hypothesis runs.
    store = CookieStore([KEY], encrypt=encrypt, clock=FakeClock())
    token = store.dump_token(PAYLOAD, ttl=60, meta=Meta(0, 0))
    i = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.text(max_size=3))
    mangled = token[:i] + replacement + token[i + 1 :]
    try:
        entry = store.load_token(mangled)
    except DecodeError:
        return
    # Only a no-op edit may survive.
    assert mangled == token
    assert entry is not None


# -- keys and configuration --------------------------------------------------------------------


def test_key_from_the_environment(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    monkeypatch.setenv("WEBSESSION_SECRET_KEY", f" {KEY} , {OLD_KEY} ")
    from_env = CookieStore(clock=clock)
    assert CookieStore([KEY], clock=clock).load_token(dump(from_env, clock)) is not None
    assert from_env.load_token(dump(CookieStore([OLD_KEY], clock=clock), clock)) is not None


def test_store_from_url_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSESSION_SECRET_KEY", KEY)
    signed = store_from_url("cookie://")
    assert isinstance(signed, CookieStore)
    assert signed.encrypted is False
    assert store_from_url("cookie://?encrypt=true").encrypted is True


@pytest.mark.parametrize("env", [None, "", " , ,"])
def test_missing_key_is_a_config_error(monkeypatch: pytest.MonkeyPatch, env: str | None) -> None:
    if env is None:
        monkeypatch.delenv("WEBSESSION_SECRET_KEY", raising=False)
    else:
        monkeypatch.setenv("WEBSESSION_SECRET_KEY", env)
    with pytest.raises(SessionConfigError, match="WEBSESSION_SECRET_KEY"):
        CookieStore()


@pytest.mark.parametrize("encrypt", [False, True])
@pytest.mark.parametrize("keys", ["short", [], ["k" * 32, "short"], [""]])
def test_short_or_empty_keys_are_refused(keys: str | list[str], encrypt: bool) -> None:
    with pytest.raises(SessionConfigError):
        CookieStore(keys, encrypt=encrypt)


def test_short_key_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSESSION_SECRET_KEY", "short")
    with pytest.raises(SessionConfigError):
        CookieStore()


@pytest.mark.parametrize("encrypt", [False, True])
def test_repr_hides_the_keys(encrypt: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    store = CookieStore([KEY, OLD_KEY], encrypt=encrypt)
    text = repr(store)
    assert KEY not in text
    assert OLD_KEY not in text
    assert "kkkk" not in text
    monkeypatch.setenv("WEBSESSION_SECRET_KEY", KEY)
    assert KEY not in repr(CookieStore(encrypt=encrypt))


def test_store_is_client_side_and_limits_cookie_size() -> None:
    store = CookieStore([KEY])
    assert store.client_side is True
    assert store.max_cookie_size == 4093
