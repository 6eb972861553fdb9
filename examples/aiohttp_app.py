"""An aiohttp app with websession: a visit counter, login and logout, flashes, a stream.

Run it::

    python examples/aiohttp_app.py

then open http://127.0.0.1:8000/. Sessions go to ``example-sessions.db``
(SQLite) in the current directory; set ``WEBSESSION_STORE`` to another store
URL, e.g. ``redis://localhost:6379/0``, to change that.
"""

from __future__ import annotations

import html
import os
from typing import Any

from aiohttp import web

from websession.integrations.aiohttp import get_session, setup

STORE = os.environ.get("WEBSESSION_STORE", "sqlite:///example-sessions.db")

PAGE = """<!doctype html>
<title>websession aiohttp example</title>
{flashes}
<p>You have seen this page {count} times.</p>
{account}
<p><a href="/stream">A streamed response</a></p>
"""
LOGIN_FORM = """<form method="post" action="/login">
<input type="hidden" name="csrf" value="{csrf}">
<input name="user" placeholder="user name"> <button>Log in</button></form>"""
LOGOUT_FORM = """<p>Logged in as {user}.</p>
<form method="post" action="/logout">
<input type="hidden" name="csrf" value="{csrf}"><button>Log out</button></form>"""


async def home(request: web.Request) -> web.Response:
    session = await get_session(request)
    session["count"] = session.get("count", 0) + 1
    flashes = "".join(f"<p><em>{html.escape(m)}</em></p>" for _, m in session.pop_flashes())
    csrf = session.csrf_token()
    if session.user_id is None:
        account = LOGIN_FORM.format(csrf=csrf)
    else:
        account = LOGOUT_FORM.format(user=html.escape(session.user_id), csrf=csrf)
    body = PAGE.format(flashes=flashes, count=session["count"], account=account)
    return web.Response(text=body, content_type="text/html")


async def login(request: web.Request) -> web.Response:
    session = await get_session(request)
    form = await request.post()
    if not session.check_csrf(str(form.get("csrf", ""))):
        raise web.HTTPForbidden(text="bad CSRF token")
    user = str(form.get("user", "")).strip() or "guest"
    session.login(user)  # new session id and CSRF token, data kept
    session.flash(f"Welcome, {user}.")
    raise web.HTTPSeeOther("/")


async def logout(request: web.Request) -> web.Response:
    session = await get_session(request)
    form = await request.post()
    if not session.check_csrf(str(form.get("csrf", ""))):
        raise web.HTTPForbidden(text="bad CSRF token")
    session.logout()  # the stored session is deleted
    session.flash("You are logged out.")  # lands in a fresh session
    raise web.HTTPSeeOther("/")


async def stream(request: web.Request) -> web.StreamResponse:
    session = await get_session(request)
    # Change the session before prepare(): the cookie goes out with the headers.
    session["streams"] = session.get("streams", 0) + 1
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    for line in (f"stream number {session['streams']}\n", "chunk one\n", "chunk two\n"):
        await response.write(line.encode())
    await response.write_eof()
    return response


def make_app(store: Any = STORE) -> web.Application:
    app = web.Application()
    setup(app, store=store)
    app.add_routes(
        [
            web.get("/", home),
            web.post("/login", login),
            web.post("/logout", logout),
            web.get("/stream", stream),
        ]
    )
    return app


app = make_app()

if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=8000)
