"""A Bottle app with websession's WSGI middleware: a counter, login and logout.

Bottle has no session of its own; wrap the app and read the session from
``bottle.request.environ``. Run it::

    python examples/bottle_app.py

then open http://127.0.0.1:8000/. Sessions go to ``example-sessions.db``
(SQLite) in the current directory unless ``WEBSESSION_STORE`` names another
store URL.
"""

from __future__ import annotations

import os
from typing import Any

import bottle

from websession import Session
from websession.wsgi import SessionMiddleware, get_session

STORE = os.environ.get("WEBSESSION_STORE", "sqlite:///example-sessions.db")

bottle_app = bottle.Bottle()


def session() -> Session:
    return get_session(bottle.request.environ)


def require_csrf() -> None:
    token = bottle.request.forms.get("csrf") or bottle.request.get_header("X-CSRF-Token")
    if not session().check_csrf(token):
        bottle.abort(403, "bad CSRF token")


@bottle_app.get("/")
def index() -> dict[str, Any]:
    current = session()
    current["count"] = current.get("count", 0) + 1
    return {
        "count": current["count"],
        "user": current.user_id,
        "csrf": current.csrf_token(),
        "flashes": [message for _, message in current.pop_flashes()],
    }


@bottle_app.post("/login")
def login() -> None:
    require_csrf()
    user = (bottle.request.forms.get("user") or "").strip() or "guest"
    session().login(user)  # new session id and CSRF token, data kept
    session().flash(f"Welcome, {user}.")
    bottle.redirect("/")


@bottle_app.post("/logout")
def logout() -> None:
    require_csrf()
    session().logout()
    session().flash("You are logged out.")
    bottle.redirect("/")


app = SessionMiddleware(bottle_app, store=STORE)

if __name__ == "__main__":
    bottle.run(app, host="127.0.0.1", port=8000)
