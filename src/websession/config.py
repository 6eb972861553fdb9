"""SessionConfig: every setting of a session middleware, in one frozen, validated dataclass."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal, TypedDict

from .errors import SessionConfigError

__all__ = ["Duration", "SessionConfig", "SessionFields", "to_seconds"]

Duration = int | float | timedelta
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_SAMESITE = {"lax": "Lax", "strict": "Strict", "none": "None"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def to_seconds(
    value: object, name: str, *, allow_none: bool = False, allow_zero: bool = False
) -> float | None:
    """Normalise a duration (seconds as int/float/str, or a timedelta) to float seconds."""
    if value is None:
        if allow_none:
            return None
        raise SessionConfigError(f"{name} must be a duration in seconds or a timedelta, not None")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise SessionConfigError(f"{name} must be a duration in seconds or a timedelta, not a bool")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if allow_none and text in {"", "none", "off"}:
            return None
        try:
            seconds = float(text)
        except ValueError:
            raise SessionConfigError(
                f"{name}={value!r} is not a duration: give seconds, e.g. {name}=3600"
            ) from None
    else:
        raise SessionConfigError(
            f"{name} must be a duration in seconds or a timedelta, not {type(value).__name__}"
        )
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        kind = "a non-negative" if allow_zero else "a positive"
        raise SessionConfigError(f"{name} must be {kind}, finite duration, got {value!r}")
    return seconds


def _to_bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise SessionConfigError(f"{name} must be true or false, got {value!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class SessionConfig:
    """How sessions behave: cookie attributes, timeouts, transport and store.

    Every duration is seconds (int or float) or a :class:`datetime.timedelta`
    and is stored as float seconds. Invalid values raise
    :class:`~websession.SessionConfigError` (a ``ValueError``) at construction,
    naming the setting.

    The defaults follow the OWASP Session Management cheat sheet for a
    low-risk application: 30 minutes idle, 12 hours absolute.
    """

    #: Name of the session cookie. The shared default lets apps on one domain share a session.
    cookie_name: str = "session"
    cookie_path: str = "/"
    #: Emitted exactly as configured; None means a host-only cookie.
    cookie_domain: str | None = None
    #: True, False, or "auto" (Secure whenever the request is HTTPS).
    cookie_secure: bool | Literal["auto"] = "auto"
    cookie_httponly: bool = True
    #: "lax", "strict", "none" or None (attribute omitted).
    cookie_samesite: str | None = "lax"
    cookie_partitioned: bool = False
    #: Sliding timeout: a session unused for this long is over.
    idle_timeout: Duration = timedelta(minutes=30)
    #: Hard cap since the session was created; None disables it.
    absolute_timeout: Duration | None = timedelta(hours=12)
    #: How often activity alone (no data change) refreshes the expiry. Throttles writes.
    touch_interval: Duration = 60
    #: Give the session a new id this often (OWASP's renewal timeout); None: never.
    #: The old id stays readable, never writable, for a minute so requests already
    #: in flight do not log the user out.
    renew_interval: Duration | None = None
    #: "cookie", or "header" for APIs (the token travels in ``header_name``).
    transport: Literal["cookie", "header"] = "cookie"
    header_name: str = "X-Session-Token"
    #: Proxies (IPs or CIDRs) whose X-Forwarded-Proto / X-Forwarded-For are believed.
    trusted_proxies: tuple[str, ...] = ()
    #: Store URL, for settings files; an explicit ``store=`` argument wins.
    store: str | None = None
    #: Upper bound on the encoded payload of server-side stores, in bytes.
    max_payload_bytes: int = 1024 * 1024
    #: How often a save is retried after a version conflict before giving up.
    conflict_retries: int = 64
    #: When the store fails: "raise" (the middlewares answer 503) or "fail_open"
    #: (an empty, unsaved session for the request and an error in the log).
    on_store_error: Literal["raise", "fail_open"] = "raise"
    #: Refuse unsafe requests (POST, PUT, PATCH, DELETE...) whose CSRF token, from
    #: ``csrf_header_name`` or the form field ``csrf_field_name``, is not the
    #: session's, with a 403 before the app runs.
    csrf_protect: bool = False
    #: ASGI with an async (network) store: load the session before the app runs
    #: when the request carries a token (True), or only when the app awaits
    #: ``session.load()`` (False: a request that never loads it costs no store
    #: call). Sync and inline stores always load on first touch.
    autoload: bool = True
    #: Most sessions one user may hold at once (None: no limit); needs a store
    #: with a per-user index. ``session_limit`` says what a login past it does.
    max_sessions_per_user: int | None = None
    #: "evict_oldest" (the least recently seen sessions are revoked) or "refuse"
    #: (``login()`` raises TooManySessions).
    session_limit: Literal["evict_oldest", "refuse"] = "evict_oldest"
    csrf_header_name: str = "X-CSRF-Token"
    csrf_field_name: str = "csrf_token"
    #: Until this (timezone-aware) time, a token that names no websession session is
    #: looked up among the sessions ``websession migrate`` imported, and a match is
    #: moved to a fresh id. None (the default) never looks.
    legacy_session_cutoff: datetime | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        name = self.cookie_name
        if not isinstance(name, str) or not name or not _is_token(name):
            raise SessionConfigError(
                f"cookie_name={name!r} is not a valid cookie name: use letters, digits and - _ ."
            )
        path = self.cookie_path
        # ';' or a control character would inject attributes or headers into Set-Cookie.
        if (
            not isinstance(path, str)
            or not path.startswith("/")
            or any(c == ";" or ord(c) < 0x20 or ord(c) == 0x7F for c in path)
        ):
            raise SessionConfigError(
                f"cookie_path={path!r} must start with '/' and hold no ';' or control characters"
            )
        if self.cookie_domain is not None and (
            not isinstance(self.cookie_domain, str)
            or not self.cookie_domain
            or any(c in self.cookie_domain for c in ";, \t\r\n")
        ):
            raise SessionConfigError(f"cookie_domain={self.cookie_domain!r} is not a domain name")
        secure = self.cookie_secure
        if secure != "auto":
            secure = _to_bool(secure, "cookie_secure")
            set_(self, "cookie_secure", secure)
        set_(self, "cookie_httponly", _to_bool(self.cookie_httponly, "cookie_httponly"))
        set_(self, "cookie_partitioned", _to_bool(self.cookie_partitioned, "cookie_partitioned"))
        samesite = self.cookie_samesite
        if samesite is not None:
            if not isinstance(samesite, str) or samesite.lower() not in _SAMESITE:
                raise SessionConfigError(
                    f"cookie_samesite={samesite!r}: choose 'lax', 'strict', 'none' or None"
                )
            samesite = _SAMESITE[samesite.lower()]
            set_(self, "cookie_samesite", samesite)
        if samesite == "None" and secure is False:
            raise SessionConfigError(
                "cookie_samesite='none' needs a Secure cookie (browsers drop it otherwise): "
                "set cookie_secure=True or 'auto'"
            )
        if self.cookie_partitioned and secure is False:
            raise SessionConfigError("cookie_partitioned=True needs cookie_secure=True or 'auto'")
        if name.startswith("__Host-"):
            if secure is False or self.cookie_path != "/" or self.cookie_domain is not None:
                raise SessionConfigError(
                    f"cookie_name={name!r}: a __Host- cookie must be Secure, have Path=/ and "
                    "no Domain; leave cookie_secure, cookie_path and cookie_domain as defaults"
                )
            set_(self, "cookie_secure", True)
        elif name.startswith("__Secure-"):
            if secure is False:
                raise SessionConfigError(f"cookie_name={name!r}: a __Secure- cookie must be Secure")
            set_(self, "cookie_secure", True)
        set_(self, "idle_timeout", to_seconds(self.idle_timeout, "idle_timeout"))
        set_(
            self,
            "absolute_timeout",
            to_seconds(self.absolute_timeout, "absolute_timeout", allow_none=True),
        )
        set_(
            self,
            "renew_interval",
            to_seconds(self.renew_interval, "renew_interval", allow_none=True),
        )
        # 0 refreshes the expiry on every request that uses the session.
        set_(
            self,
            "touch_interval",
            to_seconds(self.touch_interval, "touch_interval", allow_zero=True),
        )
        if self.transport not in ("cookie", "header"):
            raise SessionConfigError(f"transport={self.transport!r}: choose 'cookie' or 'header'")
        if not isinstance(self.header_name, str) or not _is_token(self.header_name):
            raise SessionConfigError(f"header_name={self.header_name!r} is not a header name")
        proxies: Any = self.trusted_proxies
        if isinstance(proxies, str):
            proxies = tuple(p for p in proxies.replace(",", " ").split() if p)
        if not isinstance(proxies, list | tuple | set | frozenset):
            raise SessionConfigError(
                f"trusted_proxies={proxies!r}: give a list of IP addresses or networks"
            )
        proxies = tuple(proxies)
        for proxy in proxies:
            try:
                if not isinstance(proxy, str):
                    raise ValueError(proxy)
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise SessionConfigError(
                    f"trusted_proxies: {proxy!r} is not an IP address or network"
                ) from None
        set_(self, "trusted_proxies", proxies)
        if self.store is not None and (not isinstance(self.store, str) or "://" not in self.store):
            raise SessionConfigError(
                f"store={self.store!r} is not a store URL such as 'sqlite:///sessions.db'"
            )
        cutoff: Any = self.legacy_session_cutoff
        if isinstance(cutoff, str):
            try:
                cutoff = datetime.fromisoformat(cutoff.strip())
            except ValueError:
                raise SessionConfigError(
                    f"legacy_session_cutoff={cutoff!r} is not an ISO date, e.g. 2026-03-01T00:00Z"
                ) from None
            set_(self, "legacy_session_cutoff", cutoff)
        if cutoff is not None and (not isinstance(cutoff, datetime) or cutoff.utcoffset() is None):
            raise SessionConfigError(
                "legacy_session_cutoff must be a timezone-aware datetime, "
                "e.g. datetime(2026, 3, 1, tzinfo=UTC)"
            )
        set_(self, "csrf_protect", _to_bool(self.csrf_protect, "csrf_protect"))
        set_(self, "autoload", _to_bool(self.autoload, "autoload"))
        if not isinstance(self.csrf_header_name, str) or not _is_token(self.csrf_header_name):
            raise SessionConfigError(
                f"csrf_header_name={self.csrf_header_name!r} is not a header name"
            )
        if not isinstance(self.csrf_field_name, str) or not self.csrf_field_name:
            raise SessionConfigError(f"csrf_field_name={self.csrf_field_name!r} must be a name")
        cap: Any = self.max_sessions_per_user
        if cap is not None:
            if isinstance(cap, str) and cap.strip().isdigit():
                cap = int(cap)
                set_(self, "max_sessions_per_user", cap)
            if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
                raise SessionConfigError(
                    f"max_sessions_per_user must be a positive integer or None, got {cap!r}"
                )
        if self.session_limit not in ("evict_oldest", "refuse"):
            raise SessionConfigError(
                f"session_limit={self.session_limit!r}: choose 'evict_oldest' or 'refuse'"
            )
        if self.on_store_error not in ("raise", "fail_open"):
            raise SessionConfigError(
                f"on_store_error={self.on_store_error!r}: choose 'raise' or 'fail_open'"
            )
        for field in ("max_payload_bytes", "conflict_retries"):
            value = getattr(self, field)
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
                set_(self, field, value)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SessionConfigError(f"{field} must be a positive integer, got {value!r}")

    @property
    def idle_seconds(self) -> float:
        return self.idle_timeout  # type: ignore[return-value]

    @property
    def absolute_seconds(self) -> float | None:
        return self.absolute_timeout  # type: ignore[return-value]

    @property
    def renew_seconds(self) -> float | None:
        return self.renew_interval  # type: ignore[return-value]

    @property
    def touch_seconds(self) -> float:
        return self.touch_interval  # type: ignore[return-value]

    def proxy_networks(self) -> tuple[IPNetwork, ...]:
        return tuple(ipaddress.ip_network(p, strict=False) for p in self.trusted_proxies)

    def replace(self, **changes: Any) -> SessionConfig:
        """A copy with ``changes`` applied (validated like the constructor)."""
        return build_config(self, changes)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], prefix: str = "session.") -> SessionConfig:
        """Build a config from ini/paste-style settings such as ``session.cookie_name``.

        Only keys starting with ``prefix`` are read; ``session.url`` and
        ``session.store`` name the store, ``session.cookie_max_age`` is an alias
        of ``idle_timeout``. String values are converted (``"true"``, ``"3600"``).
        An unknown key raises :class:`~websession.SessionConfigError`.
        """
        aliases = {
            "url": "store",
            "type": None,
            "cookie_max_age": "idle_timeout",
            "timeout": "idle_timeout",
            "cookie_expires": "idle_timeout",
            "secure": "cookie_secure",
            "httponly": "cookie_httponly",
            "samesite": "cookie_samesite",
            "domain": "cookie_domain",
            "path": "cookie_path",
            "key": "cookie_name",
        }
        changes: dict[str, Any] = {}
        for raw_key, value in settings.items():
            if not raw_key.startswith(prefix):
                continue
            key = raw_key[len(prefix) :]
            if key in aliases:
                target = aliases[key]
                if target is None:
                    continue
                key = target
            if key not in _FIELDS:
                raise SessionConfigError(
                    f"unknown setting {raw_key!r}; known settings: "
                    + ", ".join(prefix + f for f in sorted(_FIELDS))
                )
            if isinstance(value, str):
                value = _from_text(key, value)
            changes[key] = value
        return build_config(cls(), changes)


_FIELDS = frozenset(f.name for f in dataclasses.fields(SessionConfig))


class SessionFields(TypedDict, total=False):
    """The fields of :class:`SessionConfig` (but ``store``, a parameter of its own) as
    keyword arguments of the middlewares.

    Typed so that a misspelt setting is a type error, and so that Starlette's
    ``Middleware(SessionMiddleware, ...)`` type-checks (a bare ``**kwargs: Any``
    defeats its ParamSpec).
    """

    cookie_name: str
    cookie_path: str
    cookie_domain: str | None
    cookie_secure: bool | Literal["auto"]
    cookie_httponly: bool
    cookie_samesite: str | None
    cookie_partitioned: bool
    idle_timeout: Duration
    absolute_timeout: Duration | None
    touch_interval: Duration
    renew_interval: Duration | None
    transport: Literal["cookie", "header"]
    header_name: str
    trusted_proxies: tuple[str, ...] | list[str] | str
    max_payload_bytes: int
    conflict_retries: int
    on_store_error: Literal["raise", "fail_open"]
    csrf_protect: bool
    autoload: bool
    max_sessions_per_user: int | None
    session_limit: Literal["evict_oldest", "refuse"]
    csrf_header_name: str
    csrf_field_name: str
    legacy_session_cutoff: datetime | str | None


def _from_text(key: str, value: str) -> Any:
    text = value.strip()
    if key == "cookie_secure":
        return "auto" if text.lower() == "auto" else _to_bool(text, key)
    if key == "cookie_samesite":
        # "None" in a settings file means the SameSite=None attribute, as in Django's settings.
        return text or None
    if key in (
        "cookie_domain",
        "absolute_timeout",
        "renew_interval",
        "store",
        "legacy_session_cutoff",
        "max_sessions_per_user",
    ):
        return None if text.lower() in ("", "none") else text
    if key == "trusted_proxies":
        return tuple(p for p in text.replace(",", " ").split() if p)
    return text


def build_config(base: SessionConfig | None, changes: Mapping[str, Any]) -> SessionConfig:
    """``base`` with ``changes`` applied; unknown field names raise SessionConfigError."""
    unknown = sorted(set(changes) - _FIELDS)
    if unknown:
        raise SessionConfigError(
            f"unknown setting(s) {', '.join(unknown)}; known settings: {', '.join(sorted(_FIELDS))}"
        )
    if base is None:
        return SessionConfig(**changes)
    if not changes:
        return base
    current = {f: getattr(base, f) for f in _FIELDS}
    current.update(changes)
    return SessionConfig(**current)


def _is_token(text: str) -> bool:
    # RFC 7230 token characters, which is what cookie and header names must be.
    return bool(text) and all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in text)
