"""Codecs: the payload format, signing and encryption.

The payload is msgspec JSON. Values JSON cannot represent exactly (tuple, set,
bytes, datetime, date, time, timedelta, UUID, Decimal, NaN and infinite floats,
and registered types)
are written as ``{"\\u0000t": [tag, value]}`` and come back as the same type.
pickle is never used, not even as a fallback: a payload is data, not code.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import math
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any

import itsdangerous
import msgspec

from .errors import SessionConfigError, SessionError, UnserializableValue

__all__ = [
    "FORMAT_VERSION",
    "DecodeError",
    "Encryptor",
    "Payload",
    "Signer",
    "decode_payload",
    "decode_value",
    "encode_payload",
    "encode_value",
    "register_type",
]

FORMAT_VERSION = 1
TAG = "\x00t"
_TAG_MARK = b'"\\u0000t"'
_PLAIN = frozenset({str, int, float, bool, type(None)})
MIN_SECRET_LENGTH = 16


class DecodeError(SessionError, ValueError):
    """A payload or cookie could not be decoded (tampered, truncated or foreign)."""


class Payload(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    """What a store keeps as the session's bytes: data plus session-level state.

    Metadata (created, last seen, expiry, user, client) lives outside, in the
    store's :class:`~websession.stores.Entry`. Unknown fields are ignored so a
    reader accepts payloads written by the next format version.
    """

    v: int = FORMAT_VERSION
    #: The user's data.
    d: dict[str, Any] = {}
    #: Flash messages as [category, message].
    f: list[tuple[str, Any]] = []
    #: CSRF token.
    c: str | None = None
    #: Per-session idle timeout set by set_expiry(), seconds.
    x: float | None = None
    #: True when set_expiry(None) asked for a browser-session cookie.
    b: bool = False
    #: When the current id was issued (epoch seconds), for renew_interval.
    i: float | None = None
    #: True on a record whose id was renewed: readable for a short grace, never saved.
    r: bool = False


_encoder = msgspec.json.Encoder()
_payload_decoder = msgspec.json.Decoder(Payload)
_any_decoder = msgspec.json.Decoder()

# tag -> (type, to_json, from_json) for types a user registers.
_custom: dict[str, tuple[type, Callable[[Any], Any], Callable[[Any], Any]]] = {}
_custom_by_type: dict[type, str] = {}
_warned_tags: set[str] = set()
_BUILTIN_TAGS = frozenset({"t", "s", "fs", "b", "dt", "d", "tm", "td", "u", "dec", "o", "f"})


def register_type(
    cls: type, tag: str, to_json: Callable[[Any], Any], from_json: Callable[[Any], Any]
) -> None:
    """Teach the payload codec an extra type (e.g. ``markupsafe.Markup``).

    ``to_json(value)`` returns JSON-compatible data, ``from_json(data)`` rebuilds
    the value. Tags are short strings stored in every payload holding the type,
    so choose them once and keep them.
    """
    if tag in _BUILTIN_TAGS:
        raise SessionConfigError(f"tag {tag!r} is reserved by websession; choose another")
    existing = _custom.get(tag)
    if existing is not None and existing[0] is not cls:
        raise SessionConfigError(f"tag {tag!r} is already registered for {existing[0]!r}")
    _custom[tag] = (cls, to_json, from_json)
    _custom_by_type[cls] = tag


def _tagged(tag: str, value: Any) -> dict[str, Any]:
    return {TAG: [tag, value]}


#: Types JSON carries exactly as they are: a value of one needs no tag and no check.
JSON_AS_IS = frozenset({str, int, bool, type(None)})
_ABSENT: Any = object()
_all_safe = JSON_AS_IS.issuperset
_all_str = frozenset({str}).issuperset


#: Containers longer than this are checked for plain members with a set of their
#: member types (C speed per member, but a set built per call); shorter ones, the
#: usual session value, with a Python loop, which costs less below ~16 members.
_SCAN_AT = 16


def _tag(value: Any) -> Any:
    """Return ``value`` in JSON-safe tagged form; the same object when nothing changes."""
    t = type(value)
    if t is dict:
        # A long flat dict of str/int/bool/None is passed at C speed.
        if (
            len(value) > _SCAN_AT
            and _all_safe(map(type, value.values()))
            and _all_str(map(type, value))
        ):
            return value
        out: dict[str, Any] | None = None
        for k, v in value.items():
            if type(k) is not str:
                raise TypeError(f"dict key {k!r} is not a str")
            if type(v) in JSON_AS_IS:
                continue
            new = _tag(v)
            if new is not v:
                if out is None:
                    out = dict(value)
                out[k] = new
        result = value if out is None else out
        if len(value) == 1 and TAG in value:
            return _tagged("o", result)
        return result
    if t is list:
        if len(value) > _SCAN_AT and _all_safe(map(type, value)):
            return value
        items: list[Any] | None = None
        for i, v in enumerate(value):
            if type(v) not in JSON_AS_IS:
                new = _tag(v)
                if new is not v:
                    if items is None:
                        items = list(value)
                    items[i] = new
        return value if items is None else items
    if t in _PLAIN:
        # JSON has no NaN or Infinity (msgspec writes null); tag them so they come back.
        if t is float and not math.isfinite(value):
            return _tagged("f", repr(value))
        return value
    tag = _custom_by_type.get(t)
    if tag is not None:
        return _tagged(tag, _tag(_custom[tag][1](value)))
    if t is tuple:
        return _tagged("t", [_tag(v) for v in value])
    if t is set or t is frozenset:
        members = [_tag(v) for v in value]
        # Sorted so equal sets encode to equal bytes in every process (str hashing
        # is randomised); mixed, unorderable members keep iteration order.
        with contextlib.suppress(TypeError, msgspec.EncodeError):
            members.sort(key=_encoder.encode)
        return _tagged("s" if t is set else "fs", members)
    if t is bytes or t is bytearray:
        return _tagged("b", base64.b64encode(value).decode("ascii"))
    if t is dt.datetime:
        return _tagged("dt", value.isoformat())
    if t is dt.date:
        return _tagged("d", value.isoformat())
    if t is dt.time:
        return _tagged("tm", value.isoformat())
    if t is dt.timedelta:
        return _tagged("td", [value.days, value.seconds, value.microseconds])
    if t is uuid.UUID:
        return _tagged("u", str(value))
    if t is Decimal:
        return _tagged("dec", str(value))
    raise TypeError(f"{t.__qualname__} is not supported")


def _untag(value: Any) -> Any:
    t = type(value)
    if t is dict:
        if len(value) == 1 and TAG in value:
            tag, inner = value[TAG]
            return _from_tag(tag, inner)
        for k, v in value.items():
            if type(v) is dict or type(v) is list:
                value[k] = _untag(v)
        return value
    if t is list:
        for i, v in enumerate(value):
            if type(v) is dict or type(v) is list:
                value[i] = _untag(v)
    return value


def _from_tag(tag: str, inner: Any) -> Any:
    if tag == "o":
        return {k: _untag(v) for k, v in inner.items()}
    if tag == "t":
        return tuple(_untag(v) for v in inner)
    if tag == "s":
        return {_untag(v) for v in inner}
    if tag == "fs":
        return frozenset(_untag(v) for v in inner)
    if tag == "b":
        return base64.b64decode(inner, validate=True)
    if tag == "dt":
        return dt.datetime.fromisoformat(inner)
    if tag == "d":
        return dt.date.fromisoformat(inner)
    if tag == "tm":
        return dt.time.fromisoformat(inner)
    if tag == "td":
        return dt.timedelta(days=inner[0], seconds=inner[1], microseconds=inner[2])
    if tag == "u":
        return uuid.UUID(inner)
    if tag == "dec":
        return Decimal(inner)
    if tag == "f":
        return float(inner)
    custom = _custom.get(tag)
    if custom is not None:
        return custom[2](_untag(inner))
    # A type another app on the same session registered (shared sessions): keep
    # the value as plain data rather than throw the whole session away.
    if tag not in _warned_tags:
        _warned_tags.add(tag)
        logging.getLogger("websession").warning(
            "session payload holds a value of unregistered type tag %r; it is read as plain "
            "data. Register the type with websession.register_type() in this app too.",
            tag,
        )
    return _untag(inner)


def encode_value(key: str, value: Any) -> bytes:
    """Encode one session value, raising :class:`UnserializableValue` naming ``key``."""
    try:
        return _encoder.encode(_tag(value))
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError, RecursionError) as exc:
        raise UnserializableValue(key, value, str(exc)) from None


def is_tagged(raw: bytes) -> bool:
    """Whether an encoded payload or value holds any type tag (datetime, set, ...).

    ``find``, not ``in``: ``bytes.__contains__`` first tries its argument as an
    int and raises and clears a TypeError on every call.
    """
    return raw.find(_TAG_MARK) >= 0


def decode_value(raw: bytes) -> Any:
    value = _any_decoder.decode(raw)
    return _untag(value) if is_tagged(raw) else value


def check_value(key: str, value: Any) -> None:
    """Raise :class:`UnserializableValue` now if ``value`` could not be stored later."""
    if type(value) in JSON_AS_IS:
        return
    try:
        _tag(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise UnserializableValue(key, value, str(exc)) from None


def encode_payload(payload: Payload, dirty: Iterable[str] | None = None) -> bytes:
    """Encode a payload; on failure name the offending key.

    ``dirty`` names the only keys that may hold values JSON cannot carry (set or
    handed out during this request, when the rest came from a tag-free payload);
    None walks every value.
    """
    try:
        d = payload.d
        if dirty is None or (len(d) == 1 and TAG in d):
            data = _tag(d)
        else:
            data = d
            for key in dirty:
                value = d.get(key, _ABSENT)
                if type(value) in JSON_AS_IS or value is _ABSENT:
                    continue
                tagged = _tag(value)
                if tagged is not value:
                    if data is d:
                        data = dict(d)
                    data[key] = tagged
        # Only the messages are tagged: a flash must stay a [category, message] pair.
        flashes = payload.f
        for i, (category, message) in enumerate(payload.f):
            tagged = _tag(message)
            if tagged is not message:
                if flashes is payload.f:
                    flashes = list(payload.f)
                flashes[i] = (category, tagged)
        if data is payload.d and flashes is payload.f:
            return _encoder.encode(payload)
        return _encoder.encode(msgspec.structs.replace(payload, d=data, f=flashes))
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError, RecursionError):
        for key, value in payload.d.items():
            encode_value(key, value)
        for _category, message in payload.f:
            encode_value("_flashes", message)
        raise


def decode_payload(raw: bytes, tagged: bool | None = None) -> Payload:
    """Decode a stored payload; :class:`DecodeError` if it is corrupt or foreign.

    ``tagged``: what :func:`is_tagged` answered for ``raw``, when the caller asked.
    """
    try:
        payload = _payload_decoder.decode(raw)
        if is_tagged(raw) if tagged is None else tagged:
            payload.d = _untag(payload.d)
            if payload.f:
                payload.f = [(c, _untag(m)) for c, m in payload.f]
    except (
        msgspec.DecodeError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        ArithmeticError,  # decimal.InvalidOperation, OverflowError from timedelta
        RecursionError,
    ) as exc:
        raise DecodeError(f"undecodable session payload: {exc}") from None
    return payload


def _secret_bytes(secret: str | bytes, what: str) -> bytes:
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes):
        raise SessionConfigError(f"{what} must be str or bytes")
    if len(secret) < MIN_SECRET_LENGTH:
        raise SessionConfigError(
            f"{what} is {len(secret)} bytes; use at least {MIN_SECRET_LENGTH} random bytes "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return secret


def _as_list(secrets: str | bytes | Sequence[str | bytes], what: str) -> list[bytes]:
    if isinstance(secrets, str | bytes):
        secrets = [secrets]
    keys = [_secret_bytes(s, what) for s in secrets]
    if not keys:
        raise SessionConfigError(f"{what}: give at least one secret")
    return keys


def b64_encode(data: bytes) -> bytes:
    """Standard base64, which is cookie-safe (RFC 6265 allows + / =) and needs no
    alphabet translation: the base64 module's URL-safe wrappers cost more than the work."""
    return binascii.b2a_base64(data, newline=False)


