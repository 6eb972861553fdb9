"""The demo shop: a plain WSGI app wrapped in :class:`websession.wsgi.SessionMiddleware`.

It shows what a real application does with a session: sign-in with id
rotation, sign-out, flash messages shown once, a CSRF token on every form, a
cart kept in the session (and so surviving server restarts), a page that
shows the session's own record, and a "your devices" page that lists every
session of the signed-in user and signs any of them out. Standard library
only, so it runs on a plain ``pip install 'websession[cli]'``.
"""

from __future__ import annotations

import socket
import socketserver
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import parse_qs, unquote, urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from ..config import SessionConfig
from ..errors import SessionConfigError
from ..identity import UserIndexMissing
from ..session import Session
from ..wsgi import SessionMiddleware, get_session
from . import pages
from .users import SEED_EMAIL, SEED_PASSWORD, SignupError, User, UserDB

__all__ = ["DEFAULT_STORE_URL", "DemoApp", "make_app", "make_server", "serve"]

DEFAULT_STORE_URL = "sqlite:///websession-demo.db"
MAX_FORM_BYTES = 64 * 1024
MAX_QUANTITY = 99

StartResponse = Callable[..., Any]

_SECURITY_HEADERS = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'",
    ),
]


@dataclass(slots=True)
class Response:
    status: str
    body: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)


