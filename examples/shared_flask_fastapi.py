"""One session, two frameworks: a Flask app and a FastAPI app on one domain.

Both use websession with the same store and the default cookie name
``session``, so a visitor who signs in on one is signed in on the other, and
data and flash messages set on either side are seen on both.

Run everything in one process (FastAPI at ``/``, Flask at ``/flask``)::

    python examples/shared_flask_fastapi.py
    curl -c jar -d user=alice http://127.0.0.1:8000/flask/login   # sign in through Flask
    curl -b jar http://127.0.0.1:8000/whoami                      # FastAPI sees alice

Or as two servers on one host, the usual deployment (cookies are per host, not
per port, so both servers receive the same cookie)::

    python examples/shared_flask_fastapi.py flask --port 8001
    python examples/shared_flask_fastapi.py fastapi --port 8002

The store is ``$WEBSESSION_STORE`` (default ``sqlite:///shared-sessions.db``);
one SQLite file serves several processes on one host.
"""

from __future__ import annotations

import argparse
import os
from datetime import timedelta
from typing import Any

import flask
from asgiref.wsgi import WsgiToAsgi
from fastapi import FastAPI, Form
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.routing import Mount

from websession import store_from_url
from websession.integrations import flask as websession_flask
from websession.integrations.fastapi import SessionDep
from websession.integrations.flask import SessionInterface
from websession.integrations.starlette import SessionMiddleware

SECRET_KEY = os.environ.get("SECRET_KEY", "change-me-to-a-long-random-secret-key")
STORE_URL = os.environ.get("WEBSESSION_STORE", "sqlite:///shared-sessions.db")
#: Both sides give sessions the same lifetime, so whichever saves last sets the same expiry.
LIFETIME = timedelta(days=14)


def make_flask_app(store: Any) -> flask.Flask:
    """The Flask side: signs users in, sets a cart and a Markup greeting, shows flashes."""
    app = flask.Flask(__name__)
    app.secret_key = SECRET_KEY
    app.config["PERMANENT_SESSION_LIFETIME"] = LIFETIME
    app.session_interface = SessionInterface(store)

    @app.post("/login")
    def login() -> Any:
        # A real app checks a password (and a CSRF token) here.
        user = flask.request.form.get("user", "")
        if not user:
            return {"error": "post user=NAME"}, 400
        websession_flask.login(user)  # rotates the id; the new cookie serves both apps
        flask.session["cart"] = ["apple"]
        flask.flash(f"Signed in as {user} (by Flask)", "info")
        return {"user": user}

    @app.post("/greeting")
    def greeting() -> Any:
        # Markup is Flask's (Jinja's) type; websession stores it tagged, and a
        # FastAPI app reading the session gets it back as text it can use.
        flask.session["greeting"] = Markup("<b>Hello</b> from Flask")
        return {"ok": True}

    @app.get("/whoami")
    def whoami() -> Any:
        session = websession_flask.current_session()
        greeting = session.get("greeting")
        return {
            "user": session.user_id,
            "cart": session.get("cart", []),
            "greeting": greeting,
            "greeting_type": type(greeting).__name__,
        }

    @app.get("/messages")
    def messages() -> Any:
        return {"messages": flask.get_flashed_messages(with_categories=True)}

    return app


def make_fastapi_app(store: Any) -> FastAPI:
    """The FastAPI side: reads the user and data Flask set, adds to the cart, flashes, logs out."""
    app = FastAPI()
    app.add_middleware(
        SessionMiddleware,
        secret_key=SECRET_KEY,
        store=store,
        max_age=int(LIFETIME.total_seconds()),
    )

    @app.get("/whoami")
    def whoami(session: SessionDep) -> dict[str, Any]:
        greeting = session.get("greeting")
        return {
            "user": session.user_id,
            "cart": session.get("cart", []),
            "greeting": None if greeting is None else str(greeting),
        }

    @app.post("/cart")
    def add_to_cart(session: SessionDep, item: str = Form()) -> dict[str, Any]:
        session["cart"] = [*session.get("cart", []), item]
        return {"cart": session["cart"]}

    @app.post("/flash")
    def flash(session: SessionDep, message: str = Form()) -> dict[str, bool]:
        session.flash(message, "info")  # Flask's get_flashed_messages() shows it
        return {"ok": True}

    @app.post("/logout")
    def logout(session: SessionDep) -> dict[str, bool]:
        session.logout()  # the record is deleted: signed out of both apps
        return {"ok": True}

    return app


def make_app(store: Any = None) -> Starlette:
    """One ASGI app: Flask mounted at ``/flask`` (through asgiref's WSGI adapter), FastAPI at ``/``.

    ``store`` is shared by both (default: the store ``$WEBSESSION_STORE`` names).
    """
    if store is None:
        store = store_from_url(STORE_URL)
    return Starlette(
        routes=[
            Mount("/flask", app=WsgiToAsgi(make_flask_app(store))),
            Mount("/", app=make_fastapi_app(store)),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("side", nargs="?", choices=["both", "flask", "fastapi"], default="both")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    store = store_from_url(STORE_URL)
    if args.side == "flask":
        from wsgiref.simple_server import make_server

        with make_server(args.host, args.port, make_flask_app(store)) as server:
            print(f"Flask on http://{args.host}:{server.server_port}/", flush=True)
            server.serve_forever()
        return
    import uvicorn

    app: Any = make_fastapi_app(store) if args.side == "fastapi" else make_app(store)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
