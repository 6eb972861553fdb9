"""Flask: the app alone, with websession's WSGI middleware, Flask-Session and Flask's cookie."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import network
from .common import (
    SECRET,
    STORES,
    Case,
    Family,
    Unavailable,
    fill_session,
    needs,
    read_session,
    write_session,
    wsgi_builder,
    wsgi_caller,
    wsgi_environ,
)
from .peer_sqlite import use_wal_normal_for_sqlalchemy
from .websession_stores import make_store
from .wsgi_family import websession_case

_names = itertools.count()
_NEEDS_FLASK_SQLALCHEMY = "Flask-Session's SQL store needs Flask-SQLAlchemy"


def make_app(get_session: Callable[[], Any] | None, **config: Any) -> Any:
    """A Flask app with one view per scenario; ``get_session`` is None for the baseline."""
    from flask import Flask

    app = Flask(f"bench{next(_names)}")
    app.config.update(SECRET_KEY=SECRET, **config)

    def view(scenario: str) -> Callable[[], str]:
        def handler() -> str:
            if get_session is None or scenario == "untouched":
                return "ok"
            session = get_session()
            if scenario == "read":
                read_session(session)
            elif scenario == "write":
                write_session(session)
            elif scenario == "new":
                fill_session(session)
            elif scenario == "check":
                return str(read_session(session))
            return "ok"

        handler.__name__ = scenario
        return handler

    for scenario in ("read", "write", "new", "untouched", "check"):
        app.add_url_rule("/" + scenario, view_func=view(scenario))
    return app


def _flask_session() -> Any:
    from flask import session

    return session


def _baseline(scenario: str) -> Callable[[], None]:
    # Flask's default cookie session stays installed but unused, as in any Flask app.
    app = make_app(None, SESSION_COOKIE_NAME="flask_session")
    return wsgi_caller(app, wsgi_environ("/" + scenario))


def _websession(kind: str, workdir: Path) -> Callable[[str], Callable[[], None]]:
    from websession.wsgi import SessionMiddleware

    def build(scenario: str) -> Callable[[], None]:
        from flask import request

        flask_app = make_app(
            lambda: request.environ["websession.session"], SESSION_COOKIE_NAME="flask_session"
        )
        store = make_store(kind, workdir, f"flask-{scenario}")
        app = SessionMiddleware(flask_app, store=store)
        return wsgi_builder(app, f"websession {kind} in Flask")(scenario)

    return build


def _flask_session_ext(kind: str, workdir: Path) -> Callable[[str], Callable[[], None]]:
    def build(scenario: str) -> Callable[[], None]:
        with needs("flask-session not installed"):
            from flask_session import Session
        label = f"flask-session-{kind}-{scenario}"
        config: dict[str, Any] = {}
        if kind == "memory":
            from cachelib import SimpleCache

            # A threshold this high keeps cachelib from pruning during the run.
            config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=SimpleCache(threshold=10**9))
        elif kind == "file":
            from cachelib import FileSystemCache

            config.update(
                SESSION_TYPE="cachelib",
                SESSION_CACHELIB=FileSystemCache(str(workdir / label), threshold=0),
            )
        elif kind == "sqlite":
            with needs(_NEEDS_FLASK_SQLALCHEMY):
                from flask_sqlalchemy import SQLAlchemy
            use_wal_normal_for_sqlalchemy()
            config.update(
                SESSION_TYPE="sqlalchemy", SQLALCHEMY_DATABASE_URI=f"sqlite:///{workdir / label}.db"
            )
        elif kind == "redis":
            network.require("redis")
            import redis

            client = redis.Redis.from_url(network.REDIS_URL)
            network.on_close(client.close)
            config.update(
                SESSION_TYPE="redis",
                SESSION_REDIS=client,
                SESSION_KEY_PREFIX=network.redis_prefix(label),
            )
        elif kind == "postgresql":
            network.require("postgresql")
            with needs(_NEEDS_FLASK_SQLALCHEMY):
                from flask_sqlalchemy import SQLAlchemy
            config.update(
                SESSION_TYPE="sqlalchemy",
                SQLALCHEMY_DATABASE_URI=network.POSTGRES_URL,
                SESSION_SQLALCHEMY_SCHEMA=network.PG_SCHEMA,
                SESSION_SQLALCHEMY_TABLE="flask_sessions",
            )
        else:
            raise Unavailable("Flask-Session has no cookie store (Flask's own cookie is the peer)")
        app = make_app(_flask_session, **config)
        if kind in ("sqlite", "postgresql"):
            db = SQLAlchemy(app)
            app.config["SESSION_SQLALCHEMY"] = db
            if kind == "postgresql":
                network.on_close(lambda: _dispose(app, db))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Session(app)
        return wsgi_builder(app, f"flask-session {kind}")(scenario)

    return build


def _dispose(app: Any, db: Any) -> None:
    with app.app_context():
        db.engine.dispose()


def _flask_cookie(scenario: str) -> Callable[[], None]:
    app = make_app(_flask_session)
    return wsgi_builder(app, "flask cookie")(scenario)


def family(workdir: Path) -> Family:
    fam = Family("flask", "Flask app (default cookie session installed, unused)", _baseline)
    for kind in STORES:
        fam.cases.append(websession_case("flask", kind, _websession(kind, workdir)))
        if kind == "cookie":
            fam.cases.append(
                Case(
                    "flask",
                    "flask (own cookie)",
                    kind,
                    _flask_cookie,
                    note="Flask's SecureCookieSessionInterface (itsdangerous, JSON tags)",
                )
            )
        else:
            note = {
                "memory": "Flask-Session cachelib SimpleCache",
                "file": "Flask-Session cachelib FileSystemCache",
                "sqlite": "Flask-Session sqlalchemy (Flask-SQLAlchemy), WAL + NORMAL",
                "redis": "Flask-Session redis (msgspec, SETEX)",
                "postgresql": "Flask-Session sqlalchemy (Flask-SQLAlchemy + psycopg)",
            }[kind]
            fam.cases.append(
                Case("flask", "flask-session", kind, _flask_session_ext(kind, workdir), note=note)
            )
    return fam