class BadRequest(Exception):
    """The request cannot be handled; ``status`` and ``message`` become the error page."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def redirect(location: str) -> Response:
    """Redirect-after-POST: 303 makes the browser follow with a GET, so reload never re-posts."""
    return Response("303 See Other", headers=[("Location", location)])


def read_form(environ: dict[str, Any]) -> dict[str, str]:
    """The url-encoded form in the request body (first value of each field)."""
    content_type = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise BadRequest("400 Bad Request", "The Content-Length header is not a number.") from None
    if length > MAX_FORM_BYTES:
        raise BadRequest("413 Content Too Large", "That form is far too large.")
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    if content_type != "application/x-www-form-urlencoded":
        return {}
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


class DemoApp:
    """The shop itself. Expects the session in ``environ`` (wrap it in the middleware).

    ``sessions`` is that middleware: it lists and revokes a user's sessions for
    the devices page.
    """

    def __init__(
        self,
        users: UserDB,
        *,
        config: SessionConfig,
        store_url: str,
        sessions: SessionMiddleware,
    ) -> None:
        self.users = users
        self.config = config
        self.store_url = store_url
        self.sessions = sessions
        self._routes: dict[str, dict[str, Callable[[Session, dict[str, Any]], Response]]] = {
            "/": {"GET": self.home},
            "/login": {"GET": self.login_form, "POST": self.login},
            "/signup": {"POST": self.signup},
            "/logout": {"POST": self.logout},
            "/cart": {"GET": self.cart},
            "/cart/add": {"POST": self.cart_add},
            "/cart/remove": {"POST": self.cart_remove},
            "/session": {"GET": self.this_session},
            "/devices": {"GET": self.devices},
            "/devices/revoke": {"POST": self.revoke_device},
            "/devices/revoke-others": {"POST": self.revoke_other_devices},
        }

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        handlers = self._routes.get(environ.get("PATH_INFO") or "/")
        if handlers is None:
            response = self.error("404 Not Found", "There is no such page in the demo shop.")
        else:
            handler = handlers.get("GET" if method == "HEAD" else method)
            if handler is None:
                response = self.error("405 Method Not Allowed", "That page does not take this.")
                response.headers.append(("Allow", ", ".join(sorted(handlers))))
            else:
                response = self.dispatch(handler, method, environ)
        body = response.body.encode("utf-8")
        headers = list(response.headers)
        if response.body:
            headers.append(("Content-Type", "text/html; charset=utf-8"))
        headers.append(("Content-Length", str(len(body))))
        headers.extend(_SECURITY_HEADERS)
        start_response(response.status, headers)
        return [b""] if method == "HEAD" else [body]

    def dispatch(
        self,
        handler: Callable[[Session, dict[str, Any]], Response],
        method: str,
        environ: dict[str, Any],
    ) -> Response:
        session = get_session(environ)
        try:
            if method == "POST":
                form = read_form(environ)
                # Every POST changes state, so every POST must prove it came from our own form.
                if not session.check_csrf(form.get("csrf_token")):
                    raise BadRequest(
                        "403 Forbidden",
                        "The form's security token is missing or wrong (CSRF protection). "
                        "Go back, reload the page and submit the form again.",
                    )
                return handler(session, form)
            return handler(session, {})
        except BadRequest as exc:
            return self.error(exc.status, exc.message)

    # -- helpers -----------------------------------------------------------------------

    def error(self, status: str, message: str) -> Response:
        return Response(status, pages.error_page(status, message))

    def current_user(self, session: Session) -> User | None:
        return self.users.get(session.user_id)

    @staticmethod
    def cart_of(session: Session) -> dict[str, int]:
        cart = session.get("cart")
        return cart if isinstance(cart, dict) else {}

    def page(self, session: Session, title: str, body: str, status: str = "200 OK") -> Response:
        user = self.current_user(session)
        html = pages.layout(
            title,
            body,
            user_name=user.name if user else None,
            # Only signed-in pages carry a form in the header (sign out); a guest's
            # session then stays empty, and unstored, until a form of its own needs a token.
            csrf_token=session.csrf_token() if user else None,
            cart_count=sum(self.cart_of(session).values()),
            flashes=session.pop_flashes(),
        )
        return Response(status, html)

    # -- pages -----------------------------------------------------------------------

    def home(self, session: Session, form: dict[str, Any]) -> Response:
        user = self.current_user(session)
        name = user.name if user else None
        body = pages.home_page(name, sum(self.cart_of(session).values()))
        return self.page(session, "Home", body)

    def login_form(
        self,
        session: Session,
        form: dict[str, Any],
        *,
        status: str = "200 OK",
        login_error: str | None = None,
        signup_error: str | None = None,
    ) -> Response:
        body = pages.login_page(
            session.csrf_token(),
            login_error=login_error,
            signup_error=signup_error,
            email=form.get("email", "") if login_error else "",
            signup_email=form.get("email", "") if signup_error else "",
            signup_name=form.get("name", "") if signup_error else "",
            demo_email=SEED_EMAIL,
            demo_password=SEED_PASSWORD,
        )
        return self.page(session, "Sign in", body, status)

    def login(self, session: Session, form: dict[str, Any]) -> Response:
        user = self.users.authenticate(form.get("email", ""), form.get("password", ""))
        if user is None:
            return self.login_form(
                session, form, status="400 Bad Request", login_error="Wrong email or password."
            )
        session.login(user.id)
        session.flash(f"Welcome back, {user.name}!", "success")
        return redirect("/")

    def signup(self, session: Session, form: dict[str, Any]) -> Response:
        try:
            user = self.users.sign_up(
                form.get("email", ""), form.get("name", ""), form.get("password", "")
            )
        except SignupError as exc:
            return self.login_form(session, form, status="400 Bad Request", signup_error=str(exc))
        session.login(user.id)
        session.flash(f"Welcome, {user.name}! Your account is ready.", "success")
        return redirect("/")

    def logout(self, session: Session, form: dict[str, Any]) -> Response:
        session.logout()
        # Lands in a fresh anonymous session: the signed-in one is deleted from the store.
        session.flash("You have been signed out.", "info")
        return redirect("/")

    def cart(self, session: Session, form: dict[str, Any]) -> Response:
        return self.page(
            session, "Cart", pages.cart_page(self.cart_of(session), session.csrf_token())
        )

    def cart_add(self, session: Session, form: dict[str, Any]) -> Response:
        product = form.get("product", "")
        if product not in pages.PRODUCT_BY_ID:
            raise BadRequest("400 Bad Request", "The shop does not sell that.")
        cart = session.get("cart")
        if not isinstance(cart, dict):
            cart = session["cart"] = {}
        # An in-place change: websession notices it by comparing the encoded payload.
        cart[product] = min(cart.get(product, 0) + 1, MAX_QUANTITY)
        return redirect("/cart")

    def cart_remove(self, session: Session, form: dict[str, Any]) -> Response:
        cart = session.get("cart")
        product = form.get("product", "")
        if isinstance(cart, dict) and product in cart:
            if cart[product] > 1:
                cart[product] -= 1
            else:
                del cart[product]
        return redirect("/cart")

    def this_session(self, session: Session, form: dict[str, Any]) -> Response:
        user = self.current_user(session)
        idle = self.config.idle_seconds
        absolute = self.config.absolute_seconds
        rows = [
            ("Handle", session.handle or "\N{EM DASH} (not stored)"),
            ("User", f"{user.name} <{user.email}> (id {user.id})" if user else "Guest"),
            ("Created", pages.when(session.created)),
            ("Last seen", pages.when(session.last_seen)),
            ("Expires", pages.when(session.expires)),
            ("Idle timeout", f"{pages.relative(idle).removeprefix('in ')}, renewed on activity"),
            (
                "Absolute timeout",
                "none"
                if absolute is None
                else f"{pages.relative(absolute).removeprefix('in ')} after creation",
            ),
            ("Cart items", str(sum(self.cart_of(session).values()))),
            ("Store", self.store_url),
        ]
        body = pages.session_page(rows, stored=session.handle is not None, store_url=self.store_url)
        return self.page(session, "This session", body)

    # -- your devices: every session of the signed-in user ----------------------------------

    def signed_in(self, session: Session) -> User | None:
        """The user, or None after queueing a "sign in first" flash for the redirect."""
        user = self.current_user(session)
        if user is None:
            session.flash("Sign in to see the devices you are signed in on.", "info")
        return user

    def devices(self, session: Session, form: dict[str, Any]) -> Response:
        user = self.signed_in(session)
        if user is None:
            return redirect("/login")
        try:
            found = self.sessions.sessions_for(str(user.id), current=session)
        except UserIndexMissing:
            body = pages.no_devices_page(self.store_url)
        else:
            body = pages.devices_page(found, session.csrf_token())
        return self.page(session, "Your devices", body)

    def revoke_device(self, session: Session, form: dict[str, Any]) -> Response:
        user = self.signed_in(session)
        if user is None:
            return redirect("/login")
        handle = form.get("handle", "")
        if handle and handle == session.handle:
            # The page offers no button for this browser; "Sign out" is the way.
            session.flash("That is this browser: use Sign out to end it.", "info")
            return redirect("/devices")
        try:
            revoked = self.sessions.revoke(str(user.id), handle)
        except UserIndexMissing:
            return redirect("/devices")  # which explains why there is nothing to revoke
        if revoked:
            session.flash(f"Signed out the session {handle}.", "success")
        else:
            # Already over (expired, signed out), or not this user's at all.
            session.flash("That session is no longer signed in.", "info")
        return redirect("/devices")

    def revoke_other_devices(self, session: Session, form: dict[str, Any]) -> Response:
        user = self.signed_in(session)
        if user is None:
            return redirect("/login")
        try:
            count = self.sessions.revoke_user(str(user.id), keep=session)
        except UserIndexMissing:
            return redirect("/devices")
        others = "session" if count == 1 else "sessions"
        session.flash(
            f"Signed out {count} other {others}; this browser stays signed in.", "success"
        )
        return redirect("/devices")


def sqlite_path(store_url: str) -> str | None:
    """The database file of a ``sqlite:///`` URL (as :func:`websession.store_from_url` reads it)."""
    parts = urlsplit(store_url)
    if parts.scheme.lower() != "sqlite" or parts.netloc:
        return None
    path = unquote(parts.path)
    path = path[1:] if path.startswith("/") else path
    return path or None


