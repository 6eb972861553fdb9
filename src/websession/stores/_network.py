"""What the network stores (Redis, memcached) share: option checks, host lists, the record.

Both keep one value per session: a fixed 46-byte header (a two-byte format
tag, version, created, last seen, expires, and the lengths + 1 of user id,
IP and user agent, 0 standing for None), those three strings, then the
payload. Each store has its own tag (``W2`` for Redis, ``M1`` for
memcached), so a value of one is never read as the other's.
"""

from __future__ import annotations

import struct

from ..errors import SessionConfigError
from ..urls import mask_url
from .base import Entry, Meta

#: Socket and connect timeout of a client built from a URL, in seconds.
DEFAULT_TIMEOUT = 2.0

#: Format tag, version, created, last seen, expires (all times epoch seconds), then
#: len + 1 (0 = None) of user id, IP, user agent.
HEADER = struct.Struct(">2sQdddIII")
HEADER_SIZE = HEADER.size
_unpack_header = HEADER.unpack_from


def seconds(kind: str, name: str, value: float | None) -> float:
    """A timeout option: ``DEFAULT_TIMEOUT`` when None, else seconds > 0."""
    if value is None:
        return DEFAULT_TIMEOUT
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise SessionConfigError(f"{kind} option {name}={value!r} must be seconds > 0")
    return float(value)


def host_port(kind: str, url: str, item: str, default_port: int) -> tuple[str, int]:
    """One ``host[:port]`` or ``[IPv6][:port]`` of a comma-separated host list."""
    host, port = item, ""
    if item.startswith("["):  # [IPv6]:port
        host, _, rest = item[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else rest
    elif ":" in item:
        host, _, port = item.rpartition(":")
    if not host or (port and not port.isdigit()) or (port and not 0 < int(port) < 65536):
        raise SessionConfigError(f"{kind}: bad host {item!r} in {mask_url(url)!r}")
    return host, int(port) if port else default_port


def _text(value: str | None) -> tuple[int, bytes]:
    """``value`` encoded, with its header length (len + 1; 0 stands for None)."""
    if value is None:
        return 0, b""
    data = value.encode()
    return len(data) + 1, data


def pack(tag: bytes, version: int, payload: bytes, meta: Meta, expires: float) -> bytes:
    """The record of one session, in the format ``tag`` names."""
    lu, user_id = _text(meta.user_id)
    li, ip = _text(meta.ip)
    la, agent = _text(meta.user_agent)
    header = HEADER.pack(
        tag, version, float(meta.created), float(meta.last_seen), expires, lu, li, la
    )
    return b"".join((header, user_id, ip, agent, payload))


def unpack(tag: bytes, value: bytes) -> Entry | None:
    """A record in the format ``tag`` names; None for anything else, or a damaged one."""
    if value[:2] != tag or len(value) < HEADER_SIZE:
        return None
    _tag, version, created, last_seen, expires, lu, li, la = _unpack_header(value)
    return entry_from(value, HEADER_SIZE, version, created, last_seen, expires, lu, li, la)


def entry_from(
    value: bytes,
    pos: int,
    version: int,
    created: float,
    last_seen: float,
    expires: float,
    lu: int,
    li: int,
    la: int,
) -> Entry | None:
    """The strings after a header that ends at ``pos``, then the payload; None if damaged."""
    # Straight-line on purpose: this runs on every request's load.
    user_id = ip = user_agent = None
    try:
        if lu:
            end = pos + lu - 1
            user_id = value[pos:end].decode()
            pos = end
        if li:
            end = pos + li - 1
            ip = value[pos:end].decode()
            pos = end
        if la:
            end = pos + la - 1
            user_agent = value[pos:end].decode()
            pos = end
    except UnicodeDecodeError:
        return None  # damaged: treated like an unknown session
    return Entry(value[pos:], version, created, last_seen, expires, user_id, ip, user_agent)
