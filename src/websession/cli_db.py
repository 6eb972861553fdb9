"""``websession db``: create and migrate the session table of an SQL store.

``websession db init --store URL`` creates the table (and its schema record)
when it is missing; ``websession db upgrade --store URL`` also runs the
migrations an existing table has not had yet. Both are idempotent. Web
requests never create or alter tables: run one of these at deploy time.

Mistakes (a URL that names no SQL database, a database that cannot be reached)
end with a one-line ``Error:`` message and exit status 2, like every other
``websession`` command.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from ._clitools import fail, required_store_option
from .errors import SessionError, StoreError
from .urls import mask_url

if TYPE_CHECKING:
    from .stores.sql import SchemaChange, SQLStore

__all__ = ["db"]


@contextmanager
def _sql_store(url: str) -> Iterator[SQLStore]:
    if "://" not in url:
        fail(f"{url!r} is not a store URL; try postgresql+psycopg://user@host/dbname")
    try:
        from .stores.sql import SQLStore, is_sql_url
    except ImportError as exc:
        fail(f"the SQL store needs SQLAlchemy ({exc}); pip install 'websession[sql]'")
    if not is_sql_url(url):
        fail(
            f"{mask_url(url)} is not an SQL database URL (such as postgresql+psycopg://, "
            "mysql+pymysql:// or sqlite+pysqlite://); only the SQL store has a table to manage"
        )
    try:
        store = SQLStore(url)
    except SessionError as exc:
        fail(f"bad store URL: {exc}")
    try:
        yield store
    except StoreError as exc:
        fail(f"store {mask_url(url)} failed: {exc}")
    finally:
        store.close()


def _version_note(change: SchemaChange) -> str:
    return f"schema version {change.after}"


_store_option = required_store_option(
    "The SQL store, e.g. postgresql+psycopg://user@host/db (?table=NAME for another table)."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def db() -> None:
    """Create or migrate the session table of an SQL store."""


@db.command()
@_store_option
def init(store_url: str) -> None:
    """Create the session table if it does not exist (never alters an existing one)."""
    from .stores.sql import SCHEMA_VERSION

    with _sql_store(store_url) as store:
        change = store.create_table()
        name = store.table.fullname
    if change.before == 0:
        click.echo(f"Created table {name} ({_version_note(change)}) in {mask_url(store_url)}.")
    elif change.before < SCHEMA_VERSION:
        click.echo(
            f"Table {name} exists at schema version {change.before}; the current one is "
            f"{SCHEMA_VERSION}: run `websession db upgrade`."
        )
    else:
        click.echo(f"Table {name} already exists ({_version_note(change)}); nothing to do.")


@db.command()
@_store_option
def upgrade(store_url: str) -> None:
    """Bring the session table to the current schema: create it, or run pending migrations."""
    with _sql_store(store_url) as store:
        change = store.upgrade()
        name = store.table.fullname
    if change.before == 0:
        click.echo(f"Created table {name} ({_version_note(change)}).")
    elif change.before < change.after:
        click.echo(f"Upgraded table {name} from schema version {change.before} to {change.after}.")
    else:
        click.echo(f"Table {name} is up to date ({_version_note(change)}).")
