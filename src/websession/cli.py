"""The ``websession`` command: run the demo, collect expired sessions, list, inspect, revoke.

Every command that reads sessions takes ``--store URL`` (default: the
``WEBSESSION_STORE`` environment variable, else ``sqlite:///websession.db``).
Mistakes a user can make (a bad URL, an unknown or ambiguous handle, a store
that cannot be listed) end with a one-line message and exit status 2, never a
traceback. click and rich come with ``pip install 'websession[cli]'``; without
them :func:`main` says so instead of failing on an import.
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

from . import __version__
from .errors import SessionError
from .ids import handle_of
from .stores.base import UserIndex
from .urls import mask_url

if TYPE_CHECKING:
    import click
    from rich.console import Console

    from .stores.base import Entry, InspectableStore, Store

    class ListableStore(Store, InspectableStore, Protocol):
        """A server store the CLI can list and delete from."""


__all__ = ["DEFAULT_STORE_URL", "ENV_STORE", "main", "make_cli"]

DEFAULT_STORE_URL = "sqlite:///websession.db"
ENV_STORE = "WEBSESSION_STORE"
#: Exit status for every mistake the user can correct (click uses 2 for usage errors too).
_HANDLE_RE = re.compile(r"[0-9a-f]{1,64}")
_MISSING_DEPS = (
    "websession: the command-line tool needs click and rich ({name} is not installed).\n"
    "Install them with:  pip install 'websession[cli]'\n"
)


def _load_middleware(path: str) -> Any:
    """The websession SessionMiddleware (WSGI or ASGI) named ``module:attribute``."""
    import importlib

    from ._clitools import fail
    from .asgi import SessionMiddleware as ASGIMiddleware
    from .wsgi import SessionMiddleware as WSGIMiddleware

    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        fail(f"--app {path!r}: give MODULE:NAME, e.g. myproject.wsgi:application")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as gunicorn and uvicorn find the app
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        fail(f"--app {path!r}: cannot import {module_name!r}: {exc}")
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            fail(f"--app {path!r}: {module_name!r} has no {attribute!r}")
    if not isinstance(found, WSGIMiddleware | ASGIMiddleware):
        fail(
            f"--app {path!r} is a {type(found).__name__}, not a websession SessionMiddleware; "
            "name the SessionMiddleware object that wraps the app (keep a reference to it)"
        )
    return found


@contextmanager
def _batches_of(middleware: Any) -> Iterator[Callable[[int], int]]:
    """``limit -> removed`` through the middleware; the ASGI one's on one event loop."""
    import asyncio
    import inspect

    if not inspect.iscoroutinefunction(middleware.delete_expired):
        yield middleware.delete_expired
        return
    with asyncio.Runner() as runner:

        def batch(limit: int) -> int:
            removed: int = runner.run(middleware.delete_expired(limit))
            return removed

        yield batch


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``websession`` console script."""
    try:
        import click  # noqa: F401 - probing that the extra is installed
        import rich  # noqa: F401
    except ImportError as exc:
        sys.stderr.write(_MISSING_DEPS.format(name=exc.name or "a dependency"))
        raise SystemExit(1) from None
    make_cli().main(args=list(argv) if argv is not None else None, prog_name="websession")


# -- formatting helpers (no click or rich needed) --------------------------------------------


def format_time(timestamp: float | None) -> str:
    """``2024-05-01 12:00:03`` in UTC; ``-`` for no time."""
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_relative(seconds: float) -> str:
    """``in 29m``, ``3h 5m ago``: a compact distance from now."""
    span = int(abs(seconds))
    if span < 60:
        text = f"{span}s"
    elif span < 3600:
        text = f"{span // 60}m"
    elif span < 86400:
        text = f"{span // 3600}h {span % 3600 // 60}m"
    else:
        text = f"{span // 86400}d {span % 86400 // 3600}h"
    return f"in {text}" if seconds >= 0 else f"{text} ago"


def printable(value: object) -> str:
    """``value`` as one line of text with control characters replaced.

    User agents and user ids come from the outside world; an escape sequence
    in one must not reach the operator's terminal.
    """
    if value is None:
        return "-"
    return "".join(c if c.isprintable() else "\N{REPLACEMENT CHARACTER}" for c in str(value))


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.lower() if "://" in url else ""


def _missing_database(url: str) -> str | None:
    """Why ``url`` names no existing sessions (a missing SQLite file or directory), or None.

    Commands that only read or delete should not leave an empty database behind
    because of a typo in a path.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite" and not parts.netloc:
        path = unquote(parts.path)
        path = path[1:] if path.startswith("/") else path
        if path and not os.path.exists(path):
            return f"no session database at {os.path.abspath(path)!r}"
    if scheme == "file":
        path = unquote(parts.netloc + parts.path)
        if path and not os.path.isdir(path):
            return f"no session directory at {os.path.abspath(path)!r}"
    return None


