"""Payload codec, signing and encryption: exact round trips and DecodeError for anything foreign."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import math
import uuid
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from websession import SessionConfigError, SessionError, UnserializableValue, register_type
from websession.codecs import (
    TAG,
    DecodeError,
    Encryptor,
    Payload,
    Signer,
    decode_payload,
    decode_value,
    encode_payload,
    encode_value,
)

SECRET = "s" * 32
OTHER = "o" * 32

UTC = dt.UTC
PLUS_5_30 = dt.timezone(dt.timedelta(hours=5, minutes=30))


def round_trip(value: Any) -> Any:
    """The value as it comes back out of a stored payload."""
    raw = encode_payload(Payload(d={"k": value}))
    return decode_payload(raw).d["k"]


def same(a: Any, b: Any) -> bool:
    """Equal in value and in type, all the way down (so 1 != 1.0 and (1,) != [1])."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, Decimal) and a.is_nan():
        return str(a) == str(b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dt.datetime | dt.time):
        return bool(a == b and a.utcoffset() == b.utcoffset())
    return bool(a == b)


# -- exact round trips -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "ünïcødé ✓ \U0001f600 \x00 nul",
        "",
        0,
        -1,
        2**70,
        1.5,
        True,
        None,
        dt.datetime(2024, 2, 29, 13, 14, 15, 123456),
        dt.datetime(2024, 2, 29, 13, 14, 15, tzinfo=UTC),
        dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=PLUS_5_30),
        dt.date(2024, 2, 29),
        dt.time(23, 59, 59, 1),
        dt.time(8, 0, tzinfo=PLUS_5_30),
        dt.timedelta(days=-3, seconds=5, microseconds=7),
        dt.timedelta(0),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        Decimal("3.14159265358979323846264338327950288"),
        Decimal("-0"),
        Decimal("1E+30"),
        b"\x00\xffbinary",
        b"",
        (1, "two", 3.0),
        (),
        ((1, 2), [3, (4,)]),
        {1, 2, 3},
        set(),
        frozenset({"a", "b"}),
        {(1, 2), frozenset({3})},
        {"nested": {"list": [1, {"set": {1}}], "tuple": (b"x", dt.date(2020, 1, 1))}},
        {TAG: "only the tag key"},
        {TAG: {TAG: 1}},
        {TAG: ["t", [1, 2]]},
        [{TAG: ["b", "AAAA"]}],
        {TAG: 1, "other": 2},
        [[[[[]]]]],
    ],
    ids=repr,
)
def test_round_trip_keeps_type_and_value(value: Any) -> None:
    assert same(round_trip(value), value)


def test_bytearray_comes_back_as_bytes() -> None:
    assert round_trip(bytearray(b"abc")) == b"abc"
    assert type(round_trip(bytearray(b"abc"))) is bytes


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_floats_round_trip(value: float) -> None:
    # JSON has no NaN or Infinity; they must not silently come back as None.
    assert same(round_trip(value), value)
    assert same(round_trip([value]), [value])


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_special_decimals_round_trip(value: Decimal) -> None:
    assert same(round_trip(value), value)


def test_payload_fields_round_trip() -> None:
    payload = Payload(
        d={"a": (1, 2)},
        f=[("message", "hi"), ("error", {"when": dt.date(2024, 1, 1)})],
        c="csrf-token",
        x=3600.0,
        b=True,
    )
    back = decode_payload(encode_payload(payload))
    assert back.d == {"a": (1, 2)}
    assert back.f == [("message", "hi"), ("error", {"when": dt.date(2024, 1, 1)})]
    assert (back.c, back.x, back.b) == ("csrf-token", 3600.0, True)


def test_flashes_with_plain_messages_decode() -> None:
    raw = encode_payload(Payload(f=[("message", "saved"), ("warning", "careful")]))
    assert decode_payload(raw).f == [("message", "saved"), ("warning", "careful")]


def test_encode_value_and_decode_value_round_trip() -> None:
    value = {"when": dt.datetime(2024, 1, 1, tzinfo=UTC), "ids": {1, 2}}
    assert decode_value(encode_value("k", value)) == value


def test_empty_payload_round_trips() -> None:
    back = decode_payload(encode_payload(Payload()))
    assert (back.d, back.f, back.c, back.x, back.b) == ({}, [], None, None, False)


