"""A Flask app on websession: a visit counter, a login form, flash messages and "remember me".

Run it with::

    python examples/flask_app.py        # or: flask --app examples/flask_app run

then open http://127.0.0.1:5000/. Sessions go to ``example-sessions.db``
(SQLite) in the current directory; set ``WEBSESSION_STORE`` to another store
URL, e.g. ``memory://`` or ``redis://localhost:6379/0``, to change that.
Everything below is plain Flask except the ``session_interface`` line and the
``login()`` / ``logout()`` calls, which rotate and destroy the session id.
"""

from __future__ import annotations

import os

from flask import (
    Flask,
    abort,
    flash,
    get_flashed_messages,
    redirect,
    render_template_string,
    request,
    session,
)
from werkzeug.wrappers import Response

from websession.integrations.flask import SessionInterface, current_session, login, logout

app = Flask(__name__)
app.session_interface = SessionInterface(
    os.environ.get("WEBSESSION_STORE", "sqlite:///example-sessions.db")
)

PAGE = """<!doctype html>
<title>websession Flask example</title>
{% for category, message in messages %}<p class="{{ category }}"><em>{{ message }}</em></p>
{% endfor %}<p>You have seen this page {{ count }} times.</p>
{% if user %}<p>Logged in as {{ user }}.</p>
<form method="post" action="/logout">
<input type="hidden" name="csrf" value="{{ csrf }}"><button>Log out</button></form>
{% else %}<form method="post" action="/login">
<input type="hidden" name="csrf" value="{{ csrf }}">
<input name="user" placeholder="user name">
<label><input type="checkbox" name="remember"> remember me</label>
<button>Log in</button></form>
{% endif %}"""


def check_csrf() -> None:
    if not current_session().check_csrf(request.form.get("csrf")):
        abort(403)


@app.get("/")
def index() -> str:
    session["count"] = session.get("count", 0) + 1
    return render_template_string(
        PAGE,
        messages=get_flashed_messages(with_categories=True),
        count=session["count"],
        user=current_session().user_id,
        csrf=current_session().csrf_token(),
    )


@app.post("/login")
def do_login() -> Response:
    check_csrf()
    user = request.form.get("user", "").strip() or "guest"
    login(user)  # a new session id and CSRF token; the data stays
    session.permanent = request.form.get("remember") == "on"  # Max-Age, or a browser cookie
    flash(f"Welcome, {user}.", "success")
    return redirect("/", 303)


@app.post("/logout")
def do_logout() -> Response:
    check_csrf()
    logout()  # the stored session is deleted
    flash("You are logged out.", "info")  # lands in a fresh session
    return redirect("/", 303)


if __name__ == "__main__":
    app.run(debug=False)
