"""Session ids: shape, uniqueness, validation and hashing at rest."""

from __future__ import annotations

import hashlib
import re
import string

from hypothesis import given
from hypothesis import strategies as st

from websession.ids import (
    HANDLE_LENGTH,
    ID_LENGTH,
    handle_of,
    hash_id,
    is_valid_id,
    is_valid_key,
    new_id,
)

ALPHABET = string.ascii_letters + string.digits + "-_"


def test_new_id_is_43_url_safe_characters() -> None:
    for _ in range(200):
        sid = new_id()
        assert len(sid) == ID_LENGTH == 43
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", sid)
        assert is_valid_id(sid)


def test_new_ids_are_unique() -> None:
    ids = {new_id() for _ in range(5000)}
    assert len(ids) == 5000


def test_new_ids_use_the_whole_alphabet() -> None:
    # 256 random bits per id: over many ids every base64url character turns up.
    seen = set("".join(new_id() for _ in range(500)))
    assert seen == set(ALPHABET)


@given(st.text(alphabet=ALPHABET).filter(lambda s: len(s) != ID_LENGTH))
def test_ids_of_the_wrong_length_are_invalid(value: str) -> None:
    assert not is_valid_id(value)


@given(
    st.text(alphabet=ALPHABET, min_size=ID_LENGTH - 1, max_size=ID_LENGTH - 1),
    st.characters().filter(lambda c: c not in ALPHABET),
    st.integers(0, ID_LENGTH - 1),
)
def test_ids_with_a_foreign_character_are_invalid(base: str, bad: str, at: int) -> None:
    value = base[:at] + bad + base[at:]
    assert len(value) == ID_LENGTH
    assert not is_valid_id(value)


@given(st.text(alphabet=ALPHABET, min_size=ID_LENGTH, max_size=ID_LENGTH))
def test_any_43_alphabet_characters_are_valid(value: str) -> None:
    assert is_valid_id(value)


@given(st.text())
def test_is_valid_id_never_raises(value: str) -> None:
    assert is_valid_id(value) in (True, False)


def test_path_tricks_are_not_ids() -> None:
    assert not is_valid_id("../" * 14 + "x")
    assert not is_valid_id("a" * 42 + "\n")
    assert not is_valid_id("a" * 42 + "=")
    assert not is_valid_id("")


def test_hash_id_is_64_lowercase_hex_sha256() -> None:
    sid = new_id()
    key = hash_id(sid)
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert key == hashlib.sha256(sid.encode()).hexdigest()
    assert is_valid_key(key)


def test_hash_id_is_deterministic_and_distinct() -> None:
    a, b = new_id(), new_id()
    assert hash_id(a) == hash_id(a)
    assert hash_id(a) != hash_id(b)
    assert a not in hash_id(a)


def test_is_valid_key_rejects_other_shapes() -> None:
    assert not is_valid_key("A" * 64)
    assert not is_valid_key("a" * 63)
    assert not is_valid_key("../" + "a" * 61)
    assert not is_valid_key(new_id())


def test_handle_is_a_prefix_of_the_key() -> None:
    key = hash_id(new_id())
    handle = handle_of(key)
    assert len(handle) == HANDLE_LENGTH
    assert key.startswith(handle)