@pytest.mark.parametrize("size", [3, 16, 17, 40])
def test_long_and_short_containers_keep_a_typed_member(size: int) -> None:
    # Long plain containers are passed by a set-of-types check, short ones by a loop;
    # either way one typed member among plain ones comes back as its type.
    when = dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC)
    as_list = [*range(size), (1, 2)]
    as_dict = {f"k{i}": i for i in range(size)} | {"last": {1.5, 2.5}}
    nested = [{"n": i} for i in range(size)] + [{"when": when}]
    back = decode_payload(encode_payload(Payload(d={"l": as_list, "d": as_dict, "n": nested}))).d
    assert back == {"l": as_list, "d": as_dict, "n": nested}
    assert type(back["l"][-1]) is tuple
    assert type(back["d"]["last"]) is set
    assert back["n"][-1]["when"] == when


@pytest.mark.parametrize("size", [3, 17])
def test_a_non_str_key_is_refused_in_short_and_long_dicts(size: int) -> None:
    bad = {f"k{i}": i for i in range(size)} | {7: "x"}
    with pytest.raises(UnserializableValue, match="'bad'"):
        encode_payload(Payload(d={"bad": bad}))


def test_unknown_payload_fields_are_ignored() -> None:
    assert decode_payload(b'{"v":2,"d":{"a":1},"future":[1,2]}').d == {"a": 1}


# -- hypothesis: arbitrary nested data ---------------------------------------------------------

timezones = st.sampled_from([None, UTC, PLUS_5_30, dt.timezone(dt.timedelta(hours=-11))])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.binary(max_size=64),
    st.datetimes(timezones=timezones),
    st.dates(),
    st.times(timezones=timezones),
    st.timedeltas(),
    st.uuids(),
    st.decimals(allow_nan=False),
)
hashables = st.one_of(st.integers(), st.text(max_size=8), st.binary(max_size=8), st.dates())
session_keys = st.one_of(st.text(max_size=10), st.just(TAG))
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(session_keys, children, max_size=4),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(st.dictionaries(st.text(max_size=10), values, max_size=5))
def test_property_payload_round_trip(data: dict[str, Any]) -> None:
    back = decode_payload(encode_payload(Payload(d=data, f=[("c", v) for v in data.values()])))
    assert same(back.d, data)
    assert same([m for _c, m in back.f], list(data.values()))


@given(values)
def test_property_encode_value_is_deterministic(value: Any) -> None:
    assert encode_value("k", value) == encode_value("k", value)


@given(st.sets(st.text(), max_size=20), st.randoms(use_true_random=False))
def test_sets_of_strings_encode_identically_whatever_the_insertion_order(
    members: set[str], rng: Any
) -> None:
    ordered = list(members)
    shuffled = ordered[:]
    rng.shuffle(shuffled)
    a = encode_payload(Payload(d={"s": set(ordered)}))
    b = encode_payload(Payload(d={"s": set(shuffled)}))
    assert a == b


# -- unserialisable values ---------------------------------------------------------------------


class Opaque:
    pass


@pytest.mark.parametrize(
    "value",
    [Opaque(), object(), Fraction(1, 3), {1: "int key"}, [Opaque()], {"a": {"b": Opaque()}}],
    ids=repr,
)
def test_unserialisable_value_names_the_key(value: Any) -> None:
    with pytest.raises(UnserializableValue, match=r"session\['cart'\]") as info:
        encode_value("cart", value)
    assert info.value.key == "cart"
    assert isinstance(info.value, SessionError)
    assert isinstance(info.value, TypeError)


def test_encode_payload_names_the_bad_key() -> None:
    with pytest.raises(UnserializableValue, match="'bad'"):
        encode_payload(Payload(d={"good": 1, "bad": Opaque()}))


def test_self_referencing_list_is_refused_not_crashing() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(UnserializableValue):
        encode_value("loop", loop)


