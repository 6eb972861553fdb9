"""The floor for a signed cookie session: msgspec JSON, URL-safe base64 and HMAC-SHA256, no more.

websession's cookie overhead is reported as a multiple of these figures: a
cookie session cannot do less work than verifying, decoding and (on write)
re-encoding and re-signing its payload.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import msgspec

from .common import PAYLOAD, SECRET

_KEY = hashlib.sha256(SECRET.encode()).digest()
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def _sign(data: dict[str, Any]) -> bytes:
    body = base64.urlsafe_b64encode(_encoder.encode(data)).rstrip(b"=")
    mac = hmac.new(_KEY, body, hashlib.sha256).digest()
    return body + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")


def _verify(token: bytes) -> dict[str, Any]:
    body, _, sig = token.rpartition(b".")
    expected = hmac.new(_KEY, body, hashlib.sha256).digest()
    if not hmac.compare_digest(base64.urlsafe_b64decode(sig + b"=" * (-len(sig) % 4)), expected):
        raise ValueError("bad signature")
    data: dict[str, Any] = _decoder.decode(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
    return data


TOKEN = _sign(PAYLOAD)


def read() -> None:
    """Verify and decode the cookie (what a read request must do)."""
    _verify(TOKEN)


def write() -> None:
    """Verify, decode, change one key, encode and sign (a write request's round trip)."""
    data = _verify(TOKEN)
    data["counter"] += 1
    _sign(data)


def references() -> dict[str, Callable[[], None]]:
    return {"read": read, "write": write}
