"""Session stores. Each module holds one store; optional dependencies load only when used.

Import names are stable: ``from websession.stores import SQLiteStore``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import AsyncStore, AsyncUserIndex, Entry, InspectableStore, Meta, Store, UserIndex
from .cookie import CookieStore
from .memory import AsyncMemoryStore, MemoryStore

if TYPE_CHECKING:
    from .file import AsyncFileStore, FileStore
    from .layered import AsyncLayeredStore, LayeredStore
    from .memcached import AsyncMemcachedStore, MemcachedStore
    from .redis import AsyncRedisStore, RedisStore
    from .sql import AsyncSQLStore, SQLStore
    from .sqlite import AsyncSQLiteStore, SQLiteStore

__all__ = [
    "AsyncFileStore",
    "AsyncLayeredStore",
    "AsyncMemcachedStore",
    "AsyncMemoryStore",
    "AsyncRedisStore",
    "AsyncSQLStore",
    "AsyncSQLiteStore",
    "AsyncStore",
    "AsyncUserIndex",
    "CookieStore",
    "Entry",
    "FileStore",
    "InspectableStore",
    "LayeredStore",
    "MemcachedStore",
    "MemoryStore",
    "Meta",
    "RedisStore",
    "SQLStore",
    "SQLiteStore",
    "Store",
    "UserIndex",
]

_LAZY = {
    "FileStore": ".file",
    "AsyncFileStore": ".file",
    "SQLiteStore": ".sqlite",
    "AsyncSQLiteStore": ".sqlite",
    "RedisStore": ".redis",
    "AsyncRedisStore": ".redis",
    "MemcachedStore": ".memcached",
    "AsyncMemcachedStore": ".memcached",
    "SQLStore": ".sql",
    "AsyncSQLStore": ".sql",
    "LayeredStore": ".layered",
    "AsyncLayeredStore": ".layered",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'websession.stores' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value
