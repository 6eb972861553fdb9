"""CookieStore: the whole session in a signed or encrypted browser cookie.

Client-side storage needs no server, but it has limits the docs state plainly:
a cookie holds at most 4093 bytes (``name=value``), logout and revocation
cannot reach a copy of the cookie before it expires, and two concurrent
requests that both change the session race (the last response wins).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import msgspec

from ..codecs import DecodeError, Encryptor, Signer
from ..errors import SessionConfigError
from .base import Clock, Entry, Meta, default_clock

__all__ = ["CookieStore"]

_FORMAT = 1
_Body = tuple[int, float, float, float, str | None, msgspec.Raw]
_body_decoder = msgspec.json.Decoder(_Body)
_encoder = msgspec.json.Encoder()


class CookieStore:
    """Signed (HMAC-SHA256) or, with ``encrypt=True``, AES-GCM encrypted cookie sessions.

    ``secret_keys`` is a list, newest first: the newest signs or encrypts, all
    of them read, so keys rotate without logging anyone out. Without
    ``secret_keys`` the ``WEBSESSION_SECRET_KEY`` environment variable is read
    (comma-separated, newest first).
    """

    client_side = True
    inline = True
    max_payload_size: int | None = None
    #: Browsers keep cookies up to 4096 bytes; 4093 leaves room for the attributes' separators.
    max_cookie_size = 4093

    def __init__(
        self,
        secret_keys: str | bytes | Sequence[str | bytes] | None = None,
        *,
        encrypt: bool = False,
        salt: str = "websession.cookie",
        clock: Clock = default_clock,
    ) -> None:
        if secret_keys is None:
            env = os.environ.get("WEBSESSION_SECRET_KEY", "")
            secret_keys = [k.strip() for k in env.split(",") if k.strip()]
            if not secret_keys:
                raise SessionConfigError(
                    "CookieStore needs secret_keys=[...] or the WEBSESSION_SECRET_KEY environment "
                    "variable; create one with `websession keys new`"
                )
        self.encrypted = encrypt
        self._signer: Signer | None = None
        self._encryptor: Encryptor | None = None
        if encrypt:
            self._encryptor = Encryptor(secret_keys)
        else:
            self._signer = Signer(secret_keys, salt=salt)
        self._clock = clock

    def __repr__(self) -> str:
        return f"CookieStore(encrypt={self.encrypted}, <keys hidden>)"

    def dump_token(self, payload: bytes, *, ttl: float, meta: Meta) -> str:
        """The cookie value carrying ``payload`` and its metadata."""
        now = self._clock()
        body = _encoder.encode(
            (_FORMAT, meta.created, now, now + ttl, meta.user_id, msgspec.Raw(payload))
        )
        if self._encryptor is not None:
            return self._encryptor.encrypt(body).decode("ascii")
        assert self._signer is not None
        return self._signer.sign(body).decode("ascii")

    def load_token(self, token: str) -> Entry | None:
        """The entry in a cookie value; None when expired, DecodeError when forged or garbled."""
        try:
            raw = token.encode("ascii")
        except UnicodeEncodeError:
            raise DecodeError("cookie is not ASCII") from None
        if self._encryptor is not None:
            body = self._encryptor.decrypt(raw)
        else:
            assert self._signer is not None
            body = self._signer.unsign(raw)
        try:
            fmt, created, last_seen, expires, user_id, payload = _body_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise DecodeError(f"cookie body is malformed: {exc}") from None
        if fmt != _FORMAT:
            raise DecodeError(f"cookie format {fmt} is not supported")
        if expires <= self._clock():
            return None
        return Entry(bytes(payload), 0, created, last_seen, expires, user_id)