def b64_decode(data: bytes) -> bytes:
    """Inverse of :func:`b64_encode`; strict, so stray characters are a ValueError."""
    return binascii.a2b_base64(data, strict_mode=True)


def _keyed_sha256(key: bytes) -> Any:
    """A keyed HMAC-SHA256 state to ``copy()``, ``update()`` and ``digest()`` per token.

    ``hmac.HMAC`` wraps OpenSSL's HMAC object in Python methods that cost about
    a fifth of a 600-byte HMAC; where the wrapper holds that object (CPython
    with OpenSSL: ``_hmac``), it is used directly. It has the same three methods,
    so without it the wrapper serves as it is.
    """
    keyed = hmac.new(key, digestmod=hashlib.sha256)
    return getattr(keyed, "_hmac", None) or keyed


class Signer:
    """HMAC-SHA256 signing with a keyring: ``base64(data) "." key_id "." base64(mac)``.

    ``secrets`` is a list, newest first: the first signs, every one verifies,
    so a new key can be rolled out before the old one is dropped. Each token
    names its key (8 hex digits derived from the key, never the key), so
    verification picks the key at once; a removed key's tokens no longer
    verify. Keys are derived once, by :class:`itsdangerous.Signer` (its salted
    derivation), and the keyed HMAC state is kept, so a request pays for one
    HMAC. The MAC covers the base64 text and the key id, so nothing is decoded
    before it is verified.
    """

    __slots__ = ("_current", "_current_id", "_macs")

    def __init__(self, secrets: str | bytes | Sequence[str | bytes], *, salt: str = "websession"):
        keys = _as_list(secrets, "secret key")
        deriver = itsdangerous.Signer(keys, salt=salt, digest_method=hashlib.sha256, sep=".")
        self._macs: dict[bytes, Any] = {}
        order: list[bytes] = []
        for key in keys:
            derived = deriver.derive_key(key)
            key_id = hashlib.sha256(b"websession-signing-kid:" + derived).hexdigest()[:8].encode()
            self._macs.setdefault(key_id, _keyed_sha256(derived))
            order.append(key_id)
        self._current_id = order[0]
        self._current = self._macs[order[0]]

    def __repr__(self) -> str:
        return "Signer(<secrets hidden>)"

    @property
    def key_ids(self) -> list[str]:
        """The ids of the keys in the ring, newest first (safe to log)."""
        return [k.decode() for k in self._macs]

    def sign(self, data: bytes) -> bytes:
        signed = b64_encode(data) + b"." + self._current_id
        mac = self._current.copy()
        mac.update(signed)
        return signed + b"." + b64_encode(mac.digest())

    def unsign(self, token: bytes) -> bytes:
        signed, sep, signature = token.rpartition(b".")
        value, sep2, key_id = signed.rpartition(b".")
        if not sep or not sep2:
            raise DecodeError("bad signature: not a signed token")
        keyed = self._macs.get(key_id)
        if keyed is None:
            raise DecodeError("bad signature: unknown or retired key")
        try:
            expected = b64_decode(signature)
        except (binascii.Error, ValueError):
            raise DecodeError("bad signature: not base64") from None
        mac = keyed.copy()
        mac.update(signed)
        if not hmac.compare_digest(mac.digest(), expected):
            raise DecodeError("bad signature: MAC mismatch")
        try:
            # The MAC has vouched for these exact bytes (we wrote them), so the
            # lenient decoder is as safe here as the strict one, and twice as fast.
            return binascii.a2b_base64(value)
        except (binascii.Error, ValueError):
            raise DecodeError("bad signature: body is not base64") from None


