"""The demo's HTML: small functions returning strings, everything dynamic escaped.

No template engine: the demo must run on a plain ``pip install 'websession[cli]'``.
Every value that did not come from this file goes through :func:`e`.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..identity import SessionInfo

__all__ = [
    "PRODUCTS",
    "Product",
    "cart_page",
    "device_label",
    "devices_page",
    "error_page",
    "home_page",
    "layout",
    "login_page",
    "no_devices_page",
    "session_page",
]

Product = tuple[str, str, int]  # id, name, price in cents
PRODUCTS: tuple[Product, ...] = (
    ("tea", "Green tea, 100 g", 650),
    ("mug", "Stoneware mug", 1400),
    ("honey", "Heather honey, 250 g", 890),
    ("biscuits", "Oat biscuits", 320),
)
PRODUCT_BY_ID = {p[0]: p for p in PRODUCTS}

_CSS = """
*{box-sizing:border-box}
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2328;
background:#f6f8fa}
header{background:#24292f;color:#fff;padding:.6rem 1.5rem;display:flex;gap:1.2rem;
align-items:center;flex-wrap:wrap}
header a{color:#fff;text-decoration:none}header a:hover{text-decoration:underline}
header .brand{font-weight:600;margin-right:auto}
header form{margin:0}
main{max-width:46rem;margin:1.5rem auto;padding:0 1rem}
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:1rem 1.4rem;
margin-bottom:1rem}
h1{font-size:1.6rem;margin:.2rem 0 1rem}h2{font-size:1.15rem;margin:.2rem 0 .6rem}
.flash{background:#dafbe1;border:1px solid #4ac26b;border-radius:6px;padding:.5rem .9rem;
margin-bottom:1rem}
.error{background:#ffebe9;border:1px solid #ff8182;border-radius:6px;padding:.5rem .9rem;
margin-bottom:.8rem}
label{display:block;margin:.4rem 0 .1rem;font-weight:500}
input[type=email],input[type=password],input[type=text]{width:100%;padding:.4rem .5rem;
border:1px solid #d0d7de;border-radius:6px;font:inherit}
button{font:inherit;padding:.3rem .9rem;border-radius:6px;border:1px solid #1f883d;
background:#1f883d;color:#fff;cursor:pointer}
button.quiet{background:transparent;border-color:#8c959f;color:inherit}
header button.quiet{color:#fff}
table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #eaeef2;vertical-align:top}
td.num,th.num{text-align:right}
.hint{color:#59636e;font-size:.9rem}
code{background:#eff1f3;padding:.1rem .3rem;border-radius:4px}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(17rem,1fr));gap:1rem}
.badge{background:#ddf4ff;border:1px solid #54aeff;border-radius:1rem;padding:0 .6rem;
font-size:.85rem;font-weight:500;margin-left:.5rem;vertical-align:middle}
.device th{width:9rem;font-weight:500;color:#59636e}
.device td{word-break:break-word}
"""


def e(value: object) -> str:
    """HTML-escape ``value`` (quotes included, so it is safe in attributes too)."""
    return html.escape(str(value), quote=True)


def money(cents: int) -> str:
    return f"\N{EURO SIGN}{cents // 100}.{cents % 100:02d}"


def csrf_field(token: str) -> str:
    return f'<input type="hidden" name="csrf_token" value="{e(token)}">'


def layout(
    title: str,
    body: str,
    *,
    user_name: str | None,
    csrf_token: str | None,
    cart_count: int,
    flashes: Sequence[tuple[str, Any]] = (),
) -> str:
    """A whole page: the navigation bar, this request's flash messages, then ``body``."""
    if user_name is not None and csrf_token is not None:
        account = (
            '<a href="/devices">Your devices</a>'
            f"<span>Signed in as <strong>{e(user_name)}</strong></span>"
            f'<form method="post" action="/logout">{csrf_field(csrf_token)}'
            '<button class="quiet" type="submit">Sign out</button></form>'
        )
    else:
        account = '<a href="/login">Sign in</a>'
    notes = "".join(
        f'<div class="flash" role="status" data-category="{e(category)}">{e(message)}</div>'
        for category, message in flashes
    )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{e(title)} \N{EN DASH} websession demo</title><style>{_CSS}</style></head>"
        "<body><header>"
        '<a class="brand" href="/">websession demo shop</a>'
        f'<a href="/cart">Cart ({cart_count})</a>'
        '<a href="/session">This session</a>'
        f"{account}</header>"
        f"<main>{notes}{body}</main></body></html>\n"
    )


def home_page(user_name: str | None, cart_count: int) -> str:
    name = user_name if user_name is not None else "Guest"
    if user_name is None:
        lead = '<p><a href="/login">Sign in or create an account</a> to see id rotation.</p>'
    else:
        lead = (
            "<p>Your session id was rotated when you signed in: the old one is worthless. "
            '<a href="/devices">Your devices</a> lists every browser you are signed in on.</p>'
        )
    items = "item" if cart_count == 1 else "items"
    return (
        f'<div class="card"><h1>Hello, {e(name)}!</h1>{lead}'
        f'<p>Your <a href="/cart">cart</a> holds {cart_count} {items}. It lives in the session, '
        "in an SQLite file, so it survives a restart of the server.</p>"
        '<p>See <a href="/session">this session</a>: when it was created, when it was last '
        "seen and when it expires.</p></div>"
    )


def login_page(
    csrf_token: str,
    *,
    login_error: str | None = None,
    signup_error: str | None = None,
    email: str = "",
    signup_email: str = "",
    signup_name: str = "",
    demo_email: str,
    demo_password: str,
) -> str:
    login_note = f'<div class="error" role="alert">{e(login_error)}</div>' if login_error else ""
    signup_note = f'<div class="error" role="alert">{e(signup_error)}</div>' if signup_error else ""
    return (
        '<h1>Sign in</h1><div class="cols">'
        '<div class="card"><h2>I have an account</h2>'
        f"{login_note}"
        f'<form method="post" action="/login">{csrf_field(csrf_token)}'
        '<label for="email">Email</label>'
        f'<input id="email" type="email" name="email" value="{e(email)}" required '
        'autocomplete="username">'
        '<label for="password">Password</label>'
        '<input id="password" type="password" name="password" required '
        'autocomplete="current-password">'
        '<p><button type="submit">Sign in</button></p></form>'
        f'<p class="hint">Try <code>{e(demo_email)}</code> with password '
        f"<code>{e(demo_password)}</code>.</p></div>"
        '<div class="card"><h2>Create an account</h2>'
        f"{signup_note}"
        f'<form method="post" action="/signup">{csrf_field(csrf_token)}'
        '<label for="name">Name</label>'
        f'<input id="name" type="text" name="name" value="{e(signup_name)}" required '
        'autocomplete="name">'
        '<label for="signup-email">Email</label>'
        f'<input id="signup-email" type="email" name="email" value="{e(signup_email)}" '
        'required autocomplete="email">'
        '<label for="new-password">Password (8 characters or more)</label>'
        '<input id="new-password" type="password" name="password" required minlength="8" '
        'autocomplete="new-password">'
        '<p><button type="submit">Create account</button></p></form></div>'
        "</div>"
    )


def cart_page(cart: dict[str, int], csrf_token: str) -> str:
    token = csrf_field(csrf_token)
    rows = []
    total = 0
    for product_id, quantity in cart.items():
        product = PRODUCT_BY_ID.get(product_id)
        if product is None:
            continue
        total += product[2] * quantity
        rows.append(
            f"<tr><td>{e(product[1])}</td><td class='num'>{quantity}</td>"
            f"<td class='num'>{money(product[2] * quantity)}</td>"
            f'<td><form method="post" action="/cart/remove">{token}'
            f'<input type="hidden" name="product" value="{e(product_id)}">'
            f'<button class="quiet" type="submit">Remove one</button></form></td></tr>'
        )
    if rows:
        cart_html = (
            '<table><tr><th>Product</th><th class="num">Qty</th><th class="num">Price</th>'
            f"<th></th></tr>{''.join(rows)}"
            f'<tr><th>Total</th><th></th><th class="num">{money(total)}</th><th></th></tr>'
            "</table>"
        )
    else:
        cart_html = "<p>Your cart is empty.</p>"
    shelf = "".join(
        f"<tr><td>{e(name)}</td><td class='num'>{money(price)}</td>"
        f'<td><form method="post" action="/cart/add">{token}'
        f'<input type="hidden" name="product" value="{e(product_id)}">'
        f'<button type="submit">Add to cart</button></form></td></tr>'
        for product_id, name, price in PRODUCTS
    )
    return (
        '<div class="card"><h1>Your cart</h1>'
        f"{cart_html}"
        '<p class="hint">Stored as <code>session["cart"]</code>: restart the server, the cart '
        "stays.</p></div>"
        f'<div class="card"><h2>Products</h2><table>{shelf}</table></div>'
    )


def when(timestamp: float | None, now: float | None = None) -> str:
    """``2024-05-01 12:00:03 UTC (in 29 minutes)``: an absolute time and how far it is."""
    if timestamp is None:
        return "\N{EM DASH}"
    now = time.time() if now is None else now
    moment = datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{moment} ({relative(timestamp - now)})"


def relative(seconds: float) -> str:
    """``in 29 minutes``, ``3 minutes ago``, ``just now``."""
    span = abs(seconds)
    if span < 60:
        return "just now" if seconds <= 0 else "in less than a minute"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if span >= size:
            count = int(span // size)
            text = f"{count} {unit}{'' if count == 1 else 's'}"
            return f"in {text}" if seconds > 0 else f"{text} ago"
    raise AssertionError("unreachable: span >= 60 always matches a unit")


def session_page(rows: Iterable[tuple[str, str]], *, stored: bool, store_url: str) -> str:
    table = "".join(f"<tr><th>{e(label)}</th><td>{e(value)}</td></tr>" for label, value in rows)
    note = (
        ""
        if stored
        else '<p class="hint">Nothing is stored for this browser yet: a session is saved only '
        "once it holds something (a cart item, a sign-in, a form token).</p>"
    )
    return (
        '<div class="card"><h1>This session</h1>'
        f"{note}<table>{table}</table>"
        '<p class="hint">The handle is a prefix of the SHA-256 hash the store keeps; the session '
        "id itself is only in your cookie. "
        f"<code>websession show HANDLE --store {e(store_url)}</code> prints this record from "
        "the shell.</p>"
        "</div>"
    )


# Most specific first: Edge and Opera also name Chrome, Chrome also names Safari.
_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
    ("curl/", "curl"),
)
_SYSTEMS = (
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def device_label(user_agent: str | None) -> str:
    """A short name for a device, e.g. ``Firefox on Linux``, from its User-Agent header.

    A rough guess for people to recognise their devices, never for a security decision:
    the header is whatever the client chose to send.
    """
    if not user_agent:
        return "Unknown device"
    browser = next((name for token, name in _BROWSERS if token in user_agent), None)
    system = next((name for token, name in _SYSTEMS if token in user_agent), None)
    if browser is None:
        # Not a browser we know: its first product token (``python-httpx/0.28``).
        browser = user_agent.split()[0][:40]
    return f"{browser} on {system}" if system else browser


def devices_page(found: Sequence[SessionInfo], csrf_token: str, now: float | None = None) -> str:
    """Every session of the signed-in user, this browser first, each with a sign-out button."""
    token = csrf_field(csrf_token)
    cards = []
    # sorted() is stable: the others stay most recently seen first.
    for info in sorted(found, key=lambda info: not info.current):
        badge = '<span class="badge">This browser</span>' if info.current else ""
        rows = (
            ("Handle", f"<code>{e(info.handle)}</code>"),
            ("IP address", e(info.ip or "unknown")),
            ("User agent", e(info.user_agent or "none sent")),
            ("Signed in", e(when(info.created, now))),
            ("Last seen", e(when(info.last_seen, now))),
            ("Expires", e(when(info.expires, now))),
        )
        table = "".join(f"<tr><th>{label}</th><td>{value}</td></tr>" for label, value in rows)
        if info.current:
            action = (
                '<p class="hint">You are using this one; <strong>Sign out</strong> in the header '
                "ends it.</p>"
            )
        else:
            action = (
                f'<form method="post" action="/devices/revoke">{token}'
                f'<input type="hidden" name="handle" value="{e(info.handle)}">'
                '<button type="submit">Sign out this device</button></form>'
            )
        cards.append(
            f'<div class="card device" data-handle="{e(info.handle)}"'
            f' data-current="{"yes" if info.current else "no"}">'
            f"<h2>{e(device_label(info.user_agent))}{badge}</h2>"
            f"<table>{table}</table>{action}</div>"
        )
    others = sum(1 for info in found if not info.current)
    if others:
        everywhere = (
            f'<form method="post" action="/devices/revoke-others">{token}'
            '<button type="submit">Log out everywhere else</button></form>'
        )
    else:
        everywhere = "<p>This is the only browser you are signed in on.</p>"
    return (
        '<div class="card"><h1>Your devices</h1>'
        "<p>Every browser signed in to your account: this one, then the others by latest "
        "activity. Signing one out deletes its session from the store: its next page is a "
        "guest's.</p>"
        f"{everywhere}"
        '<p class="hint">IP address and user agent are recorded when a session is saved; they '
        "help you recognise a device, and the session is not tied to them.</p></div>"
        f"{''.join(cards)}"
    )


def no_devices_page(store_url: str) -> str:
    return (
        '<div class="card"><h1>Your devices</h1>'
        f"<p>The store <code>{e(store_url)}</code> keeps no per-user index, so it cannot list "
        "or sign out a user's sessions. Memory, file, SQLite, SQL and Redis stores can.</p></div>"
    )


def error_page(status: str, message: str) -> str:
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(status)}</title><style>{_CSS}</style></head><body><main>"
        f'<div class="card"><h1>{e(status)}</h1><p>{e(message)}</p>'
        '<p><a href="/">Back to the shop</a></p></div></main></body></html>\n'
    )
