"""What every benchmark module shares: the payload, the scenarios, request drivers, timing.

Requests are made in-process by calling the WSGI or ASGI callable with a
prebuilt environ or scope, so the figures hold the framework and the session
layer and nothing of an HTTP client or server.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

SCENARIOS = ("read", "write", "new", "untouched")
STORES = ("memory", "file", "sqlite", "cookie", "redis", "postgresql")
#: Stores on a server: requests wait on the network, so ASGI apps run on an event loop.
NETWORK_STORES = ("redis", "postgresql")

SECRET = "benchmark-secret-key-0123456789abcdef"

#: A realistic logged-in session: about 10 keys of the types web apps keep (~450 bytes as JSON).
PAYLOAD: dict[str, Any] = {
    "user_id": 48213,
    "name": "Ada Lovelace",
    "email": "ada.lovelace@example.com",
    "roles": ["editor", "billing"],
    "cart": [
        {"sku": "BK-1043", "qty": 1, "price_cents": 1999},
        {"sku": "MG-0007", "qty": 2, "price_cents": 650},
    ],
    "is_staff": False,
    "last_visit": "2024-05-01T09:30:00+00:00",
    "locale": "en-GB",
    "nonce": "Jx8y2Qv4dZcN0pW7sL1rTb3kHf6mAe9u",
    "counter": 0,
}

#: Keys a page render reads in the "read" scenario.
READ_KEYS = ("user_id", "name", "roles", "cart", "locale")


def read_session(session: Any) -> int:
    """What a page does with a session it only reads: look up a handful of keys."""
    total = 0
    for key in READ_KEYS:
        if session.get(key) is not None:
            total += 1
    return total


def write_session(session: Any) -> None:
    """What an action does: change one key of an existing session."""
    session["counter"] = session.get("counter", 0) + 1


def fill_session(session: Any) -> None:
    """What a login does: set the whole payload on a new session."""
    for key, value in PAYLOAD.items():
        session[key] = value


# -- WSGI ------------------------------------------------------------------------------

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def wsgi_environ(path: str, cookie: str | None = None) -> dict[str, Any]:
    """A GET request's environ, as a WSGI server would build it."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "localhost",
        "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64) benchmark",
        "HTTP_ACCEPT": "text/html",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if cookie:
        environ["HTTP_COOKIE"] = cookie
    return environ


def _ignore_start_response(
    status: str, headers: list[tuple[str, str]], exc_info: Any = None
) -> Any:
    return None


def wsgi_caller(app: WSGIApp, environ: dict[str, Any]) -> Callable[[], None]:
    """A zero-argument callable that makes one request (a fresh copy of ``environ`` each time)."""

    def call() -> None:
        body = app(dict(environ), _ignore_start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()

    return call


def wsgi_request(app: WSGIApp, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """Make one request and return its status, headers and body (used to seed and to check)."""
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"] = status
        seen["headers"] = list(headers)

    body = app(dict(environ), start_response)
    content = b"".join(body)
    close = getattr(body, "close", None)
    if close is not None:
        close()
    return seen["status"], seen["headers"], content


# -- ASGI ------------------------------------------------------------------------------

ASGIApp = Callable[[dict[str, Any], Any, Any], Any]


def asgi_scope(path: str, cookie: str | None = None) -> dict[str, Any]:
    """An http scope for a GET request, as an ASGI server would build it."""
    headers = [
        (b"host", b"localhost"),
        (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) benchmark"),
        (b"accept", b"text/html"),
    ]
    if cookie:
        headers.append((b"cookie", cookie.encode("latin-1")))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("ascii"),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 80),
        "state": {},
    }


_REQUEST_MESSAGE = {"type": "http.request", "body": b"", "more_body": False}


async def _receive() -> dict[str, Any]:
    return _REQUEST_MESSAGE


async def _drop(message: dict[str, Any]) -> None:
    return None


class Suspended(RuntimeError):
    """The ASGI app awaited something only an event loop can resume."""


