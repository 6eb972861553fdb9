"""The Redis and PostgreSQL servers the network-store benchmarks share, and their cleanup.

The servers are the ones at ``WEBSESSION_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``) and ``WEBSESSION_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``). Other people's data may
live there, so a run writes only under names of its own: Redis keys under
``wsbench:<run id>:`` (removed at the end with SCAN + DEL on that prefix) and
PostgreSQL tables in a schema ``wsbench_<run id>`` created for the run (dropped
at the end; Django's table name is fixed, so a schema is the only way to give
it a table of its own). Nothing else on either server is read or changed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from typing import Any

from websession.urls import mask_url

from .common import Unavailable, bench_loop, close_loop

REDIS_URL = os.environ.get("WEBSESSION_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "WEBSESSION_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
#: Unique per run, so two runs (or a run and a test suite) never share a key or a table.
RUN_ID = f"{os.getpid()}{secrets.token_hex(3)}"
REDIS_PREFIX = f"wsbench:{RUN_ID}:"
PG_SCHEMA = f"wsbench_{RUN_ID}"
#: The table websession's SQL stores use inside the run's schema.
WS_TABLE = "ws_sessions"
#: Seconds to wait for a server that does not answer, so a missing one costs little.
CONNECT_TIMEOUT = 2

_closers: list[Callable[[], None]] = []
_async_closers: list[Callable[[], Any]] = []
#: What lives for the whole run (the raw references' clients), closed by cleanup().
_final_closers: list[Callable[[], None]] = []
_final_async_closers: list[Callable[[], Any]] = []
_status: dict[str, str | None] = {}


def redis_prefix(label: str) -> str:
    """A key prefix of this run's own for one case."""
    return f"{REDIS_PREFIX}{label}:"


def require(kind: str) -> None:
    """Raise :class:`Unavailable` naming the server when ``kind``'s server cannot be reached.

    Checked once per run; PostgreSQL also gets the run's schema here.
    """
    if kind not in _status:
        _status[kind] = _probe_redis() if kind == "redis" else _probe_postgres()
    reason = _status[kind]
    if reason is not None:
        raise Unavailable(reason)


def available(kind: str) -> bool:
    try:
        require(kind)
    except Unavailable:
        return False
    return True


