"""Cookie header parsing and Set-Cookie rendering: pure functions, no framework imports."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from .config import IPNetwork, SessionConfig

__all__ = [
    "client_address",
    "delete_cookie",
    "get_cookie",
    "header_value",
    "is_secure",
    "set_cookie",
]

_EPOCH = "Thu, 01 Jan 1970 00:00:00 GMT"


def get_cookie(header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header, or None.

    With duplicates the first wins (the most specific path, as browsers send
    it). Malformed pairs are skipped, never an error.
    """
    if not header or name not in header:
        return None
    for part in header.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip() == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                value = value[1:-1]
            return value
    return None


def header_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The value of header ``name`` (lowercase bytes) in ASGI-style raw headers, or None.

    Several ``cookie`` headers (HTTP/2 may split them) are joined with ``; ``;
    for any other name the first wins.
    """
    found: str | None = None
    for key, value in headers:
        if key == name:
            if found is None:
                found = value.decode("latin-1")
                if name != b"cookie":
                    return found
            else:
                found = f"{found}; {value.decode('latin-1')}"
    return found


def _attributes(config: SessionConfig, secure: bool) -> str:
    parts = [f"; Path={config.cookie_path}"]
    if config.cookie_domain is not None:
        parts.append(f"; Domain={config.cookie_domain}")
    if secure:
        parts.append("; Secure")
    if config.cookie_httponly:
        parts.append("; HttpOnly")
    if config.cookie_samesite is not None:
        parts.append(f"; SameSite={config.cookie_samesite}")
    if config.cookie_partitioned and secure:
        parts.append("; Partitioned")
    return "".join(parts)


class CookieRenderer:
    """Set-Cookie rendering with the attribute suffix computed once per config."""

    __slots__ = ("_attrs", "_name")

    def __init__(self, config: SessionConfig) -> None:
        self._name = config.cookie_name
        self._attrs = (_attributes(config, False), _attributes(config, True))

    def set(self, value: str, max_age: int | None, secure: bool) -> str:
        age = f"; Max-Age={max_age}" if max_age is not None else ""
        return f"{self._name}={value}{age}{self._attrs[secure]}"

    def delete(self, secure: bool) -> str:
        return f"{self._name}=; Max-Age=0; Expires={_EPOCH}{self._attrs[secure]}"


def set_cookie(config: SessionConfig, value: str, max_age: int | None, secure: bool) -> str:
    """Render a ``Set-Cookie`` value for the session cookie."""
    return CookieRenderer(config).set(value, max_age, secure)


def delete_cookie(config: SessionConfig, secure: bool) -> str:
    """Render a ``Set-Cookie`` value that removes the session cookie."""
    return CookieRenderer(config).delete(secure)


def _trusted(addr: str | None, proxies: Sequence[IPNetwork]) -> bool:
    if not addr or not proxies:
        return False
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def is_secure(
    scheme: str, peer: str | None, forwarded_proto: str | None, proxies: Sequence[IPNetwork]
) -> bool:
    """Whether the request came over HTTPS; X-Forwarded-Proto counts only from a trusted proxy."""
    if forwarded_proto and _trusted(peer, proxies):
        return forwarded_proto.split(",")[0].strip().lower() in ("https", "wss")
    return scheme in ("https", "wss")


def client_address(
    peer: str | None, forwarded_for: str | None, proxies: Sequence[IPNetwork]
) -> str | None:
    """The client's IP: the peer, or the rightmost X-Forwarded-For hop not from a trusted proxy."""
    if not forwarded_for or not _trusted(peer, proxies):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop
    return hops[0] if hops else peer
