"""Session ids: generation, validation by format, and hashing at rest.

An id is 256 bits from :mod:`secrets`, rendered as 43 URL-safe base64
characters. Stores never see it: they are handed :func:`hash_id` of it, so a
dump of a store does not contain a single live session id.
"""

from __future__ import annotations

import hashlib
import re
from binascii import b2a_base64
from secrets import token_bytes

__all__ = [
    "HANDLE_LENGTH",
    "ID_LENGTH",
    "handle_of",
    "hash_id",
    "is_valid_id",
    "legacy_key",
    "new_id",
]

ID_BYTES = 32
ID_LENGTH = 43
HANDLE_LENGTH = 12
_ID_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_KEY_RE = re.compile(r"[0-9a-f]{64}")
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def new_id() -> str:
    """A fresh random session id (256 bits, URL- and cookie-safe).

    ``secrets.token_urlsafe(32)`` spelled out: the same bytes from :mod:`secrets`
    and the same alphabet, without two layers of base64 wrappers on the path of
    every new session.
    """
    return b2a_base64(token_bytes(ID_BYTES), newline=False)[:ID_LENGTH].translate(_URLSAFE).decode()


#: ``is_id_shaped(value)``: the alphabet check of :func:`is_valid_id`, for callers
#: that have checked the length already.
is_id_shaped = _ID_RE.fullmatch


def is_valid_id(value: str) -> bool:
    """True when ``value`` has the exact shape of an id made by :func:`new_id`.

    Checked before any store call, so garbage never reaches a store.
    """
    return len(value) == ID_LENGTH and _ID_RE.fullmatch(value) is not None


def hash_id(session_id: str) -> str:
    """The key a store keeps for ``session_id``: SHA-256, 64 lowercase hex digits.

    A plain hash suffices (no salt, no pepper): the input is 256 random bits,
    so neither guessing nor a precomputed table can invert it.
    """
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


#: Longest old-framework cookie value looked up as a migrated session.
LEGACY_TOKEN_MAX = 256


def legacy_key(token: str) -> str:
    """The key ``websession migrate`` files a session under, for the old cookie value ``token``.

    Another framework's session key (Django's, Flask-Session's, starsessions')
    is hashed with a prefix of its own, so it can never be the key of a
    websession id: a migrated record is reachable only through the legacy
    lookup, which moves it to a fresh id.
    """
    return hashlib.sha256(
        b"websession-legacy:" + token.encode("utf-8", "surrogateescape")
    ).hexdigest()


def is_valid_key(key: str) -> bool:
    """True when ``key`` looks like a :func:`hash_id` result (used by stores that build paths)."""
    return len(key) == 64 and _KEY_RE.fullmatch(key) is not None


def handle_of(key: str) -> str:
    """The short handle shown for a stored session (a prefix of its hashed key)."""
    return key[:HANDLE_LENGTH]
