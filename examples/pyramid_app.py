"""A Pyramid app with websession: a visit counter, login and logout, flash queues.

Run it with the standard library's server::

    python examples/pyramid_app.py

then open http://127.0.0.1:8000/. The session settings are Pyramid settings,
as they would be in an ini file (``session.url``, ``session.cookie_name``,
...); sessions go to ``example-sessions.db`` (SQLite) in the current
directory unless ``WEBSESSION_STORE`` names another store URL.
"""

from __future__ import annotations

import html
import os
from typing import Any

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPSeeOther
from pyramid.response import Response

PAGE = """<!doctype html>
<title>websession Pyramid example</title>
{flashes}
<p>You have seen this page {count} times.</p>
{account}
"""
LOGIN_FORM = """<form method="post" action="/login">
<input type="hidden" name="csrf_token" value="{csrf}">
<input name="user" placeholder="user name"> <button>Log in</button></form>"""
LOGOUT_FORM = """<p>Logged in as {user}.</p>
<form method="post" action="/logout">
<input type="hidden" name="csrf_token" value="{csrf}"><button>Log out</button></form>"""


def home(request: Any) -> Response:
    session = request.session
    session["count"] = session.get("count", 0) + 1
    notices = [f"<p><em>{html.escape(m)}</em></p>" for m in session.pop_flash()]
    warnings = [f"<p><strong>{html.escape(m)}</strong></p>" for m in session.pop_flash("warn")]
    csrf = session.get_csrf_token()
    if session.user_id is None:
        account = LOGIN_FORM.format(csrf=csrf)
    else:
        account = LOGOUT_FORM.format(user=html.escape(session.user_id), csrf=csrf)
    body = PAGE.format(flashes="".join(notices + warnings), count=session["count"], account=account)
    return Response(body, content_type="text/html")


def login(request: Any) -> HTTPSeeOther:
    # Pyramid checked the csrf_token field already (require_csrf=True below).
    user = request.POST.get("user", "").strip() or "guest"
    request.session.login(user)  # new session id and CSRF token, data kept
    request.session.flash(f"Welcome, {user}.")
    return HTTPSeeOther(location="/")


def logout(request: Any) -> HTTPSeeOther:
    request.session.invalidate()  # the stored session is deleted
    request.session.flash("You are logged out.", "warn")  # lands in a fresh session
    return HTTPSeeOther(location="/")


def main(global_config: dict[str, Any] | None = None, **settings: Any) -> Any:
    """The paste entry point: ``use = call:pyramid_app:main`` in an ini file works too."""
    settings.setdefault("session.url", "sqlite:///example-sessions.db")
    with Configurator(settings=settings) as config:
        config.include("websession.integrations.pyramid")
        config.set_default_csrf_options(require_csrf=True)
        config.add_route("home", "/")
        config.add_route("login", "/login")
        config.add_route("logout", "/logout")
        config.add_view(home, route_name="home", request_method="GET")
        config.add_view(login, route_name="login", request_method="POST")
        config.add_view(logout, route_name="logout", request_method="POST")
        return config.make_wsgi_app()


app = main(
    {},
    **{
        "session.url": os.environ.get("WEBSESSION_STORE", "sqlite:///example-sessions.db"),
        "session.idle_timeout": "1800",
    },
)

if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    with make_server("127.0.0.1", 8000, app) as server:
        print("Serving on http://127.0.0.1:8000/ (Ctrl+C to stop)")
        server.serve_forever()