def _probe_redis() -> str | None:
    try:
        import redis
    except ImportError as exc:
        return f"redis-py not installed ({exc})"
    client = redis.Redis.from_url(
        REDIS_URL, socket_timeout=CONNECT_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"no Redis server at WEBSESSION_REDIS_URL={mask_url(REDIS_URL)!r} ({exc})"
    finally:
        client.close()
    return None


def libpq_url(url: str = POSTGRES_URL) -> str:
    """The SQLAlchemy URL as libpq (psycopg) takes it: without the ``+driver`` part."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def postgres_params() -> dict[str, Any]:
    """Host, port, user, password and database of the PostgreSQL URL (for Django's settings)."""
    from sqlalchemy.engine import make_url

    url = make_url(POSTGRES_URL)
    return {
        "NAME": url.database or "postgres",
        "USER": url.username or "",
        "PASSWORD": url.password or "",
        "HOST": url.host or "",
        "PORT": str(url.port or ""),
    }


def pg_connect() -> Any:
    """A plain psycopg connection in autocommit mode (one statement, one transaction)."""
    import psycopg

    return psycopg.connect(libpq_url(), autocommit=True, connect_timeout=CONNECT_TIMEOUT)


def _probe_postgres() -> str | None:
    try:
        import psycopg
        import sqlalchemy  # noqa: F401
    except ImportError as exc:
        return f"psycopg and SQLAlchemy are needed for PostgreSQL ({exc})"
    try:
        with pg_connect() as conn:
            conn.execute(f'CREATE SCHEMA "{PG_SCHEMA}"')
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"no PostgreSQL at WEBSESSION_POSTGRES_URL={mask_url(POSTGRES_URL)!r} ({reason})"
    return None


def on_close(close: Callable[[], None], *, at_end: bool = False) -> None:
    """Run ``close`` after the current case (stores, engines and clients it opened).

    ``at_end``: only when the run ends (what every case shares).
    """
    (_final_closers if at_end else _closers).append(close)


def on_aclose(aclose: Callable[[], Any], *, at_end: bool = False) -> None:
    """Await ``aclose()`` on the benchmark's loop after the current case (async clients)."""
    (_final_async_closers if at_end else _async_closers).append(aclose)


def release() -> None:
    """Close what the cases measured so far opened, so connections never pile up on a server."""
    while _closers:
        _closers.pop()()
    while _async_closers:
        bench_loop().run_until_complete(_async_closers.pop()())


def server_facts(kinds: list[str]) -> dict[str, str]:
    """Versions and durability settings of the servers in use, for the report's header."""
    facts: dict[str, str] = {}
    if "redis" in kinds:
        if available("redis"):
            import redis

            client = redis.Redis.from_url(REDIS_URL, socket_timeout=CONNECT_TIMEOUT)
            info = client.info("server")
            persistence = client.info("persistence")
            client.close()
            facts["redis"] = (
                f"{mask_url(REDIS_URL)}, Redis {info.get('redis_version')}, "
                f"aof_enabled={persistence.get('aof_enabled')}, keys under {REDIS_PREFIX}*"
            )
        else:
            facts["redis"] = f"not measured: {_status['redis']}"
    if "postgresql" in kinds:
        if available("postgresql"):
            with pg_connect() as conn:
                version = conn.execute("SHOW server_version").fetchone()
                sync = conn.execute("SHOW synchronous_commit").fetchone()
                fsync = conn.execute("SHOW fsync").fetchone()
            facts["postgresql"] = (
                f"{mask_url(POSTGRES_URL)}, PostgreSQL {version[0] if version else '?'}, "
                f"synchronous_commit={sync[0] if sync else '?'}, fsync={fsync[0] if fsync else '?'}"
                f", every table in schema {PG_SCHEMA}"
            )
        else:
            facts["postgresql"] = f"not measured: {_status['postgresql']}"
    return facts


def cleanup() -> list[str]:
    """Remove everything this run wrote: its Redis keys and its PostgreSQL schema.

    Returns the problems met (printed by the runner), rather than hiding them.
    """
    problems: list[str] = []
    _closers.extend(_final_closers)
    _async_closers.extend(_final_async_closers)
    _final_closers.clear()
    _final_async_closers.clear()
    try:
        release()
    finally:
        # Even when closing a client failed, the run's keys and schema must go.
        _close_django()
        if _status.get("redis", "unchecked") is None:
            problems.extend(_drop_redis_keys())
        if _status.get("postgresql", "unchecked") is None:
            problems.extend(_drop_schema())
        close_loop()
    return problems


def _close_django() -> None:
    try:
        from django.conf import settings  # type: ignore[import-untyped]
    except ImportError:
        return
    if settings.configured:
        from django.db import connections  # type: ignore[import-untyped]

        connections.close_all()


def _drop_redis_keys() -> list[str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=10)
    removed = 0
    try:
        # Beaker's lock keys put its own prefix in front of the (prefixed) key.
        for pattern in (f"{REDIS_PREFIX}*", f"beaker_lock:{REDIS_PREFIX}*"):
            batch: list[bytes] = []
            for name in client.scan_iter(match=pattern, count=1000):
                batch.append(name)
                if len(batch) >= 1000:
                    removed += client.delete(*batch)
                    batch = []
            if batch:
                removed += client.delete(*batch)
    except redis.RedisError as exc:
        return [f"Redis keys under {REDIS_PREFIX} were not all removed: {exc}"]
    finally:
        client.close()
    return []


def _drop_schema() -> list[str]:
    import psycopg

    try:
        with pg_connect() as conn:
            # A peer's pooled connection that still holds a lock must not hang the run.
            conn.execute("SET lock_timeout = '15s'")
            conn.execute(f'DROP SCHEMA IF EXISTS "{PG_SCHEMA}" CASCADE')
    except psycopg.Error as exc:
        return [f"schema {PG_SCHEMA} was not dropped: {exc}"]
    return []