def make_app(
    store_url: str = DEFAULT_STORE_URL, *, users_db: str | None = None, **session_options: Any
) -> SessionMiddleware:
    """The demo as a WSGI app on the store ``store_url``.

    Users are kept in the ``demo_users`` table of the same SQLite file; for any
    other store give ``users_db`` (a path to an SQLite file). Extra keyword
    arguments go to :class:`~websession.wsgi.SessionMiddleware` (e.g.
    ``idle_timeout=3600``).
    """
    if users_db is None:
        users_db = sqlite_path(store_url)
        if users_db is None:
            raise SessionConfigError(
                f"the demo keeps its users in SQLite: use a sqlite:/// store URL, not "
                f"{store_url!r}, or pass users_db='users.db'"
            )
    holder: list[DemoApp] = []

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        return holder[0](environ, start_response)

    # The middleware opens the store (and, for SQLite, creates the file in WAL mode)
    # before the users table is added to the same file.
    middleware = SessionMiddleware(app, store=store_url, **session_options)
    holder.append(
        DemoApp(
            UserDB(users_db), config=middleware.config, store_url=store_url, sessions=middleware
        )
    )
    return middleware


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    #: Run in each request's thread when it ends, e.g. to close that thread's store connection.
    thread_cleanups: tuple[Callable[[], None], ...] = ()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            for cleanup in self.thread_cleanups:
                cleanup()


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Drop the per-request access log line."""


def make_server(
    host: str, port: int, app: Callable[..., Iterable[bytes]], *, log_requests: bool = True
) -> WSGIServer:
    """A threaded ``wsgiref`` server for ``app`` on ``host:port`` (port 0: any free port)."""
    server_class = _ThreadingWSGIServer6 if ":" in host else _ThreadingWSGIServer
    handler = WSGIRequestHandler if log_requests else _QuietHandler
    server = server_class((host, port), handler)
    # Each request runs in a thread of its own; SQLite stores keep a connection per
    # thread, which is closed here rather than left to the garbage collector.
    close = getattr(getattr(app, "store", None), "close", None)
    if callable(close):
        server.thread_cleanups = (close,)
    server.set_app(app)
    return server


def server_url(server: WSGIServer) -> str:
    host, port = server.server_address[:2]
    if isinstance(host, bytes):
        host = host.decode()
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/"


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    store_url: str = DEFAULT_STORE_URL,
    *,
    out: TextIO | None = None,
) -> None:
    """Run the demo until Ctrl+C, printing its URL first."""
    out = sys.stdout if out is None else out
    app = make_app(store_url)
    with make_server(host, port, app) as server:
        print(f"websession demo running at {server_url(server)}", file=out)
        print(f"sessions and users stored in {store_url}; press Ctrl+C to stop", file=out)
        out.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("\nstopped", file=out)
