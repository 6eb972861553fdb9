"""The runnable demo: a small shop showing sign-in, flashes, CSRF and a cart kept in the session.

Run it with ``websession demo`` (or :func:`serve`); build the WSGI app for a
server of your own, or for tests, with :func:`make_app`.
"""

from .app import DEFAULT_STORE_URL, make_app, make_server, serve

__all__ = ["DEFAULT_STORE_URL", "make_app", "make_server", "serve"]
