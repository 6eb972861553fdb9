"""A plain WSGI app with websession: a visit counter, a login form and flash messages.

Run it with the standard library's server::

    python examples/wsgi_app.py

then open http://127.0.0.1:8000/. Sessions go to ``example-sessions.db``
(SQLite) in the current directory; set ``WEBSESSION_STORE`` to another store
URL, e.g. ``memory://``, to change that.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from websession.wsgi import SessionMiddleware, get_session

STORE = os.environ.get("WEBSESSION_STORE", "sqlite:///example-sessions.db")

PAGE = """<!doctype html>
<title>websession WSGI example</title>
{flashes}
<p>You have seen this page {count} times.</p>
{account}
"""
LOGIN_FORM = """<form method="post" action="/login">
<input type="hidden" name="csrf" value="{csrf}">
<input name="user" placeholder="user name"> <button>Log in</button></form>"""
LOGOUT_FORM = """<p>Logged in as {user}.</p>
<form method="post" action="/logout">
<input type="hidden" name="csrf" value="{csrf}"><button>Log out</button></form>"""


def demo(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    session = get_session(environ)
    path = environ.get("PATH_INFO", "/")

    if environ["REQUEST_METHOD"] == "POST" and path in ("/login", "/logout"):
        size = int(environ.get("CONTENT_LENGTH") or 0)
        form = parse_qs(environ["wsgi.input"].read(size).decode())
        if not session.check_csrf(form.get("csrf", [""])[0]):
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"bad CSRF token\n"]
        if path == "/login":
            user = form.get("user", [""])[0].strip() or "guest"
            session.login(user)  # new id, new CSRF token, data kept
            session.flash(f"Welcome, {user}.")
        else:
            session.logout()  # the stored session is deleted
            session.flash("You are logged out.")  # lands in a fresh session
        start_response("303 See Other", [("Location", "/")])
        return [b""]

    if path != "/":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    session["count"] = session.get("count", 0) + 1
    messages = "".join(f"<p><em>{html.escape(m)}</em></p>" for _, m in session.pop_flashes())
    csrf = session.csrf_token()
    if session.user_id is None:
        account = LOGIN_FORM.format(csrf=csrf)
    else:
        account = LOGOUT_FORM.format(user=html.escape(session.user_id), csrf=csrf)
    body = PAGE.format(flashes=messages, count=session["count"], account=account)
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [body.encode()]


app = SessionMiddleware(demo, store=STORE)

if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    with make_server("127.0.0.1", 8000, app) as server:
        print("Serving on http://127.0.0.1:8000/ (Ctrl+C to stop)")
        server.serve_forever()