# -- the click application --------------------------------------------------------------------


def make_cli() -> click.Group:
    """Build the ``websession`` command group (click and rich are imported here)."""
    import click
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table
    from rich.text import Text

    from ._clitools import fail, opened_store

    def stdout_console() -> Console:
        # Piped output keeps whole rows on one line for grep; a terminal gets its own width.
        width = None if sys.stdout.isatty() else 200
        return Console(width=width, highlight=False, soft_wrap=False)

    def opened(url: str) -> Any:
        return opened_store(
            url,
            hint="try sqlite:///websession.db or file:///dir",
            check=lambda u: (
                None
                if (missing := _missing_database(u)) is None
                else f"{missing} (check --store or ${ENV_STORE})"
            ),
        )

    @contextmanager
    def inspectable(url: str, action: str) -> Iterator[ListableStore]:
        if _scheme(url) == "cookie":
            fail(f"cookie:// sessions live in the browsers' cookies; there is nothing to {action}")
        with opened(url) as store:
            if not callable(getattr(store, "entries", None)):
                fail(f"{type(store).__name__} cannot list its sessions, so it cannot {action}")
            yield store

    def check_handle(handle: str) -> str:
        handle = handle.strip().lower()
        if not _HANDLE_RE.fullmatch(handle):
            fail(f"{handle!r} is not a session handle (hex digits, as `websession ls` shows)")
        return handle

    def users_sessions(store: ListableStore, user_id: str) -> list[tuple[str, Entry]]:
        # The store's per-user index when it has one: O(that user's sessions).
        if isinstance(store, UserIndex):
            return store.sessions_for(user_id)
        return list(store.entries(user_id=user_id))

    def resolve(store: ListableStore, handle: str, *, user_id: str | None = None) -> str:
        handle = check_handle(handle)
        if user_id is not None:
            found = [key for key, _ in users_sessions(store, user_id) if key.startswith(handle)]
        else:
            found = [key for key, _ in store.entries(prefix=handle, limit=2)]
        owner = f" of user {printable(user_id)!r}" if user_id is not None else ""
        if not found:
            fail(f"no live session{owner} with handle {handle!r}")
        if len(found) > 1:
            fail(f"handle {handle!r} matches several sessions{owner}; give more characters")
        return found[0]

    store_option = click.option(
        "--store",
        "store_url",
        metavar="URL",
        envvar=ENV_STORE,
        default=DEFAULT_STORE_URL,
        show_default=True,
        show_envvar=True,
        help="The session store, e.g. sqlite:///websession.db or file:///var/lib/sessions.",
    )

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, "-V", "--version", prog_name="websession")
    def cli() -> None:
        """websession: run the demo, and inspect or clean up a session store."""

    @cli.command()
    @click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
    @click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
    @click.option(
        "--store",
        "store_url",
        metavar="URL",
        default="sqlite:///websession-demo.db",
        show_default=True,
        help="SQLite store for the demo's sessions and users (not read from $WEBSESSION_STORE, "
        "so the demo never writes into a real store).",
    )
    def demo(host: str, port: int, store_url: str) -> None:
        """Run the demo shop at http://HOST:PORT/.

        Sign-in with id rotation, flash messages, CSRF-checked forms and a cart
        kept in the session, on an SQLite file that also holds the demo's users.
        """
        from .demo.app import serve, sqlite_path

        if sqlite_path(store_url) is None:
            fail(
                f"the demo keeps its users in the same SQLite file as its sessions; give a "
                f"sqlite:/// URL such as sqlite:///websession-demo.db, not {mask_url(store_url)!r}"
            )
        try:
            serve(host, port, store_url)
        except SessionError as exc:
            fail(str(exc))
        except (OSError, sqlite3.Error) as exc:
            fail(f"cannot start the demo on {host}:{port} with {mask_url(store_url)}: {exc}")

    @cli.command()
    @store_option
    @click.option(
        "--batch",
        default=1000,
        show_default=True,
        type=click.IntRange(min=1),
        help="Sessions removed per store call (bounds each transaction).",
    )
    @click.option(
        "--max",
        "max_total",
        type=click.IntRange(min=1),
        default=None,
        help="Stop after removing this many (default: until none are left).",
    )
    @click.option(
        "--app",
        "app_path",
        metavar="MODULE:NAME",
        default=None,
        help="Collect through the app's websession SessionMiddleware (WSGI or ASGI), so "
        "its on_expire hook runs for each session removed; its store replaces --store.",
    )
    def gc(store_url: str, batch: int, max_total: int | None, app_path: str | None) -> None:
        """Delete expired sessions, in bounded batches.

        For stores without native expiry (SQLite, files); run it from cron or a
        timer. Each batch is one store call, so locks are held briefly. With
        --app, the app's on_expire hook hears of each session removed (memory
        and SQLite stores can say which).
        """
        out = stdout_console()
        if app_path is not None:
            source = click.get_current_context().get_parameter_source("store_url")
            if source is not None and source.name == "COMMANDLINE":
                fail("give --app or --store, not both: with --app the app's own store is used")
            middleware = _load_middleware(app_path)
            with _batches_of(middleware) as delete_expired:
                _collect(out, middleware.store, delete_expired, batch, max_total)
            return
        if _scheme(store_url) == "cookie":
            out.print("cookie:// sessions expire in the browser; there is nothing to collect.")
            return
        with opened(store_url) as store:
            _collect(out, store, store.delete_expired, batch, max_total)

    def _collect(
        out: Console,
        store: Any,
        delete_expired: Callable[[int], int],
        batch: int,
        max_total: int | None,
    ) -> None:
        """Call ``delete_expired`` in batches until a batch comes back short."""
        if getattr(store, "native_ttl", False) or getattr(
            getattr(store, "sync", None), "native_ttl", False
        ):
            out.print(
                f"{type(store).__name__} expires sessions itself (native TTL); "
                "there is nothing to do."
            )
            return
        total = batches = 0
        started = time.perf_counter()
        progress = Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            TextColumn("{task.completed} removed"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        with progress:
            task = progress.add_task("Deleting expired sessions", total=max_total)
            while max_total is None or total < max_total:
                limit = batch if max_total is None else min(batch, max_total - total)
                removed = delete_expired(limit)
                total += removed
                batches += 1
                progress.update(task, completed=total)
                if removed < limit:
                    break
        elapsed = time.perf_counter() - started
        noun = "session" if total == 1 else "sessions"
        out.print(
            f"Removed {total} expired {noun} in {batches} "
            f"batch{'' if batches == 1 else 'es'} ({elapsed:.2f} s)."
        )

    @cli.command(name="ls")
    @store_option
    @click.option("--user", "user_id", metavar="ID", help="Only this user's sessions.")
    @click.option(
        "--limit", default=50, show_default=True, type=click.IntRange(min=1), help="Rows to show."
    )
    def list_sessions(store_url: str, user_id: str | None, limit: int) -> None:
        """List live sessions, most recently seen first.

        With --user, stores that keep a per-user index (SQLite, SQL, files,
        memory, Redis) read only that user's sessions, never all of them.
        """
        out = stdout_console()
        with inspectable(store_url, "list") as store:
            if user_id is not None:
                rows = users_sessions(store, user_id)[:limit]
            else:
                rows = list(store.entries(prefix="", limit=limit))
        if not rows:
            who = f" for user {printable(user_id)!r}" if user_id is not None else ""
            out.print(f"No live sessions{who}.")
            return
        table = Table(title=None, box=None, header_style="bold", pad_edge=False)
        table.add_column("Handle", no_wrap=True, style="cyan")
        table.add_column("User", no_wrap=True)
        table.add_column("Created (UTC)", no_wrap=True)
        table.add_column("Last seen (UTC)", no_wrap=True)
        table.add_column("Expires (UTC)", no_wrap=True)
        table.add_column("IP", no_wrap=True)
        table.add_column("User agent", overflow="ellipsis", no_wrap=True, max_width=60)
        for key, entry in rows:
            table.add_row(
                handle_of(key),
                Text(printable(entry.user_id)),
                format_time(entry.created),
                format_time(entry.last_seen),
                format_time(entry.expires),
                Text(printable(entry.ip)),
                Text(printable(entry.user_agent)),
            )
        out.print(table)
        more = " (limit reached; use --limit for more)" if len(rows) == limit else ""
        out.print(f"{len(rows)} session{'' if len(rows) == 1 else 's'}{more}")

    @cli.command()
    @store_option
    @click.argument("handle")
    def show(store_url: str, handle: str) -> None:
        """Show one session: metadata and decoded data.

        HANDLE is any unique prefix of a handle `websession ls` shows. The CSRF
        token is reported as present or absent, never printed.
        """
        from rich.pretty import Pretty, pretty_repr

        from .codecs import DecodeError, decode_payload

        out = stdout_console()
        with inspectable(store_url, "show") as store:
            key = resolve(store, handle)
            found = list(store.entries(prefix=key, limit=1))
        if not found:
            fail(f"session {handle_of(key)!r} ended while it was being read")
        entry: Entry = found[0][1]
        now = time.time()
        rows: list[tuple[str, str]] = [
            ("Handle", handle_of(key)),
            ("User", printable(entry.user_id)),
            ("Created", f"{format_time(entry.created)} UTC"),
            (
                "Last seen",
                f"{format_time(entry.last_seen)} UTC ({format_relative(entry.last_seen - now)})",
            ),
            (
                "Expires",
                f"{format_time(entry.expires)} UTC ({format_relative(entry.expires - now)})",
            ),
            ("IP", printable(entry.ip)),
            ("User agent", printable(entry.user_agent)),
            ("Version", str(entry.version)),
            ("Payload", f"{len(entry.payload)} bytes"),
        ]

        def print_rows() -> None:
            for label, value in rows:
                out.print(Text(f"{label:<12}", style="bold"), Text(value), sep="")

        try:
            payload = decode_payload(entry.payload)
        except DecodeError as exc:
            print_rows()
            out.print(Text(f"The payload cannot be decoded: {exc}", style="red"))
            return
        if payload.b:
            rows.append(("Cookie", "browser session (no Max-Age)"))
        elif payload.x is not None:
            rows.append(("Idle timeout", f"{payload.x:g} s (set_expiry)"))
        # The token is a secret bound to the session: say whether it exists, never what it is.
        rows.append(("CSRF token", "present (not shown)" if payload.c else "none"))
        print_rows()
        out.print(Text("Data", style="bold"))
        out.print(Pretty(payload.d, indent_guides=False) if payload.d else Text("(empty)"))
        out.print(Text("Flashes", style="bold"))
        if payload.f:
            for category, message in payload.f:
                text = message if isinstance(message, str) else pretty_repr(message)
                out.print(Text(f"[{printable(category)}] {printable(text)}"))
        else:
            out.print(Text("(none)"))

    @cli.command()
    @store_option
    @click.argument("handle", required=False)
    @click.option("--user", "user_id", metavar="ID", help="Revoke every session of this user.")
    @click.option(
        "--keep",
        metavar="HANDLE",
        help="With --user: keep this one session (e.g. the one in use).",
    )
    def revoke(store_url: str, handle: str | None, user_id: str | None, keep: str | None) -> None:
        """Revoke sessions: one by HANDLE, or a user's with --user.

        A revoked session is deleted from the store: its browser is signed out
        on its next request. `--user ID --keep HANDLE` is "sign out everywhere
        else". Stores with a per-user index find the user's sessions without
        reading anyone else's.
        """
        out = stdout_console()
        if handle is not None and user_id is not None:
            fail("give a HANDLE or --user ID, not both")
        if keep is not None and user_id is None:
            fail("--keep only makes sense with --user")
        if handle is not None:
            with inspectable(store_url, "revoke") as store:
                key = resolve(store, handle)
                if isinstance(store, UserIndex):
                    if not store.revoke(key):
                        fail(f"session {handle_of(key)!r} ended before it could be revoked")
                else:
                    store.delete(key)
            out.print(f"Revoked 1 session ({handle_of(key)}).")
            return
        if user_id is None:
            fail("give the HANDLE of a session, or --user ID for all of a user's sessions")
        with inspectable(store_url, "revoke") as store:
            kept = resolve(store, keep, user_id=user_id) if keep is not None else None
            if isinstance(store, UserIndex):
                count = store.revoke_user(user_id, keep=() if kept is None else (kept,))
            else:
                doomed = [k for k, _ in store.entries(user_id=user_id) if k != kept]
                for key in doomed:
                    store.delete(key)
                count = len(doomed)
        noun = "session" if count == 1 else "sessions"
        note = f", kept {handle_of(kept)}" if kept is not None else ""
        out.print(f"Revoked {count} {noun} of user {printable(user_id)!r}{note}.")

    @cli.command()
    @store_option
    def stats(store_url: str) -> None:
        """Count live sessions: signed in, anonymous, distinct users."""
        out = stdout_console()
        with inspectable(store_url, "count") as store:
            total = signed_in = 0
            users: set[str] = set()
            oldest: float | None = None
            for _key, entry in store.entries():
                total += 1
                if entry.user_id is not None:
                    signed_in += 1
                    users.add(entry.user_id)
                if oldest is None or entry.created < oldest:
                    oldest = entry.created
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column(justify="right")
        grid.add_row("Live sessions", str(total))
        grid.add_row("Signed in", str(signed_in))
        grid.add_row("Anonymous", str(total - signed_in))
        grid.add_row("Distinct users", str(len(users)))
        grid.add_row("Oldest created", f"{format_time(oldest)} UTC" if oldest else "-")
        out.print(grid)

    from .cli_db import db
    from .cli_migrate import migrate

    cli.add_command(db)
    cli.add_command(migrate)

    @cli.group()
    def keys() -> None:
        """Secret keys for signed and encrypted cookies."""

    @keys.command(name="new")
    def keys_new() -> None:
        """Print a fresh random key (256 bits, URL-safe) for signing or encryption.

        Put it in WEBSESSION_SECRET_KEY (newest first, comma-separated, to rotate).
        """
        click.echo(secrets.token_urlsafe(32))

    return cli


if __name__ == "__main__":
    main()
