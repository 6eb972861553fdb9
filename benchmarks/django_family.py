"""Django: the app alone, with websession's WSGI middleware, and with django.contrib.sessions.

Django reads most settings per request, so each case sets the ones it needs
right before it is measured (see ``_activate``); settings are configured once
per process, in :func:`setup`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import network
from .common import (
    SECRET,
    STORES,
    Case,
    Family,
    fill_session,
    needs,
    read_session,
    write_session,
    wsgi_builder,
    wsgi_caller,
    wsgi_environ,
)
from .websession_stores import make_store
from .wsgi_family import websession_case

_SESSION_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
#: Which database alias the router sends session queries to (see ``SessionRouter``).
_db_alias = "default"


class SessionRouter:
    """Routes the sessions table to the database the current case measures."""

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return _db_alias

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return _db_alias

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return True


def _get(scenario: str, get_session: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    from django.http import HttpResponse  # type: ignore[import-untyped]

    def view(request: Any) -> Any:
        if get_session is None or scenario == "untouched":
            return HttpResponse("ok")
        session = get_session(request)
        if scenario == "read":
            read_session(session)
        elif scenario == "write":
            write_session(session)
        elif scenario == "new":
            fill_session(session)
        elif scenario == "check":
            return HttpResponse(str(read_session(session)))
        return HttpResponse("ok")

    return view


def _urlpatterns() -> list[Any]:
    from django.urls import path  # type: ignore[import-untyped]

    patterns = []
    for prefix, getter in (
        ("base", None),
        ("dj", lambda request: request.session),
        ("ws", lambda request: request.environ["websession.session"]),
    ):
        for scenario in ("read", "write", "new", "untouched", "check"):
            patterns.append(path(f"{prefix}/{scenario}", _get(scenario, getter)))
    return patterns


urlpatterns: list[Any] = []
_configured = False


def setup(workdir: Path) -> None:
    """Configure Django once for this process, with two SQLite databases under ``workdir``."""
    global _configured
    if _configured:
        return
    with needs("django not installed"):
        import django  # type: ignore[import-untyped]
        from django.conf import settings  # type: ignore[import-untyped]
    settings.configure(
        DEBUG=False,
        SECRET_KEY=SECRET,
        ALLOWED_HOSTS=["localhost"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=["django.contrib.sessions"],
        MIDDLEWARE=[],
        DATABASES={
            # The same durability as websession's SQLiteStore.
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(workdir / "django-wal.db"),
                "CONN_MAX_AGE": None,
                "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL"},
            },
            # Django's own SQLite defaults (rollback journal, synchronous=FULL).
            "stock": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(workdir / "django-stock.db"),
                "CONN_MAX_AGE": None,
            },
            # PostgreSQL, in the run's own schema: django_session is a fixed name.
            # Connected only when a case uses it.
            "pg": {
                "ENGINE": "django.db.backends.postgresql",
                **network.postgres_params(),
                "CONN_MAX_AGE": None,
                "OPTIONS": {"options": f"-c search_path={network.PG_SCHEMA}"},
            },
        },
        DATABASE_ROUTERS=[f"{__name__}.SessionRouter"],
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "redis": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": network.REDIS_URL,
                "KEY_PREFIX": network.redis_prefix("django"),
            },
        },
        SESSION_FILE_PATH=str(workdir / "django-files"),
        USE_TZ=True,
    )
    (workdir / "django-files").mkdir()
    django.setup()
    urlpatterns[:] = _urlpatterns()
    from django.core.management import call_command  # type: ignore[import-untyped]

    for alias in ("default", "stock"):
        call_command("migrate", "sessions", database=alias, verbosity=0)
    _configured = True


_migrated_pg = False


def _migrate_pg() -> None:
    """Create django_session (and Django's migration record) in the run's PostgreSQL schema."""
    global _migrated_pg
    network.require("postgresql")
    if not _migrated_pg:
        from django.core.management import call_command

        call_command("migrate", "sessions", database="pg", verbosity=0)
        _migrated_pg = True


def _activate(
    *,
    middleware: bool,
    engine: str | None = None,
    alias: str = "default",
    cache: str = "default",
) -> Any:
    """A fresh Django WSGI handler for one case, with that case's settings in force."""
    global _db_alias
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler  # type: ignore[import-untyped]

    settings.MIDDLEWARE = [_SESSION_MIDDLEWARE] if middleware else []
    if engine is not None:
        settings.SESSION_ENGINE = engine
    settings.SESSION_CACHE_ALIAS = cache
    _db_alias = alias
    return WSGIHandler()


def _baseline(scenario: str) -> Callable[[], None]:
    return wsgi_caller(_activate(middleware=False), wsgi_environ("/base/" + scenario))


def _django_builder(app: Any, prefix: str, what: str) -> Callable[[str], Callable[[], None]]:
    """Like ``wsgi_builder`` but for routes under ``/prefix/``."""

    def mounted(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ["PATH_INFO"] = f"/{prefix}" + environ["PATH_INFO"]
        return app(environ, start_response)

    return wsgi_builder(mounted, what)


def _websession(kind: str, workdir: Path) -> Callable[[str], Callable[[], None]]:
    from websession.wsgi import SessionMiddleware

    def build(scenario: str) -> Callable[[], None]:
        store = make_store(kind, workdir, f"django-{scenario}")
        app = SessionMiddleware(_activate(middleware=False), store=store)
        return _django_builder(app, "ws", f"websession {kind} in Django")(scenario)

    return build


_ENGINES = {
    "memory": "django.contrib.sessions.backends.cache",
    "file": "django.contrib.sessions.backends.file",
    "sqlite": "django.contrib.sessions.backends.db",
    "cookie": "django.contrib.sessions.backends.signed_cookies",
    "redis": "django.contrib.sessions.backends.cache",
    "postgresql": "django.contrib.sessions.backends.db",
}


def _django(kind: str, alias: str = "default") -> Callable[[str], Callable[[], None]]:
    def build(scenario: str) -> Callable[[], None]:
        cache, database = "default", alias
        if kind == "redis":
            network.require("redis")
            cache = "redis"
        elif kind == "postgresql":
            _migrate_pg()
            database = "pg"
        app = _activate(middleware=True, engine=_ENGINES[kind], alias=database, cache=cache)
        return _django_builder(app, "dj", f"django {kind}")(scenario)

    return build


def family(workdir: Path) -> Family:
    setup(workdir)
    fam = Family("django", "Django app (no session middleware)", _baseline)
    notes = {
        "memory": "cache backend on LocMemCache (pickles values)",
        "file": "file backend",
        "sqlite": "db backend, SQLite WAL + synchronous=NORMAL (same as websession)",
        "cookie": "signed_cookies backend (JSON, zlib-compressed when smaller)",
        "redis": "cache backend on django.core.cache.backends.redis.RedisCache (pickles values)",
        "postgresql": "db backend on PostgreSQL (psycopg), persistent connection",
    }
    for kind in STORES:
        fam.cases.append(websession_case("django", kind, _websession(kind, workdir)))
        fam.cases.append(Case("django", "django", kind, _django(kind), note=notes[kind]))
        if kind == "sqlite":
            fam.cases.append(
                Case(
                    "django",
                    "django (stock sqlite)",
                    kind,
                    _django(kind, alias="stock"),
                    note="db backend, Django's SQLite defaults: journal=DELETE, synchronous=FULL",
                )
            )
    return fam
