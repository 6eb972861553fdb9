"""A Starlette app with websession: a visit counter and a JSON login API.

Run it with uvicorn from the project root::

    uvicorn examples.asgi_app:app

then try ``curl -c jar -b jar http://127.0.0.1:8000/`` a few times. Sessions
go to ``example-sessions.db`` (SQLite) in the current directory; set
``WEBSESSION_STORE`` to another store URL, e.g. ``memory://``, to change that.

Unsafe requests carry the session's CSRF token in an ``X-CSRF-Token`` header;
``GET /`` returns it.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from websession import Session
from websession.asgi import SessionMiddleware

STORE = os.environ.get("WEBSESSION_STORE", "sqlite:///example-sessions.db")


def session_of(request: Request) -> Session:
    """The request's websession Session.

    ``request.session`` returns the same object; this helper only tells type
    checkers, since Starlette annotates ``request.session`` as a plain dict.
    """
    session: Session = request.scope["session"]
    return session


async def home(request: Request) -> JSONResponse:
    session = session_of(request)
    session["count"] = session.get("count", 0) + 1
    return JSONResponse(
        {"count": session["count"], "user": session.user_id, "csrf": session.csrf_token()}
    )


async def login(request: Request) -> JSONResponse:
    session = session_of(request)
    if not session.check_csrf(request.headers.get("X-CSRF-Token")):
        return JSONResponse({"error": "bad CSRF token"}, status_code=403)
    user = str((await request.json()).get("user") or "guest")
    session.login(user)  # new id and CSRF token; the data is kept
    return JSONResponse({"user": user, "csrf": session.csrf_token()})


async def logout(request: Request) -> JSONResponse:
    session = session_of(request)
    if not session.check_csrf(request.headers.get("X-CSRF-Token")):
        return JSONResponse({"error": "bad CSRF token"}, status_code=403)
    session.logout()  # the stored session is deleted and the cookie cleared
    return JSONResponse({"user": None})


routes = [
    Route("/", home),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]
# Wrapping the app is the same as Starlette's middleware=[Middleware(...)] list,
# and type checkers accept it.
app = SessionMiddleware(Starlette(routes=routes), store=STORE)