def run_coroutine(coro: Any) -> None:
    """Run a coroutine that never suspends, without an event loop (no scheduling overhead)."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise Suspended("the app suspended; it needs an event loop")


def asgi_caller(app: ASGIApp, scope: dict[str, Any]) -> Callable[[], None]:
    """A zero-argument callable making one ASGI request, driven without an event loop."""

    def call() -> None:
        run_coroutine(app(dict(scope), _receive, _drop))

    return call


def asgi_request(
    app: ASGIApp, scope: dict[str, Any], *, looped: bool = False
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Make one request and return its status, headers and body (used to seed and to check).

    ``looped`` runs it on the benchmark's event loop (an app whose store awaits the network).
    """
    seen: dict[str, Any] = {"body": b""}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            seen["status"] = message["status"]
            seen["headers"] = [
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", ())
            ]
        elif message["type"] == "http.response.body":
            seen["body"] += message.get("body", b"")

    coro = app(dict(scope), _receive, send)
    if looped:
        bench_loop().run_until_complete(coro)
    else:
        run_coroutine(coro)
    return seen["status"], seen["headers"], seen["body"]


# -- an event loop, for apps and clients that await the network ------------------------------

_loop: asyncio.AbstractEventLoop | None = None


def bench_loop() -> asyncio.AbstractEventLoop:
    """The one event loop of this process: async clients stay bound to the loop they met first."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
        asyncio.set_event_loop(_loop)
    return _loop


def close_loop() -> None:
    """Close the benchmark's event loop (after every async client on it was closed)."""
    global _loop
    if _loop is not None and not _loop.is_closed():
        _loop.run_until_complete(_loop.shutdown_asyncgens())
        _loop.close()
    _loop = None


class Looped:
    """A zero-argument callable that awaits ``make()`` on the benchmark's event loop.

    ``repeat(n)`` awaits it ``n`` times within one run of the loop, so a timed
    figure holds the awaited work and its waits on the network, as in a server,
    and not the cost of starting the loop once per call.
    """

    def __init__(self, make: Callable[[], Awaitable[Any]]) -> None:
        self._make = make

    def __call__(self) -> None:
        bench_loop().run_until_complete(self._once())

    async def _once(self) -> None:
        await self._make()

    def repeat(self, n: int) -> None:
        bench_loop().run_until_complete(self._many(n))

    async def _many(self, n: int) -> None:
        make = self._make
        for _ in range(n):
            await make()


def call_n(fn: Callable[[], None], n: int) -> None:
    """Call ``fn`` ``n`` times (a :class:`Looped` callable does it inside one loop run)."""
    repeat = getattr(fn, "repeat", None)
    if repeat is not None:
        repeat(n)
        return
    for _ in range(n):
        fn()


def looped_asgi_caller(app: ASGIApp, scope: dict[str, Any]) -> Looped:
    """Like :func:`asgi_caller`, for an app that suspends: it runs on the benchmark's loop."""

    def request() -> Awaitable[Any]:
        result: Awaitable[Any] = app(dict(scope), _receive, _drop)
        return result

    return Looped(request)


def cookies_from(headers: Iterable[tuple[str, str]]) -> str | None:
    """The Cookie header a browser would send back after these response headers."""
    pairs = [
        value.split(";", 1)[0].strip() for name, value in headers if name.lower() == "set-cookie"
    ]
    pairs = [p for p in pairs if "=" in p and p.split("=", 1)[1] not in ("", '""', "''")]
    return "; ".join(pairs) or None


# -- cases ---------------------------------------------------------------------------------


@dataclass
class Case:
    """One implementation on one store inside one framework family.

    ``build(scenario)`` returns a zero-argument callable making one request of
    that scenario, after any seeding it needs; it raises :class:`Unavailable`
    when the implementation has no such store here.
    """

    family: str
    impl: str
    store: str
    build: Callable[[str], Callable[[], None]]
    note: str = ""
    is_websession: bool = False
    #: This case's own baseline, when the family's does not fit (an app run on an event loop).
    baseline: Callable[[str], Callable[[], None]] | None = None
    #: ``reference(scenario)``: the raw client work the case is judged against, or None.
    reference: Callable[[str], Callable[[], None] | None] | None = None


class Unavailable(RuntimeError):
    """This implementation cannot run here (a missing package or store); the reason is shown."""


@contextlib.contextmanager
def needs(reason: str) -> Iterator[None]:
    """Imports in this block may fail: then the case is :class:`Unavailable`, for ``reason``."""
    try:
        yield
    except ImportError as exc:
        raise Unavailable(f"{reason}: {exc}") from None


