"""Starlette with websession's drop-in SessionMiddleware: a visit counter and a login form.

Run it from the project root::

    uvicorn examples.starlette_app:app

``request.session`` is the dict Starlette apps know; ``get_session(request)``
gives the same session's websession API (login, logout, CSRF, flashes).
Sessions go to ``example-sessions.db`` (SQLite); set ``WEBSESSION_STORE`` to
another store URL to change that, and ``SECRET_KEY`` in production.
Forms post ``user`` and the ``csrf`` token that ``GET /`` returns.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from websession.integrations.starlette import SessionMiddleware, get_session

SECRET_KEY = os.environ.get("SECRET_KEY", "dev-only-secret-change-me-0123456789")
STORE = os.environ.get("WEBSESSION_STORE", "sqlite:///example-sessions.db")


async def home(request: Request) -> JSONResponse:
    request.session["visits"] = request.session.get("visits", 0) + 1
    session = get_session(request)
    return JSONResponse(
        {
            "visits": request.session["visits"],
            "user": session.user_id,
            "csrf": session.csrf_token(),
        }
    )


async def login(request: Request) -> JSONResponse:
    form = await request.form()
    session = get_session(request)
    token = form.get("csrf")
    if not isinstance(token, str) or not session.check_csrf(token):
        return JSONResponse({"error": "bad CSRF token"}, status_code=403)
    user = form.get("user")
    session.login(user if isinstance(user, str) and user else "guest")  # rotates the id
    return JSONResponse({"user": session.user_id, "csrf": session.csrf_token()})


async def logout(request: Request) -> JSONResponse:
    form = await request.form()
    session = get_session(request)
    token = form.get("csrf")
    if not isinstance(token, str) or not session.check_csrf(token):
        return JSONResponse({"error": "bad CSRF token"}, status_code=403)
    session.logout()  # deletes the record and removes the cookie
    return JSONResponse({"user": None})


app = Starlette(
    routes=[
        Route("/", home),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ],
    middleware=[
        # Starlette's arguments, plus store=: the one-line change from
        # starlette.middleware.sessions.SessionMiddleware.
        Middleware(SessionMiddleware, secret_key=SECRET_KEY, store=STORE, max_age=14 * 24 * 3600)
    ],
)
