"""What the ``websession`` subcommands share: the one-line user error, the ``--store`` option
and opening a store.

Imported only by the command modules, which already need click.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import click

from .cli import ENV_STORE
from .errors import SessionError, StoreError
from .urls import mask_url, store_from_url

__all__ = ["EXIT_USAGE", "UserError", "fail", "opened_store", "required_store_option"]

EXIT_USAGE = 2

_Command = TypeVar("_Command", bound=Callable[..., Any])


class UserError(click.ClickException):
    """A mistake the user can fix: one line on stderr, exit status 2."""

    exit_code = EXIT_USAGE


def fail(message: str) -> NoReturn:
    raise UserError(message)


def required_store_option(help: str) -> Callable[[_Command], _Command]:
    """``--store URL`` (or ``$WEBSESSION_STORE``), required: the store a command works on."""
    return click.option(
        "--store",
        "store_url",
        metavar="URL",
        envvar=ENV_STORE,
        required=True,
        show_envvar=True,
        help=help,
    )


@contextmanager
def opened_store(
    url: str,
    *,
    hint: str = "try sqlite:///websession.db",
    check: Callable[[str], str | None] | None = None,
    build: Callable[[str], Any] | None = None,
) -> Iterator[Any]:
    """The store ``url`` names, closed afterwards; every failure is one ``Error:`` line.

    ``check`` may return a reason to refuse the URL before anything is built.
    """
    if "://" not in url:
        fail(f"{url!r} is not a store URL; {hint}")
    if check is not None:
        reason = check(url)
        if reason is not None:
            fail(reason)
    try:
        store = (build or store_from_url)(url)
    except SessionError as exc:
        fail(f"bad store URL: {exc}")
    except ImportError as exc:
        fail(f"{mask_url(url)} needs a package that is not installed: {exc}")
    try:
        yield store
    except (StoreError, sqlite3.Error, OSError) as exc:
        fail(f"store {mask_url(url)} failed: {exc}")
    finally:
        close = getattr(store, "close", None)
        if callable(close):
            close()