class Encryptor:
    """AES-256-GCM encryption with key ids and rotation.

    ``keys`` is a list, newest first; each key is 32 bytes or a longer secret
    that is hashed to 32 bytes. A token carries the 4-byte id of its key, so
    decryption picks the right key at once; a removed key's tokens fail.
    """

    __slots__ = ("_by_id", "_current", "_current_id")

    def __init__(self, keys: str | bytes | Sequence[str | bytes]):
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:
            raise SessionConfigError(
                "encrypted cookies need the cryptography package: "
                "pip install 'websession[encryption]'"
            ) from None
        material = _as_list(keys, "encryption key")
        self._by_id: dict[bytes, Any] = {}
        ids: list[bytes] = []
        for secret in material:
            key = (
                secret
                if len(secret) == 32
                else hashlib.sha256(b"websession-aead:" + secret).digest()
            )
            key_id = hashlib.sha256(b"websession-kid:" + key).digest()[:4]
            self._by_id[key_id] = AESGCM(key)
            ids.append(key_id)
        self._current_id = ids[0]
        self._current = self._by_id[ids[0]]

    def __repr__(self) -> str:
        return "Encryptor(<keys hidden>)"

    def encrypt(self, data: bytes, aad: bytes = b"") -> bytes:
        nonce = os.urandom(12)
        sealed = self._current.encrypt(nonce, data, self._current_id + aad)
        return b64_encode(self._current_id + nonce + sealed)

    def decrypt(self, token: bytes, aad: bytes = b"") -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            blob = b64_decode(token)
        except (binascii.Error, ValueError):
            raise DecodeError("encrypted token is not base64") from None
        if len(blob) < 4 + 12 + 16:
            raise DecodeError("encrypted token is truncated")
        key = self._by_id.get(blob[:4])
        if key is None:
            raise DecodeError("encrypted token uses an unknown or retired key")
        try:
            return bytes(key.decrypt(blob[4:16], blob[16:], blob[:4] + aad))
        except InvalidTag:
            raise DecodeError("encrypted token failed authentication") from None


def _register_known_types() -> None:
    # markupsafe.Markup (Flask, Jinja) is common enough in sessions that every app
    # sharing one must read it the same way, whether or not it imported Flask.
    try:
        from markupsafe import Markup
    except ImportError:
        return
    register_type(Markup, "markup", str, Markup)


_register_known_types()