# -- decode_payload of garbage: DecodeError only -----------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"null",
        b"[]",
        b'"text"',
        b"{",
        b'{"d":[]}',
        b'{"d":{"a":1}',
        b'{"d":{1:2}}',
        b'{"f":[["c"]]}',
        b'{"f":[[1,"m"]]}',
        b'{"f":{"a":1}}',
        b'{"c":5}',
        b'{"x":"soon"}',
        b'{"b":"yes"}',
        b'{"v":"one"}',
        b"\xff\xfe\x00",
        b'{"d":{"k":{"\\u0000t":"not a pair"}}}',
        b'{"d":{"k":{"\\u0000t":[1,2,3]}}}',
        b'{"d":{"k":{"\\u0000t":[["unhashable"],1]}}}',
        b'{"d":{"k":{"\\u0000t":["o",5]}}}',
        b'{"d":{"k":{"\\u0000t":["o",[1]]}}}',
        b'{"d":{"k":{"\\u0000t":["t",5]}}}',
        b'{"d":{"k":{"\\u0000t":["s",[[1]]]}}}',
        b'{"d":{"k":{"\\u0000t":["b","***"]}}}',
        b'{"d":{"k":{"\\u0000t":["b",5]}}}',
        b'{"d":{"k":{"\\u0000t":["dt","yesterday"]}}}',
        b'{"d":{"k":{"\\u0000t":["dt",5]}}}',
        b'{"d":{"k":{"\\u0000t":["d",null]}}}',
        b'{"d":{"k":{"\\u0000t":["tm",[1]]}}}',
        b'{"d":{"k":{"\\u0000t":["td",[1]]}}}',
        b'{"d":{"k":{"\\u0000t":["td",["a","b","c"]]}}}',
        b'{"d":{"k":{"\\u0000t":["td",[1e300,0,0]]}}}',
        b'{"d":{"k":{"\\u0000t":["td",[999999999999,0,0]]}}}',
        b'{"d":{"k":{"\\u0000t":["u","not-a-uuid"]}}}',
        b'{"d":{"k":{"\\u0000t":["u",5]}}}',
        b'{"d":{"k":{"\\u0000t":["dec","abc"]}}}',
        b'{"d":{"k":{"\\u0000t":["dec",[1]]}}}',
        b'{"d":{"k":{"\\u0000t":["dec",{"a":1}]}}}',
        b'{"d":{"k":{"\\u0000t":["f","not a float"]}}}',
        b'{"f":[["c",{"\\u0000t":["u",1]}]]}',
        b'{"d":{"k":' + b"[" * 5000 + b"]" * 5000 + b',"z":{"\\u0000t":["t",[]]}}}',
        b'{"d":{"k":' + b'{"\\u0000t":["t",' * 3000 + b"1" + b"]}" * 3000 + b"}}",
    ],
)
def test_corrupt_payload_raises_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_payload(raw)


def test_decode_error_is_a_session_error_and_value_error() -> None:
    assert issubclass(DecodeError, SessionError)
    assert issubclass(DecodeError, ValueError)


def _only_decode_error(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_payload(raw)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_property_random_bytes_never_raise_anything_but_decode_error(raw: bytes) -> None:
    _only_decode_error(raw)


json_ish = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text()),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=4), st.just(TAG)), children, max_size=3),
    ),
    max_leaves=15,
)
tag_names = st.sampled_from(["o", "t", "s", "fs", "b", "dt", "d", "tm", "td", "u", "dec", "f", "?"])
tagged_garbage = st.builds(lambda tag, inner: {TAG: [tag, inner]}, tag_names, json_ish)


@settings(max_examples=400)
@given(st.dictionaries(st.text(max_size=4), st.one_of(json_ish, tagged_garbage), max_size=4))
def test_property_foreign_json_never_raises_anything_but_decode_error(data: Any) -> None:
    import msgspec

    _only_decode_error(msgspec.json.encode({"d": data, "f": [["c", data]]}))


@settings(max_examples=200)
@given(st.dictionaries(st.text(max_size=10), values, max_size=4), st.data())
def test_property_truncated_payload_never_raises_anything_but_decode_error(
    data: dict[str, Any], draw: st.DataObject
) -> None:
    raw = encode_payload(Payload(d=data))
    cut = draw.draw(st.integers(0, max(len(raw) - 1, 0)))
    _only_decode_error(raw[:cut])


# -- register_type -----------------------------------------------------------------------------


class Money:
    def __init__(self, cents: int, currency: str) -> None:
        self.cents = cents
        self.currency = currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (other.cents, other.currency) == (
            self.cents,
            self.currency,
        )

    def __hash__(self) -> int:
        return hash((self.cents, self.currency))


register_type(
    Money,
    "test.money",
    lambda m: {"cents": m.cents, "currency": m.currency, "when": dt.date(2024, 1, 1)},
    lambda d: Money(d["cents"], d["currency"]),
)


