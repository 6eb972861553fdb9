"""Cookie header parsing, Set-Cookie rendering and proxy-aware scheme and client address."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from websession import SessionConfig
from websession.cookies import (
    CookieRenderer,
    client_address,
    delete_cookie,
    get_cookie,
    is_secure,
    set_cookie,
)

# -- get_cookie --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("session=abc", "abc"),
        ("a=1; session=abc; b=2", "abc"),
        ("a=1;session=abc;b=2", "abc"),
        ("  session = abc  ", "abc"),
        ('session="quoted value"', "quoted value"),
        ('session=""', ""),
        ('session="', '"'),
        ("session=", ""),
        ("session=first; session=second", "first"),
        ("session=a=b=c", "a=b=c"),
        ("garbage; ;;; =x; session=ok", "ok"),
        ("mysession=no; session_x=no; xsession=no", None),
        ("session", None),
        ("", None),
        (None, None),
        ("other=1", None),
    ],
)
def test_get_cookie(header: str | None, expected: str | None) -> None:
    assert get_cookie(header, "session") == expected


def test_get_cookie_with_a_prefixed_name() -> None:
    assert get_cookie("session=wrong; __Host-session=right", "__Host-session") == "right"


@given(st.text(), st.sampled_from(["session", "__Host-session", "s"]))
def test_get_cookie_never_raises(header: str, name: str) -> None:
    value = get_cookie(header, name)
    assert value is None or isinstance(value, str)


@given(st.text(alphabet=st.characters(blacklist_characters=';"', blacklist_categories=["Cs"])))
def test_get_cookie_finds_any_value_among_other_cookies(value: str) -> None:
    header = f"a=1; session={value}; b=2"
    assert get_cookie(header, "session") == value.strip()


# -- Set-Cookie rendering ----------------------------------------------------------------------


def attrs(header: str) -> list[str]:
    return [part.strip() for part in header.split(";")]


def test_default_set_cookie_attributes() -> None:
    renderer = CookieRenderer(SessionConfig())
    assert attrs(renderer.set("tok", 1800, secure=False)) == [
        "session=tok",
        "Max-Age=1800",
        "Path=/",
        "HttpOnly",
        "SameSite=Lax",
    ]
    assert attrs(renderer.set("tok", 1800, secure=True)) == [
        "session=tok",
        "Max-Age=1800",
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
    ]


def test_browser_session_cookie_has_no_max_age() -> None:
    header = CookieRenderer(SessionConfig()).set("tok", None, secure=True)
    assert "Max-Age" not in header
    assert "Expires" not in header


def test_configured_attributes_are_emitted_exactly() -> None:
    config = SessionConfig(
        cookie_name="sid",
        cookie_path="/app",
        cookie_domain=".Example.COM",
        cookie_httponly=False,
        cookie_samesite="strict",
    )
    assert attrs(set_cookie(config, "v", 60, secure=False)) == [
        "sid=v",
        "Max-Age=60",
        "Path=/app",
        "Domain=.Example.COM",
        "SameSite=Strict",
    ]


def test_samesite_none_and_omitted() -> None:
    none = SessionConfig(cookie_samesite="none")
    assert "SameSite=None" in attrs(set_cookie(none, "v", 60, secure=True))
    omitted = SessionConfig(cookie_samesite=None)
    assert not any(a.startswith("SameSite") for a in attrs(set_cookie(omitted, "v", 60, True)))


def test_partitioned_only_with_secure() -> None:
    config = SessionConfig(cookie_partitioned=True, cookie_samesite="none")
    assert "Partitioned" in attrs(set_cookie(config, "v", 60, secure=True))
    assert "Partitioned" not in attrs(set_cookie(config, "v", 60, secure=False))
    assert "Partitioned" not in attrs(set_cookie(SessionConfig(), "v", 60, secure=True))


def test_delete_cookie_expires_it_with_the_same_scope() -> None:
    config = SessionConfig(cookie_domain="example.com", cookie_path="/app")
    header = delete_cookie(config, secure=True)
    parts = attrs(header)
    assert parts[0] == "session="
    assert "Max-Age=0" in parts
    assert "Expires=Thu, 01 Jan 1970 00:00:00 GMT" in parts
    assert "Path=/app" in parts
    assert "Domain=example.com" in parts
    assert "Secure" in parts
    assert CookieRenderer(config).delete(secure=True) == header


def test_host_prefixed_cookie_renders_secure() -> None:
    config = SessionConfig(cookie_name="__Host-session")
    parts = attrs(set_cookie(config, "v", 60, secure=True))
    assert parts[0] == "__Host-session=v"
    assert "Secure" in parts
    assert "Path=/" in parts
    assert not any(p.startswith("Domain") for p in parts)


# -- scheme and client address behind proxies --------------------------------------------------

PROXIES = SessionConfig(trusted_proxies=("10.0.0.0/8", "::1")).proxy_networks()


@pytest.mark.parametrize(
    ("scheme", "peer", "proto", "proxies", "expected"),
    [
        ("https", "1.2.3.4", None, (), True),
        ("wss", "1.2.3.4", None, (), True),
        ("http", "1.2.3.4", None, (), False),
        ("ws", "1.2.3.4", None, (), False),
        # A spoofed header from an untrusted peer changes nothing.
        ("http", "1.2.3.4", "https", (), False),
        ("http", "1.2.3.4", "https", PROXIES, False),
        ("https", "1.2.3.4", "http", PROXIES, True),
        # From a trusted proxy the header decides, first hop first.
        ("http", "10.1.2.3", "https", PROXIES, True),
        ("http", "10.1.2.3", "HTTPS, http", PROXIES, True),
        ("https", "10.1.2.3", "http", PROXIES, False),
        ("http", "::1", "https", PROXIES, True),
        ("http", None, "https", PROXIES, False),
        ("http", "not-an-ip", "https", PROXIES, False),
        ("http", "10.1.2.3", None, PROXIES, False),
    ],
)
def test_is_secure(
    scheme: str,
    peer: str | None,
    proto: str | None,
    proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
    expected: bool,
) -> None:
    assert is_secure(scheme, peer, proto, proxies) is expected


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "proxies", "expected"),
    [
        ("1.2.3.4", None, (), "1.2.3.4"),
        ("1.2.3.4", "6.6.6.6", (), "1.2.3.4"),
        ("1.2.3.4", "6.6.6.6", PROXIES, "1.2.3.4"),
        ("10.0.0.1", "203.0.113.9", PROXIES, "203.0.113.9"),
        # A client cannot hide behind a forged leftmost hop: the rightmost untrusted hop wins.
        ("10.0.0.1", "6.6.6.6, 203.0.113.9", PROXIES, "203.0.113.9"),
        ("10.0.0.1", "6.6.6.6, 203.0.113.9, 10.0.0.2", PROXIES, "203.0.113.9"),
        ("10.0.0.1", "10.0.0.3, 10.0.0.2", PROXIES, "10.0.0.3"),
        ("10.0.0.1", " , ", PROXIES, "10.0.0.1"),
        ("10.0.0.1", "", PROXIES, "10.0.0.1"),
        (None, "6.6.6.6", PROXIES, None),
        ("::1", "2001:db8::5", PROXIES, "2001:db8::5"),
    ],
)
def test_client_address(
    peer: str | None,
    forwarded_for: str | None,
    proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
    expected: str | None,
) -> None:
    assert client_address(peer, forwarded_for, proxies) == expected


@given(st.one_of(st.none(), st.text()), st.one_of(st.none(), st.text()))
def test_proxy_helpers_never_raise_on_garbage(peer: str | None, header: str | None) -> None:
    assert is_secure("http", peer, header, PROXIES) in (True, False)
    result = client_address(peer, header, PROXIES)
    assert result is None or isinstance(result, str)
