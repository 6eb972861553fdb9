"""FastAPI: the request's websession :class:`~websession.Session` as a typed dependency.

Install :class:`websession.integrations.starlette.SessionMiddleware` (FastAPI
is Starlette) and ask for the session in any path operation, HTTP or websocket::

    from websession.integrations.fastapi import SessionDep

    app.add_middleware(SessionMiddleware, secret_key=SECRET, store="sqlite:///sessions.db")

    @app.post("/login")
    def login(form: LoginForm, session: SessionDep) -> dict[str, str]:
        session.login(form.user)
        return {"csrf": session.csrf_token()}

``SessionDep`` is ``Annotated[Session, Depends(get_session)]``; the session it
gives shares its data with ``request.session``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from ..session import Session
from . import starlette as _starlette

__all__ = ["SessionDep", "get_session"]


def get_session(connection: HTTPConnection) -> Session:
    """FastAPI dependency: the request's (or websocket's) websession session.

    Raises ``RuntimeError`` when websession's Starlette ``SessionMiddleware``
    is not installed.
    """
    return _starlette.get_session(connection)


#: ``session: SessionDep`` in a path operation's parameters.
SessionDep = Annotated[Session, Depends(get_session)]
