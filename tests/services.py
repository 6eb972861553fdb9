"""The real services tests write to, and what to do when one is missing.

Redis is the server at ``WEBSESSION_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``),
PostgreSQL the one at ``WEBSESSION_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``). Tests only write keys under a
prefix of their own run (:func:`run_prefix`) and delete exactly those (:func:`delete_keys`,
never FLUSHDB).

A client library that is not installed, or a server that cannot be reached, skips the
test with a reason that names what is missing (the environment variable, for a server),
except under CI (``CI=true``), where it is a failure: there, a missing service must not
pass as a green run.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

from websession.urls import mask_url

CI = os.environ.get("CI") == "true"
REDIS_ENV = "WEBSESSION_REDIS_URL"
REDIS_URL = os.environ.get(REDIS_ENV, "redis://127.0.0.1:6379/0")
POSTGRES_ENV = "WEBSESSION_POSTGRES_URL"
POSTGRES_URL = os.environ.get(POSTGRES_ENV, "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def unavailable(message: str) -> NoReturn:
    """Skip with ``message``; fail with it under CI."""
    if CI:
        pytest.fail(message)
    pytest.skip(message, allow_module_level=True)


@contextlib.contextmanager
def requires(what: str, extra: str | None = None) -> Iterator[None]:
    """Imports in this block need ``what`` (from ``pip install 'websession[extra]'``).

    Without it the test (or the whole module, at module level) is skipped; under CI
    the ImportError is raised as it is.
    """
    try:
        yield
    except ImportError:
        if CI:
            raise
        hint = "" if extra is None else f" (pip install 'websession[{extra}]')"
        pytest.skip(f"{what} is not installed{hint}", allow_module_level=True)


def unreachable(what: str, env: str, url: str, exc: BaseException) -> NoReturn:
    """``what`` at ``url`` (from the environment variable ``env``) did not answer."""
    reason = (str(exc).splitlines() or [type(exc).__name__])[0]
    unavailable(
        f"no {what} at {env}={mask_url(url)!r} ({reason}); start one or "
        f"point {env} at a server the tests may write to"
    )


def run_prefix(name: str) -> str:
    """A Redis key prefix no other run and no other module uses."""
    return f"websession-test:{name}:{uuid.uuid4().hex}:"


def redis_client(**options: Any) -> Any:
    """A ``redis.Redis`` client to the test server that answered a PING.

    Skips (fails under CI) without redis-py or without a server. ``options`` go to
    ``Redis.from_url`` after 2-second timeouts. The caller closes the client.
    """
    with requires("redis-py", "redis"):
        import redis
    client = redis.Redis.from_url(
        REDIS_URL, **{"socket_timeout": 2, "socket_connect_timeout": 2, **options}
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        unreachable("Redis server", REDIS_ENV, REDIS_URL, exc)
    return client


@contextlib.contextmanager
def redis_scope(prefix: str, **options: Any) -> Iterator[Any]:
    """:func:`redis_client` for a block that writes under ``prefix``; those keys go at its end."""
    client = redis_client(**options)
    yield client
    delete_keys(client, prefix)
    client.close()


def delete_keys(client: Any, prefix: str) -> None:
    """Delete exactly the keys under ``prefix`` (SCAN, then DEL in batches)."""
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


async def adelete_keys(client: Any, prefix: str) -> None:
    """:func:`delete_keys` with a ``redis.asyncio`` client."""
    keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
    for start in range(0, len(keys), 500):
        await client.delete(*keys[start : start + 500])
