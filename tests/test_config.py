"""SessionConfig: defaults, normalisation, validation, replace() and from_settings()."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from websession import SessionConfig, SessionConfigError, SessionError


def test_defaults() -> None:
    config = SessionConfig()
    assert config.cookie_name == "session"
    assert config.cookie_path == "/"
    assert config.cookie_domain is None
    assert config.cookie_secure == "auto"
    assert config.cookie_httponly is True
    assert config.cookie_samesite == "Lax"
    assert config.cookie_partitioned is False
    assert config.idle_timeout == 1800.0
    assert config.absolute_timeout == 12 * 3600.0
    assert config.transport == "cookie"
    assert config.header_name == "X-Session-Token"
    assert config.trusted_proxies == ()
    assert config.store is None
    assert config.idle_seconds == 1800.0
    assert config.absolute_seconds == 43200.0


def test_config_error_is_a_session_error_and_value_error() -> None:
    assert issubclass(SessionConfigError, SessionError)
    assert issubclass(SessionConfigError, ValueError)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (3600, 3600.0),
        (0.5, 0.5),
        (timedelta(hours=2), 7200.0),
        (timedelta(milliseconds=1500), 1.5),
        ("3600", 3600.0),
        (" 90.5 ", 90.5),
    ],
)
@pytest.mark.parametrize("field", ["idle_timeout", "absolute_timeout", "touch_interval"])
def test_durations_are_normalised_to_float_seconds(field: str, value: Any, seconds: float) -> None:
    config = SessionConfig(**{field: value})
    result = getattr(config, field)
    assert result == seconds
    assert type(result) is float


@pytest.mark.parametrize("value", [None, "none", "off", ""])
def test_absolute_timeout_can_be_disabled(value: Any) -> None:
    assert SessionConfig(absolute_timeout=value).absolute_timeout is None


@pytest.mark.parametrize("field", ["idle_timeout", "absolute_timeout", "touch_interval"])
@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        -0.5,
        timedelta(0),
        timedelta(seconds=-5),
        "abc",
        "1h",
        True,
        False,
        [60],
        float("nan"),
        float("inf"),
        object(),
    ],
    ids=repr,
)
def test_invalid_durations_are_refused_naming_the_setting(field: str, value: Any) -> None:
    if field == "touch_interval" and not isinstance(value, bool) and value in (0, timedelta(0)):
        assert SessionConfig(touch_interval=value).touch_interval == 0.0  # every request
        return
    with pytest.raises(SessionConfigError, match=field):
        SessionConfig(**{field: value})


@pytest.mark.parametrize("field", ["idle_timeout", "touch_interval"])
def test_required_durations_cannot_be_none(field: str) -> None:
    changes: dict[str, Any] = {field: None}
    with pytest.raises(SessionConfigError, match=field):
        SessionConfig(**changes)


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"cookie_name": ""}, "cookie_name"),
        ({"cookie_name": "has space"}, "cookie_name"),
        ({"cookie_name": "semi;colon"}, "cookie_name"),
        ({"cookie_name": "eq=ual"}, "cookie_name"),
        ({"cookie_name": "sëssion"}, "cookie_name"),
        ({"cookie_name": 5}, "cookie_name"),
        ({"cookie_name": None}, "cookie_name"),
        ({"cookie_path": "app"}, "cookie_path"),
        ({"cookie_path": ""}, "cookie_path"),
        ({"cookie_path": None}, "cookie_path"),
        ({"cookie_path": "/; Domain=evil.example"}, "cookie_path"),
        ({"cookie_path": "/app\r\nX-Injected: 1"}, "cookie_path"),
        ({"cookie_domain": ""}, "cookie_domain"),
        ({"cookie_domain": "a.com; Secure"}, "cookie_domain"),
        ({"cookie_domain": "a .com"}, "cookie_domain"),
        ({"cookie_domain": "a.com\r\n"}, "cookie_domain"),
        ({"cookie_domain": 5}, "cookie_domain"),
        ({"cookie_secure": "maybe"}, "cookie_secure"),
        ({"cookie_secure": 2}, "cookie_secure"),
        ({"cookie_secure": None}, "cookie_secure"),
        ({"cookie_httponly": "maybe"}, "cookie_httponly"),
        ({"cookie_httponly": None}, "cookie_httponly"),
        ({"cookie_partitioned": "maybe"}, "cookie_partitioned"),
        ({"cookie_samesite": "loose"}, "cookie_samesite"),
        ({"cookie_samesite": ""}, "cookie_samesite"),
        ({"cookie_samesite": True}, "cookie_samesite"),
        ({"transport": "carrier-pigeon"}, "transport"),
        ({"transport": None}, "transport"),
        ({"header_name": ""}, "header_name"),
        ({"header_name": "X Token"}, "header_name"),
        ({"header_name": "X-Token:"}, "header_name"),
        ({"header_name": None}, "header_name"),
        ({"store": "sessions.db"}, "store"),
        ({"store": 5}, "store"),
        ({"max_payload_bytes": 0}, "max_payload_bytes"),
        ({"max_payload_bytes": -1}, "max_payload_bytes"),
        ({"max_payload_bytes": 1.5}, "max_payload_bytes"),
        ({"max_payload_bytes": True}, "max_payload_bytes"),
        ({"max_payload_bytes": "lots"}, "max_payload_bytes"),
        ({"conflict_retries": 0}, "conflict_retries"),
        ({"conflict_retries": None}, "conflict_retries"),
        ({"trusted_proxies": ("not-an-ip",)}, "trusted_proxies"),
        ({"trusted_proxies": ("10.0.0.0/33",)}, "trusted_proxies"),
        ({"trusted_proxies": "10.0.0.1, example.com"}, "trusted_proxies"),
        ({"trusted_proxies": None}, "trusted_proxies"),
        ({"trusted_proxies": 5}, "trusted_proxies"),
        ({"trusted_proxies": (b"10.0.0.1",)}, "trusted_proxies"),
    ],
    ids=repr,
)
def test_invalid_values_raise_config_error_naming_the_setting(
    changes: dict[str, Any], setting: str
) -> None:
    with pytest.raises(SessionConfigError, match=setting):
        SessionConfig(**changes)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("lax", "Lax"), ("LAX", "Lax"), ("Strict", "Strict"), ("none", "None"), (None, None)],
)
def test_samesite_is_normalised(value: str | None, expected: str | None) -> None:
    assert SessionConfig(cookie_samesite=value).cookie_samesite == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("auto", "auto"), ("true", True), ("off", False)],
)
def test_cookie_secure_values(value: Any, expected: Any) -> None:
    assert SessionConfig(cookie_secure=value).cookie_secure == expected


def test_samesite_none_without_secure_is_refused() -> None:
    with pytest.raises(SessionConfigError, match="cookie_samesite"):
        SessionConfig(cookie_samesite="none", cookie_secure=False)
    assert SessionConfig(cookie_samesite="none", cookie_secure="auto").cookie_samesite == "None"
    assert SessionConfig(cookie_samesite="none", cookie_secure=True).cookie_secure is True


def test_partitioned_without_secure_is_refused() -> None:
    with pytest.raises(SessionConfigError, match="cookie_partitioned"):
        SessionConfig(cookie_partitioned=True, cookie_secure=False)


def test_host_prefix_forces_secure() -> None:
    assert SessionConfig(cookie_name="__Host-session").cookie_secure is True
    assert SessionConfig(cookie_name="__Host-session", cookie_secure=True).cookie_secure is True


@pytest.mark.parametrize(
    "changes",
    [{"cookie_secure": False}, {"cookie_path": "/app"}, {"cookie_domain": "example.com"}],
)
def test_host_prefix_rules(changes: dict[str, Any]) -> None:
    with pytest.raises(SessionConfigError, match="__Host-"):
        SessionConfig(cookie_name="__Host-session", **changes)


def test_secure_prefix_rules() -> None:
    config = SessionConfig(cookie_name="__Secure-session", cookie_domain="example.com")
    assert config.cookie_secure is True
    assert config.cookie_domain == "example.com"
    with pytest.raises(SessionConfigError, match="__Secure-"):
        SessionConfig(cookie_name="__Secure-session", cookie_secure=False)


def test_config_is_frozen() -> None:
    config = SessionConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.cookie_name = "other"  # type: ignore[misc]
    assert config.cookie_name == "session"


def test_config_is_hashable_and_comparable() -> None:
    assert SessionConfig(idle_timeout=60) == SessionConfig(idle_timeout=timedelta(minutes=1))
    assert hash(SessionConfig()) == hash(SessionConfig())


def test_replace_returns_a_validated_copy() -> None:
    base = SessionConfig(cookie_name="sid")
    changed = base.replace(idle_timeout="120", cookie_samesite="strict")
    assert changed.idle_timeout == 120.0
    assert changed.cookie_samesite == "Strict"
    assert changed.cookie_name == "sid"
    assert base.idle_timeout == 1800.0
    assert base.replace() == base
    with pytest.raises(SessionConfigError, match="idle_timeout"):
        base.replace(idle_timeout=-1)


def test_replace_with_unknown_setting_names_it() -> None:
    with pytest.raises(SessionConfigError, match="cookie_nmae"):
        SessionConfig().replace(cookie_nmae="x")


def test_unknown_constructor_argument_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        SessionConfig(cookie_nmae="x")  # type: ignore[call-arg]


def test_trusted_proxies_accepts_a_string_or_sequence() -> None:
    config = SessionConfig(trusted_proxies="10.0.0.1, 192.168.0.0/16 ::1")  # type: ignore[arg-type]
    assert config.trusted_proxies == ("10.0.0.1", "192.168.0.0/16", "::1")
    from_list = SessionConfig(trusted_proxies=["10.0.0.1"])  # type: ignore[arg-type]
    assert from_list.trusted_proxies == ("10.0.0.1",)
    networks = config.proxy_networks()
    assert len(networks) == 3
    assert str(networks[1]) == "192.168.0.0/16"


def test_non_strict_networks_are_accepted() -> None:
    assert SessionConfig(trusted_proxies=("10.1.2.3/8",)).proxy_networks()[0].num_addresses > 1


def test_payload_limit_from_text() -> None:
    assert SessionConfig(max_payload_bytes="4096").max_payload_bytes == 4096  # type: ignore[arg-type]


# -- from_settings -----------------------------------------------------------------------------


def test_from_settings_reads_prefixed_keys_and_converts_text() -> None:
    config = SessionConfig.from_settings(
        {
            "session.url": "sqlite:///sessions.db",
            "session.cookie_name": "sid",
            "session.cookie_domain": ".example.com",
            "session.cookie_path": "/app",
            "session.idle_timeout": "3600",
            "session.absolute_timeout": "none",
            "session.touch_interval": "30",
            "session.cookie_secure": "true",
            "session.cookie_httponly": "false",
            "session.cookie_samesite": "strict",
            "session.cookie_partitioned": "no",
            "session.trusted_proxies": "10.0.0.0/8, ::1",
            "session.max_payload_bytes": "2048",
            "session.conflict_retries": "3",
            "session.transport": "header",
            "session.header_name": "X-Token",
            "other.setting": "ignored",
            "cookie_name": "ignored too",
        },
        prefix="session.",
    )
    assert config.store == "sqlite:///sessions.db"
    assert config.cookie_name == "sid"
    assert config.cookie_domain == ".example.com"
    assert config.cookie_path == "/app"
    assert config.idle_timeout == 3600.0
    assert config.absolute_timeout is None
    assert config.touch_interval == 30.0
    assert config.cookie_secure is True
    assert config.cookie_httponly is False
    assert config.cookie_samesite == "Strict"
    assert config.cookie_partitioned is False
    assert config.trusted_proxies == ("10.0.0.0/8", "::1")
    assert config.max_payload_bytes == 2048
    assert config.conflict_retries == 3
    assert config.transport == "header"
    assert config.header_name == "X-Token"


def test_from_settings_with_nothing_gives_defaults() -> None:
    assert SessionConfig.from_settings({}) == SessionConfig()
    assert SessionConfig.from_settings({"unrelated": "x"}) == SessionConfig()


def test_from_settings_store_key_and_aliases() -> None:
    config = SessionConfig.from_settings(
        {
            "session.store": "memory://",
            "session.cookie_max_age": "600",
            "session.secure": "auto",
            "session.samesite": "lax",
            "session.domain": "none",
            "session.key": "app_session",
        }
    )
    assert config.store == "memory://"
    assert config.idle_timeout == 600.0
    assert config.cookie_secure == "auto"
    assert config.cookie_domain is None
    assert config.cookie_name == "app_session"


def test_from_settings_samesite_none_means_the_none_attribute() -> None:
    config = SessionConfig.from_settings(
        {"session.cookie_samesite": "None", "session.cookie_secure": "true"}
    )
    assert config.cookie_samesite == "None"
    # ...and so the Secure requirement still applies to it.
    with pytest.raises(SessionConfigError, match="cookie_samesite"):
        SessionConfig.from_settings(
            {"session.cookie_samesite": "none", "session.cookie_secure": "false"}
        )


def test_from_settings_accepts_typed_values() -> None:
    config = SessionConfig.from_settings(
        {"session.idle_timeout": timedelta(minutes=5), "session.cookie_secure": False}
    )
    assert config.idle_timeout == 300.0
    assert config.cookie_secure is False


def test_from_settings_custom_prefix() -> None:
    config = SessionConfig.from_settings(
        {"beaker.session.cookie_name": "b", "session.cookie_name": "ignored"},
        prefix="beaker.session.",
    )
    assert config.cookie_name == "b"


def test_from_settings_unknown_key_names_it() -> None:
    with pytest.raises(SessionConfigError, match=r"session\.cookie_nmae"):
        SessionConfig.from_settings({"session.cookie_nmae": "sid"})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("session.idle_timeout", "forever"),
        ("session.cookie_secure", "sometimes"),
        ("session.cookie_httponly", "perhaps"),
        ("session.url", "not a url"),
        ("session.trusted_proxies", "proxy.example.com"),
        ("session.max_payload_bytes", "-5"),
    ],
)
def test_from_settings_bad_values_name_the_setting(key: str, value: str) -> None:
    setting = {
        "session.url": "store",
    }.get(key, key.removeprefix("session."))
    with pytest.raises(SessionConfigError, match=setting):
        SessionConfig.from_settings({key: value})
