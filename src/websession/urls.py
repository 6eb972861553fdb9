"""store_from_url: build a store from a URL such as ``sqlite:///sessions.db``."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import SessionConfigError

__all__ = ["mask_url", "store_from_url"]

_TRUE = {"1", "true", "yes", "on"}
_NOT_SQL = frozenset({"memory", "file", "cookie", "redis", "rediss", "memcached"})


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return parts._replace(netloc=f"{userinfo}:***@{netloc[1]}").geturl()


def store_from_url(url: str, *, asynchronous: bool = False, **options: Any) -> Any:
    """Build the store a URL names; ``asynchronous=True`` returns its async form.

    ``memory://``, ``file:///var/lib/sessions``, ``sqlite:///sessions.db``
    (``?synchronous=full`` for full durability) and ``cookie://`` (signed;
    ``?encrypt=true`` for AES-GCM; keys from ``secret_keys=`` or the
    ``WEBSESSION_SECRET_KEY`` environment variable), ``redis://`` and
    ``rediss://`` (TLS; ``?prefix=app:`` sets the key prefix),
    ``redis+cluster://host:port[,host:port...]``,
    ``redis+sentinel://host:port[,host:port]/service_name[/db]``,
    ``memcached://host:port[,host:port...]``, and SQLAlchemy URLs
    (``postgresql+psycopg://``, ``mysql+pymysql://``, ``sqlite+pysqlite://``...;
    ``?table=`` and ``?schema=`` choose the table). Extra keyword arguments go
    to the store's constructor.
    """
    if not isinstance(url, str) or "://" not in url:
        raise SessionConfigError(f"{url!r} is not a store URL such as 'sqlite:///sessions.db'")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = dict(parse_qsl(parts.query))
    if scheme == "memory":
        from .stores.memory import AsyncMemoryStore, MemoryStore

        return AsyncMemoryStore(**options) if asynchronous else MemoryStore(**options)
    if scheme == "file":
        from .stores.file import AsyncFileStore, FileStore

        path = unquote(parts.netloc + parts.path)
        if not path:
            raise SessionConfigError(f"{url!r}: give a directory, e.g. file:///var/lib/sessions")
        store = FileStore(path, **options)
        return AsyncFileStore(store) if asynchronous else store
    if scheme == "sqlite":
        from .stores.sqlite import AsyncSQLiteStore, SQLiteStore

        path = unquote(parts.path)
        if parts.netloc:
            raise SessionConfigError(
                f"{url!r}: use three slashes for a relative path (sqlite:///sessions.db) "
                "or four for an absolute one (sqlite:////var/lib/sessions.db)"
            )
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise SessionConfigError(f"{url!r}: give a database file, e.g. sqlite:///sessions.db")
        if "synchronous" in query:
            options.setdefault("synchronous", query.pop("synchronous").upper())
        sqlite_store = SQLiteStore(path, **options)
        return AsyncSQLiteStore(sqlite_store) if asynchronous else sqlite_store
    if scheme in ("redis", "rediss", "redis+cluster", "redis+sentinel"):
        # The whole URL goes to the store: redis-py reads host, password, db
        # and its own query options from a redis:// URL; the store reads the
        # cluster and Sentinel forms (several hosts) itself.
        from .stores.redis import AsyncRedisStore, RedisStore

        return AsyncRedisStore(url, **options) if asynchronous else RedisStore(url, **options)
    if scheme == "memcached":
        from .stores.memcached import AsyncMemcachedStore, MemcachedStore

        if asynchronous:
            return AsyncMemcachedStore(url, **options)
        return MemcachedStore(url, **options)
    if scheme in ("postgres", "postgresql", "mysql", "mariadb") or (
        "+" in scheme and scheme.split("+", 1)[0] not in _NOT_SQL
    ):
        # Checked here, not with stores.sql, so other URLs never import SQLAlchemy.
        from .stores.sql import AsyncSQLStore, SQLStore

        return AsyncSQLStore(url, **options) if asynchronous else SQLStore(url, **options)
    if scheme == "cookie":
        from .stores.cookie import CookieStore

        encrypt = query.get("encrypt", "").lower() in _TRUE
        options.setdefault("encrypt", encrypt)
        return CookieStore(**options)
    raise SessionConfigError(
        f"unknown store URL scheme {scheme!r} in {mask_url(url)!r}; "
        "known: memory://, file://, sqlite://, cookie://, redis://, rediss://, "
        "redis+cluster://, redis+sentinel://, memcached://, and SQLAlchemy URLs such as "
        "postgresql+psycopg:// or mysql+pymysql://"
    )