@dataclass
class Family:
    """A framework and its own baseline: the same app with no session layer."""

    name: str
    title: str
    baseline: Callable[[str], Callable[[], None]]
    cases: list[Case] = field(default_factory=list)
    cleanup: Callable[[], None] | None = None


# -- timing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Nanoseconds per request for each repeat, and the iterations per repeat."""

    per_call_ns: tuple[float, ...]
    iterations: int

    @property
    def median_us(self) -> float:
        return statistics.median(self.per_call_ns) / 1000.0


@dataclass(frozen=True)
class Budget:
    """How long to measure: repeats of a calibrated number of iterations."""

    repeats: int = 7
    target_seconds: float = 0.05
    min_iterations: int = 10
    max_iterations: int = 200_000
    #: A fixed iteration count (skips calibration), for smoke runs.
    iterations: int | None = None


def _time(fn: Callable[[], None], n: int) -> int:
    clock = time.perf_counter_ns
    start = clock()
    call_n(fn, n)
    return clock() - start


def measure(fn: Callable[[], None], budget: Budget) -> Timing:
    """Warm up, calibrate the iteration count, then time ``budget.repeats`` runs."""
    fn()
    if budget.iterations is not None:
        n = budget.iterations
        _time(fn, max(1, n // 4))
    else:
        n = 1
        target_ns = budget.target_seconds * 1e9
        # Double until one run takes a tenth of the target; these probes are the warm-up.
        while True:
            elapsed = _time(fn, n)
            if elapsed >= target_ns / 10 or n >= budget.max_iterations:
                break
            n *= 2
        n = int(n * target_ns / max(elapsed, 1))
        n = max(budget.min_iterations, min(budget.max_iterations, n))
    samples = tuple(_time(fn, n) / n for _ in range(budget.repeats))
    return Timing(samples, n)


def check_body(route_result: bytes, what: str) -> None:
    """Fail loudly when a seeded session does not come back (a broken setup, not a slow one)."""
    if route_result != str(len(READ_KEYS)).encode():
        raise RuntimeError(
            f"{what}: the seeded session did not load (check returned {route_result!r})"
        )


def wsgi_builder(app: WSGIApp, what: str) -> Callable[[str], Callable[[], None]]:
    """``build(scenario)`` for a WSGI app serving /read, /write, /new, /untouched and /check."""

    def build(scenario: str) -> Callable[[], None]:
        cookie = None
        if scenario != "new":
            status, headers, _ = wsgi_request(app, wsgi_environ("/new"))
            cookie = cookies_from(headers)
            if not status.startswith("200") or cookie is None:
                raise RuntimeError(f"{what}: seeding gave {status} and no cookie")
            check_body(wsgi_request(app, wsgi_environ("/check", cookie))[2], what)
        environ = wsgi_environ("/" + scenario, cookie)
        status = wsgi_request(app, environ)[0]
        if not status.startswith("200"):
            raise RuntimeError(f"{what}: /{scenario} answered {status}")
        return wsgi_caller(app, environ)

    return build


def asgi_builder(
    app: ASGIApp, what: str, *, looped: bool = False
) -> Callable[[str], Callable[[], None]]:
    """``build(scenario)`` for an ASGI app serving /read, /write, /new, /untouched and /check.

    ``looped``: the app awaits the network, so it runs on the benchmark's event loop.
    """

    def build(scenario: str) -> Callable[[], None]:
        cookie = None
        if scenario != "new":
            status, headers, _ = asgi_request(app, asgi_scope("/new"), looped=looped)
            cookie = cookies_from(headers)
            if status != 200 or cookie is None:
                raise RuntimeError(f"{what}: seeding gave {status} and no cookie")
            check_body(asgi_request(app, asgi_scope("/check", cookie), looped=looped)[2], what)
        scope = asgi_scope("/" + scenario, cookie)
        status = asgi_request(app, scope, looped=looped)[0]
        if status != 200:
            raise RuntimeError(f"{what}: /{scenario} answered {status}")
        if looped:
            return looped_asgi_caller(app, scope)
        return asgi_caller(app, scope)

    return build
