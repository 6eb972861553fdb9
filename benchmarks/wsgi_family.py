"""Plain WSGI: a bare WSGI callable, with websession's WSGI middleware and with Beaker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import network
from .common import (
    NETWORK_STORES,
    SECRET,
    STORES,
    Case,
    Family,
    WSGIApp,
    fill_session,
    needs,
    read_session,
    write_session,
    wsgi_builder,
    wsgi_caller,
    wsgi_environ,
)
from .websession_stores import make_store

_HEADERS = [("Content-Type", "text/plain; charset=utf-8")]


def plain_app(
    get_session: Callable[[dict[str, Any]], Any] | None,
    after_change: Callable[[Any], None] | None = None,
) -> WSGIApp:
    """The app under test: each path is one scenario; /check reports what a read found."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ["PATH_INFO"]
        body = b"ok"
        if get_session is not None and path != "/untouched":
            session = get_session(environ)
            if path == "/read":
                read_session(session)
            elif path == "/write":
                write_session(session)
            elif path == "/new":
                fill_session(session)
            elif path == "/check":
                body = str(read_session(session)).encode()
            if after_change is not None and path in ("/write", "/new"):
                after_change(session)
        start_response("200 OK", [*_HEADERS, ("Content-Length", str(len(body)))])
        return [body]

    return app


def _baseline(scenario: str) -> Callable[[], None]:
    return wsgi_caller(plain_app(None), wsgi_environ("/" + scenario))


def _websession(kind: str, workdir: Path) -> Callable[[str], Callable[[], None]]:
    from websession.wsgi import SessionMiddleware

    def build(scenario: str) -> Callable[[], None]:
        store = make_store(kind, workdir, f"wsgi-{scenario}")
        app = SessionMiddleware(
            plain_app(lambda environ: environ["websession.session"]), store=store
        )
        return wsgi_builder(app, f"websession {kind}")(scenario)

    return build


_BEAKER_TYPES = {
    "memory": "memory",
    "file": "file",
    "sqlite": "ext:database",
    "cookie": "cookie",
    "redis": "ext:redis",
    "postgresql": "ext:database",
}


def sync_reference(kind: str) -> Callable[[str], Callable[[], None] | None] | None:
    """The raw client work a sync websession case on a network store is judged against."""
    if kind not in NETWORK_STORES:
        return None

    def reference(scenario: str) -> Callable[[], None] | None:
        from .raw_network import references

        ref: Callable[[], None] | None = references(kind).request_reference(
            scenario, asynchronous=False
        )
        return ref

    return reference


def websession_case(family: str, kind: str, build: Callable[[str], Callable[[], None]]) -> Case:
    """websession on ``kind`` in a sync (WSGI) family, judged against the raw client work."""
    return Case(
        family, "websession", kind, build, is_websession=True, reference=sync_reference(kind)
    )


def _beaker_redis_namespace(prefix: str) -> Any:
    """Beaker's own Redis namespace manager, with this run's key prefix in front of its keys.

    Beaker names its keys ``beaker_cache:<id>:session`` with no prefix option;
    the prefix (one string concatenation per key) lets the run remove exactly
    what it wrote.
    """
    from beaker.ext.redisnm import RedisNamespaceManager

    class PrefixedRedisNamespaceManager(RedisNamespaceManager):  # type: ignore[misc]
        def _format_key(self, key: Any) -> str:
            formatted: str = super()._format_key(key)
            return prefix + formatted

    return PrefixedRedisNamespaceManager


def _beaker(kind: str, workdir: Path) -> Callable[[str], Callable[[], None]]:
    def build(scenario: str) -> Callable[[], None]:
        with needs("beaker not installed"):
            from beaker.middleware import SessionMiddleware
        label = f"beaker-{kind}-{scenario}"
        config: dict[str, Any] = {"session.type": _BEAKER_TYPES[kind], "session.key": "beaker"}
        if kind == "file":
            config["session.data_dir"] = str(workdir / label / "data")
            config["session.lock_dir"] = str(workdir / label / "lock")
        elif kind == "sqlite":
            with needs("Beaker's database store needs SQLAlchemy"):
                import sqlalchemy  # noqa: F401
            config["session.url"] = f"sqlite:///{workdir / label}.db"
            config["session.lock_dir"] = str(workdir / label / "lock")
        elif kind == "cookie":
            config["session.validate_key"] = SECRET
        elif kind == "redis":
            network.require("redis")
            config["session.url"] = network.REDIS_URL
            config["session.namespace_class"] = _beaker_redis_namespace(network.redis_prefix(label))
            # With a timeout Beaker gives its keys a TTL (SETEX), as websession does.
            config["session.timeout"] = 1800
        elif kind == "postgresql":
            network.require("postgresql")
            config["session.url"] = network.POSTGRES_URL
            config["session.schema_name"] = network.PG_SCHEMA
            config["session.table_name"] = "beaker_cache"
            config["session.lock_dir"] = str(workdir / label / "lock")
        app = SessionMiddleware(
            plain_app(lambda environ: environ["beaker.session"], lambda s: s.save()), config
        )
        return wsgi_builder(app, f"beaker {kind}")(scenario)

    return build


def family(workdir: Path) -> Family:
    fam = Family("wsgi", "plain WSGI callable", _baseline)
    for kind in STORES:
        fam.cases.append(websession_case("wsgi", kind, _websession(kind, workdir)))
        note = {
            "memory": "beaker memory namespace",
            "file": "beaker file namespace (file locks)",
            "sqlite": "beaker ext:database over SQLAlchemy, pickled rows",
            "cookie": "beaker cookie, signed (validate_key), pickle serializer",
            "redis": "beaker ext:redis (pickle, SETEX; keys prefixed for cleanup)",
            "postgresql": "beaker ext:database over SQLAlchemy + psycopg, pickled rows",
        }[kind]
        fam.cases.append(Case("wsgi", "beaker", kind, _beaker(kind, workdir), note=note))
    return fam