def test_registered_type_round_trips() -> None:
    value = {"price": Money(1999, "EUR"), "many": [Money(1, "USD")], "t": (Money(2, "GBP"),)}
    assert round_trip(value) == value
    assert type(round_trip(Money(5, "EUR"))) is Money


def test_registering_again_for_the_same_type_is_allowed() -> None:
    register_type(Money, "test.money", lambda m: [m.cents, m.currency], lambda d: Money(*d))
    try:
        assert round_trip(Money(7, "CHF")) == Money(7, "CHF")
    finally:
        register_type(
            Money,
            "test.money",
            lambda m: {"cents": m.cents, "currency": m.currency},
            lambda d: Money(d["cents"], d["currency"]),
        )


@pytest.mark.parametrize("tag", ["t", "s", "fs", "b", "dt", "d", "tm", "td", "u", "dec", "o", "f"])
def test_reserved_tags_are_refused(tag: str) -> None:
    with pytest.raises(SessionConfigError, match="reserved"):
        register_type(Opaque, tag, lambda v: None, lambda d: Opaque())


def test_tag_taken_by_another_type_is_refused() -> None:
    with pytest.raises(SessionConfigError, match="already registered"):
        register_type(Opaque, "test.money", lambda v: None, lambda d: Opaque())


# -- Signer ------------------------------------------------------------------------------------


def test_signer_round_trip() -> None:
    signer = Signer(SECRET)
    token = signer.sign(b"\x00payload\xff")
    assert isinstance(token, bytes)
    assert signer.unsign(token) == b"\x00payload\xff"


def test_signer_without_openssls_hmac_object_signs_the_same_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Where hmac.HMAC holds no OpenSSL object (its pure-Python path), the signer keeps
    # the wrapper itself: tokens must be identical either way, and still verify.
    with_openssl = Signer(SECRET)
    assert not isinstance(with_openssl._current, hmac.HMAC)  # CPython with OpenSSL
    python_hmac = hmac.new

    def pure_python(key: bytes, digestmod: Any) -> hmac.HMAC:
        made = python_hmac(key, digestmod=lambda data=b"": hashlib.sha256(data))
        assert getattr(made, "_hmac", None) is None  # the pure-Python path really ran
        return made

    monkeypatch.setattr(hmac, "new", pure_python)
    without = Signer(SECRET)
    assert isinstance(without._current, hmac.HMAC)
    token = without.sign(b"payload")
    assert token == with_openssl.sign(b"payload")
    assert without.unsign(token) == b"payload"
    assert with_openssl.unsign(token) == b"payload"


def test_signer_rotation_new_key_signs_old_key_still_verifies() -> None:
    old_token = Signer([OTHER]).sign(b"old")
    rotated = Signer([SECRET, OTHER])
    assert rotated.unsign(old_token) == b"old"
    new_token = rotated.sign(b"new")
    assert Signer([SECRET]).unsign(new_token) == b"new"
    with pytest.raises(DecodeError):
        Signer([OTHER]).unsign(new_token)


def test_signer_with_removed_key_fails() -> None:
    token = Signer([OTHER]).sign(b"data")
    with pytest.raises(DecodeError):
        Signer([SECRET]).unsign(token)


def test_signer_salt_separates_purposes() -> None:
    token = Signer(SECRET, salt="a").sign(b"data")
    with pytest.raises(DecodeError):
        Signer(SECRET, salt="b").unsign(token)


@pytest.mark.parametrize("secret", ["", "short", b"15-bytes-secret", [], ["ok" * 10, "short"]])
def test_short_or_missing_secrets_are_refused(secret: Any) -> None:
    with pytest.raises(SessionConfigError):
        Signer(secret)


def test_non_text_secret_is_refused() -> None:
    with pytest.raises(SessionConfigError):
        Signer([12345678901234567890])  # type: ignore[list-item]


def test_signer_repr_hides_the_secret() -> None:
    assert SECRET not in repr(Signer(SECRET))


def test_signer_tampering_fails() -> None:
    signer = Signer(SECRET)
    token = bytearray(signer.sign(b"some data to sign"))
    for i in range(len(token)):
        forged = bytearray(token)
        forged[i] = ord("A") if forged[i] != ord("A") else ord("B")
        with pytest.raises(DecodeError):
            signer.unsign(bytes(forged))


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_property_signer_rejects_random_tokens_with_decode_error(token: bytes) -> None:
    with pytest.raises(DecodeError):
        Signer(SECRET).unsign(token)


