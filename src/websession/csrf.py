"""CSRF enforcement shared by the middlewares: where the token is read from, and the 403."""

from __future__ import annotations

from urllib.parse import parse_qsl

__all__ = ["FORBIDDEN_BODY", "MAX_FORM_BYTES", "SAFE_METHODS", "form_token", "is_form"]

#: Methods that must not change state (RFC 9110), so they need no token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: Largest urlencoded body read to find the token; larger forms must send the header.
MAX_FORM_BYTES = 1024 * 1024
FORBIDDEN_BODY = (
    b"403 Forbidden: CSRF token missing or incorrect. Send the session's token "
    b"(session.csrf_token()) in the form field or the header the app configured.\n"
)


def is_form(content_type: str | None) -> bool:
    """True for an urlencoded form body, the one kind the middleware parses itself."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded"


def form_token(body: bytes, field: str) -> str | None:
    """The value of ``field`` in an urlencoded body (the first one), or None."""
    for name, value in parse_qsl(body.decode("latin-1"), keep_blank_values=True):
        if name == field:
            return value
    return None
