"""web.py's session example (index, login, logout) on websession's WSGI middleware.

web.py keeps its session in ``web.session.Session(app, store)``; here the
web.py application is wrapped by :class:`websession.wsgi.SessionMiddleware`
instead, and a handler reads the session from the WSGI environ. Run it::

    python examples/webpy_app.py

then open http://127.0.0.1:8000/. Sessions go to ``example-sessions.db``
(SQLite) in the current directory unless ``WEBSESSION_STORE`` names another
store URL.
"""

from __future__ import annotations

import html
import os

import web

from websession import Session
from websession.wsgi import SessionMiddleware, get_session

STORE = os.environ.get("WEBSESSION_STORE", "sqlite:///example-sessions.db")

# web.py's debug mode reloads changed modules on every request; an example needs none of it.
web.config.debug = False

urls = (
    "/",
    "Index",
    "/login",
    "Login",
    "/logout",
    "Logout",
)


def session() -> Session:
    """The request's websession session (web.py's ``web.ctx.env`` is the WSGI environ)."""
    return get_session(web.ctx.env)


def checked_form() -> web.storage:
    form = web.input(user="", csrf="")
    if not session().check_csrf(form.csrf):
        raise web.forbidden("bad CSRF token")
    return form


class Index:
    def GET(self) -> str:
        current = session()
        current["count"] = current.get("count", 0) + 1
        flashes = "".join(f"<p><em>{html.escape(m)}</em></p>" for _, m in current.pop_flashes())
        csrf = current.csrf_token()
        if current.user_id is None:
            status = "<h1>You are not logged in.</h1>"
            form = (
                '<form method="post" action="/login">'
                f'<input type="hidden" name="csrf" value="{csrf}">'
                '<input name="user" placeholder="user name"> <button>Log in now</button></form>'
            )
        else:
            status = f"<h1>You are logged in as {html.escape(current.user_id)}.</h1>"
            form = (
                '<form method="post" action="/logout">'
                f'<input type="hidden" name="csrf" value="{csrf}"><button>Log out</button></form>'
            )
        web.header("Content-Type", "text/html; charset=utf-8")
        visits = f"<p>You have seen this page {current['count']} times.</p>"
        return flashes + status + visits + form


class Login:
    def POST(self) -> None:
        user = checked_form().user.strip() or "guest"
        session().login(user)  # new session id and CSRF token, data kept
        session().flash(f"Welcome, {user}.")
        raise web.seeother("/")


class Logout:
    def POST(self) -> None:
        checked_form()
        session().logout()  # web.py's session.kill(): the stored session is deleted
        session().flash("You are logged out.")  # lands in a fresh session
        raise web.seeother("/")


application = web.application(urls, globals())
app = SessionMiddleware(application.wsgifunc(), store=STORE)

if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    with make_server("127.0.0.1", 8000, app) as server:
        print("Serving on http://127.0.0.1:8000/ (Ctrl+C to stop)")
        server.serve_forever()