# -- Encryptor ---------------------------------------------------------------------------------


def test_encryptor_round_trip_and_ciphertext_hides_plaintext() -> None:
    enc = Encryptor(SECRET)
    token = enc.encrypt(b"secret payload")
    assert b"secret payload" not in base64.urlsafe_b64decode(token + b"=" * (-len(token) % 4))
    assert enc.decrypt(token) == b"secret payload"
    assert enc.encrypt(b"x") != enc.encrypt(b"x")  # fresh nonce every time


def test_encryptor_accepts_a_raw_32_byte_key() -> None:
    enc = Encryptor(bytes(range(32)))
    assert enc.decrypt(enc.encrypt(b"data")) == b"data"


def test_encryptor_aad_must_match() -> None:
    enc = Encryptor(SECRET)
    token = enc.encrypt(b"data", aad=b"cookie")
    assert enc.decrypt(token, aad=b"cookie") == b"data"
    with pytest.raises(DecodeError):
        enc.decrypt(token, aad=b"other")


def test_encryptor_key_rotation() -> None:
    old_token = Encryptor([OTHER]).encrypt(b"old")
    rotated = Encryptor([SECRET, OTHER])
    assert rotated.decrypt(old_token) == b"old"
    new_token = rotated.encrypt(b"new")
    assert Encryptor([SECRET]).decrypt(new_token) == b"new"
    with pytest.raises(DecodeError, match="unknown or retired key"):
        Encryptor([OTHER]).decrypt(new_token)


def test_encryptor_removed_key_fails() -> None:
    token = Encryptor([OTHER]).encrypt(b"data")
    with pytest.raises(DecodeError):
        Encryptor([SECRET]).decrypt(token)


def test_encryptor_tampering_any_byte_fails() -> None:
    enc = Encryptor(SECRET)
    token = enc.encrypt(b"the payload")
    blob = bytearray(base64.urlsafe_b64decode(token + b"=" * (-len(token) % 4)))
    for i in range(len(blob)):
        forged = bytearray(blob)
        forged[i] ^= 0x01
        with pytest.raises(DecodeError):
            enc.decrypt(base64.urlsafe_b64encode(bytes(forged)).rstrip(b"="))


def test_encryptor_truncated_tokens_fail() -> None:
    enc = Encryptor(SECRET)
    token = enc.encrypt(b"the payload")
    for cut in range(len(token)):
        with pytest.raises(DecodeError):
            enc.decrypt(token[:cut])


@pytest.mark.parametrize("secret", ["", "short", []])
def test_encryptor_short_keys_are_refused(secret: Any) -> None:
    with pytest.raises(SessionConfigError):
        Encryptor(secret)


def test_encryptor_repr_hides_the_key() -> None:
    assert SECRET not in repr(Encryptor(SECRET))


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_property_encryptor_rejects_random_base64_with_decode_error(blob: bytes) -> None:
    with pytest.raises(DecodeError):
        Encryptor(SECRET).decrypt(base64.urlsafe_b64encode(blob).rstrip(b"="))


@settings(max_examples=200)
@given(st.binary(max_size=120))
def test_property_encryptor_rejects_random_bytes_with_decode_error(token: bytes) -> None:
    with pytest.raises(DecodeError):
        Encryptor(SECRET).decrypt(token)


def test_an_unknown_type_tag_is_read_as_plain_data_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Another app sharing the session registered a type this one does not know.
    raw = b'{"d":{"k":{"\\u0000t":["someone-elses-type",[1,"two"]]},"n":3}}'
    with caplog.at_level(logging.WARNING, logger="websession"):
        payload = decode_payload(raw)
    assert payload.d == {"k": [1, "two"], "n": 3}
    assert any("someone-elses-type" in r.getMessage() for r in caplog.records)


def test_markup_round_trips_without_importing_flask() -> None:
    markupsafe = pytest.importorskip("markupsafe")
    value = markupsafe.Markup("<b>hi</b>")
    back = decode_payload(encode_payload(Payload(d={"m": value}))).d["m"]
    assert back == value
    assert type(back) is markupsafe.Markup
