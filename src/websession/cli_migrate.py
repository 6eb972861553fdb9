"""``websession migrate``: copy live sessions of another session library into a websession store.

Sources, each read without pickle (a pickled record is counted and left alone):

- ``django-db``: Django's ``django_session`` table (``db`` and ``cached_db``
  backends). ``session_data`` is verified with the project's ``SECRET_KEY``
  (and fallbacks) the way ``django.core.signing`` signs it, then read as JSON.
- ``flask-session``: Flask-Session 0.6+ records (msgspec msgpack or JSON) in
  its SQLAlchemy table or in Redis.
- ``starsessions``: records of starsessions' ``JsonSerializer`` in its Redis store.

Browsers still hold the old cookie, so each record is filed under
:func:`websession.ids.legacy_key` of that cookie value. An app configured with
``legacy_session_cutoff`` looks a token up there, until that date, when it
names no websession session, and moves what it finds to a fresh websession id
on that same response (the old cookie is then worth nothing). The records'
TTL is the source's remaining lifetime, capped at ``--cutoff``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
import sqlite3
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import msgspec

from ._clitools import fail, opened_store, required_store_option
from .codecs import Payload, encode_payload
from .errors import Conflict, UnserializableValue
from .ids import legacy_key
from .stores.base import Meta, Store
from .urls import mask_url

__all__ = ["LegacyRecord", "migrate", "write_records"]

#: Django's session backends sign with this salt (``"django.contrib.sessions." + class name``).
DJANGO_SALT = "django.contrib.sessions.SessionStore"
#: Largest decompressed or stored record read, in bytes (websession's default payload limit).
MAX_RECORD_BYTES = 1024 * 1024
#: Lifetime given to a record whose source keeps no expiry, when no --cutoff bounds it.
NO_EXPIRY_TTL = 14 * 24 * 3600.0
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
# pickle protocols 2-5 start with PROTO (0x80) and the protocol number.
_PICKLE_START = tuple(bytes([0x80, n]) for n in range(2, 6))

# Outcome names, in the order the summary prints them.
MIGRATED = "migrated"
PRESENT = "already migrated"
EXPIRED = "expired"
PICKLED = "pickled (never read)"
BAD_SIGNATURE = "bad signature"
UNDECODABLE = "undecodable"
UNSTORABLE = "not storable"
_ORDER = (MIGRATED, PRESENT, EXPIRED, PICKLED, BAD_SIGNATURE, UNDECODABLE, UNSTORABLE)


@dataclass(slots=True)
class LegacyRecord:
    """One session read from another library, before it is written as websession's."""

    #: The cookie value browsers hold for this session.
    token: str
    data: dict[str, Any]
    #: Epoch seconds; None when the source keeps no expiry.
    expires: float | None
    flashes: list[tuple[str, Any]] = field(default_factory=list)
    browser_session: bool = False
    created: float | None = None
    last_seen: float | None = None


@dataclass(slots=True)
class Skipped:
    """A record that is not migrated, and why (one of the outcome names)."""

    outcome: str
    detail: str = ""


Item = LegacyRecord | Skipped


# -- writing --------------------------------------------------------------------------------------


def write_records(
    items: Iterable[Item],
    store: Store,
    *,
    cutoff: float | None = None,
    user_key: str | None = None,
    dry_run: bool = False,
    clock: Callable[[], float] = time.time,
    report: Callable[[str], None] | None = None,
) -> Counter[str]:
    """File each record under ``legacy_key(token)`` in ``store``; count the outcomes.

    ``cutoff`` (epoch seconds) caps every TTL: after it no app reads these
    records. ``user_key`` names the data key whose value becomes the bound user
    (for the user index and ``websession ls --user``). A record already there
    (a second run) is left as it is.
    """
    counts: Counter[str] = Counter()
    for item in items:
        if isinstance(item, Skipped):
            counts[item.outcome] += 1
            if report is not None and item.detail:
                report(f"skipped ({item.outcome}): {item.detail}")
            continue
        now = clock()
        ttl = NO_EXPIRY_TTL if item.expires is None else item.expires - now
        if cutoff is not None:
            ttl = min(ttl, cutoff - now)
        if ttl <= 0:
            counts[EXPIRED] += 1
            continue
        try:
            payload = encode_payload(Payload(d=item.data, f=item.flashes, b=item.browser_session))
        except (UnserializableValue, TypeError, ValueError) as exc:
            counts[UNSTORABLE] += 1
            if report is not None:
                report(f"skipped ({UNSTORABLE}): {exc}")
            continue
        if len(payload) > MAX_RECORD_BYTES:
            counts[UNSTORABLE] += 1
            continue
        user = item.data.get(user_key) if user_key else None
        meta = Meta(
            created=item.created if item.created is not None else now,
            last_seen=item.last_seen if item.last_seen is not None else now,
            user_id=None if user is None or user == "" else str(user),
        )
        if not dry_run:
            try:
                store.save(
                    legacy_key(item.token), payload, expected_version=None, ttl=ttl, meta=meta
                )
            except Conflict:
                counts[PRESENT] += 1
                continue
        counts[MIGRATED] += 1
    return counts


# -- Django ---------------------------------------------------------------------------------------


def _b64_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def django_unsign(value: str, secret_keys: Iterable[str], salt: str = DJANGO_SALT) -> bytes:
    """The JSON bytes inside a value ``django.core.signing.dumps`` made, verified.

    Checks the HMAC-SHA256 signature (Django 3.1+) against every key, then
    decompresses a ``.``-prefixed body. The signing timestamp is not checked:
    the row's ``expire_date`` says how long the session lives. Raises
    ``ValueError`` naming what is wrong.
    """
    head, sep, signature = value.rpartition(":")
    if not sep:
        raise ValueError("not a signed value")
    key_salt = (salt + "signer").encode()
    given = signature.encode("ascii", "replace")
    for secret in secret_keys:
        mac_key = hashlib.sha256(key_salt + secret.encode()).digest()
        digest = hmac.new(mac_key, head.encode(), hashlib.sha256).digest()
        expected = base64.urlsafe_b64encode(digest).rstrip(b"=")
        if hmac.compare_digest(expected, given):
            break
    else:
        raise PermissionError("signature does not match any --secret-key")
    body = head.rpartition(":")[0]
    compressed = body.startswith(".")
    try:
        raw = _b64_decode(body[1:] if compressed else body)
    except (binascii.Error, ValueError):
        raise ValueError("signed body is not base64") from None
    if compressed:
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(raw, MAX_RECORD_BYTES)
        except zlib.error as exc:
            raise ValueError(f"compressed body is corrupt: {exc}") from None
        if inflater.unconsumed_tail:
            raise ValueError(f"decompressed body exceeds {MAX_RECORD_BYTES} bytes")
    return raw


def _utc_timestamp(value: Any) -> float | None:
    """A database datetime (naive means UTC, as Django and Flask-Session write them)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise ValueError(f"not a datetime: {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


def _rows(source: str, query: str) -> AbstractContextManager[Iterator[tuple[Any, ...]]]:
    return _sql_rows(source, query) if "://" in source else _sqlite_rows(source, query)


@contextmanager
def _sqlite_rows(path: str, query: str) -> Iterator[Iterator[tuple[Any, ...]]]:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        fail(f"cannot open the SQLite database {path!r}: {exc}")
    try:
        try:
            cursor = conn.execute(query)
        except sqlite3.Error as exc:
            fail(f"cannot read {path!r}: {exc}")
        yield iter(cursor)
    finally:
        conn.close()


@contextmanager
def _sql_rows(url: str, query: str) -> Iterator[Iterator[tuple[Any, ...]]]:
    try:
        import sqlalchemy
    except ImportError:
        fail("reading a database URL needs SQLAlchemy: pip install 'websession[sql]'")
    try:
        engine = sqlalchemy.create_engine(url)
    except (sqlalchemy.exc.ArgumentError, ImportError) as exc:
        fail(f"bad database URL {mask_url(url)}: {exc}")
    try:
        with engine.connect() as conn:
            try:
                result = conn.execution_options(stream_results=True).execute(sqlalchemy.text(query))
            except sqlalchemy.exc.SQLAlchemyError as exc:
                fail(f"cannot read {mask_url(url)}: {exc}")
            yield (tuple(row) for row in result)
    except sqlalchemy.exc.OperationalError as exc:
        fail(f"cannot connect to {mask_url(url)}: {exc}")
    finally:
        engine.dispose()


def _table(name: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        fail(f"--table {name!r} is not a table name (letters, digits, _; schema.table allowed)")
    return ".".join(f'"{part}"' for part in name.split("."))


def _django_data(token: str, session_data: str, secret_keys: list[str]) -> dict[str, Any] | Skipped:
    """The data of one Django session (signed JSON, Django's default serializer)."""
    try:
        raw = django_unsign(session_data, secret_keys)
    except PermissionError as exc:
        return Skipped(BAD_SIGNATURE, f"{token[:6]}...: {exc}")
    except ValueError as exc:
        return Skipped(UNDECODABLE, f"{token[:6]}...: {exc}")
    if raw.startswith(_PICKLE_START):
        return Skipped(PICKLED, f"{token[:6]}...: PickleSerializer data")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        return Skipped(UNDECODABLE, f"{token[:6]}...: {exc}")
    if not isinstance(data, dict):
        return Skipped(UNDECODABLE, f"{token[:6]}...: not a JSON object")
    return data


def read_django(rows: Iterable[tuple[Any, ...]], secret_keys: list[str]) -> Iterator[Item]:
    """Records from ``(session_key, session_data, expire_date)`` rows of ``django_session``."""
    for session_key, session_data, expire_date in rows:
        token = str(session_key)
        data = _django_data(token, str(session_data), secret_keys)
        if isinstance(data, Skipped):
            yield data
            continue
        try:
            expires = _utc_timestamp(expire_date)
        except ValueError as exc:
            yield Skipped(UNDECODABLE, f"{token[:6]}...: {exc}")
            continue
        yield LegacyRecord(token=token, data=data, expires=expires)


#: Django's session keys: 32 of ``[a-z0-9]`` (``VALID_KEY_CHARS``).
_DJANGO_KEY = re.compile(r"[a-z0-9]{32}")


def _django_file_expiry(data: dict[str, Any], modified: float, cookie_age: float) -> float:
    """When Django's file backend would stop loading a session written at ``modified``.

    As ``SessionStore._expiry_date``: a ``set_expiry()`` value in the data (seconds,
    or an ISO datetime) wins, else the file's modification time plus
    ``SESSION_COOKIE_AGE``.
    """
    custom = data.get("_session_expiry")
    if isinstance(custom, int | float) and not isinstance(custom, bool) and custom > 0:
        return modified + float(custom)
    if isinstance(custom, str):
        stamp = _utc_timestamp(custom)
        if stamp is not None:
            return stamp
    return modified + cookie_age


def read_django_files(
    directory: Path, prefix: str, secret_keys: list[str], cookie_age: float
) -> Iterator[Item]:
    """Records from the files of Django's ``file`` backend (``<prefix><session key>``)."""
    try:
        names = sorted(entry.name for entry in directory.iterdir())
    except OSError as exc:
        fail(f"cannot read --from {str(directory)!r}: {exc.strerror or exc}")
    for name in names:
        token = name[len(prefix) :]
        if not name.startswith(prefix) or not _DJANGO_KEY.fullmatch(token):
            continue  # not a session file (Django writes temp files beside them)
        path = directory / name
        try:
            modified = path.stat().st_mtime
            text = path.read_bytes()[: MAX_RECORD_BYTES * 2].decode("ascii")
        except (OSError, UnicodeDecodeError) as exc:
            yield Skipped(UNDECODABLE, f"{token[:6]}...: {exc}")
            continue
        data = _django_data(token, text, secret_keys)
        if isinstance(data, Skipped):
            yield data
            continue
        try:
            expires = _django_file_expiry(data, modified, cookie_age)
        except ValueError as exc:
            yield Skipped(UNDECODABLE, f"{token[:6]}...: {exc}")
            continue
        yield LegacyRecord(token=token, data=data, expires=expires)


# -- Flask-Session --------------------------------------------------------------------------------

_msgpack = msgspec.msgpack.Decoder()
_json = msgspec.json.Decoder()


def _flask_session_data(raw: bytes) -> dict[str, Any] | Skipped:
    """A Flask-Session 0.6+ record: msgspec msgpack (its default) or JSON; never pickle."""
    if raw.startswith(_PICKLE_START):
        return Skipped(PICKLED, "Flask-Session < 0.6 (pickle) data")
    data: Any = None
    for decoder in (_msgpack, _json):
        try:
            data = decoder.decode(raw)
            break
        except msgspec.DecodeError:
            continue
    if not isinstance(data, dict) or not all(type(k) is str for k in data):
        return Skipped(UNDECODABLE, "neither msgpack nor JSON holding a session dict")
    return data


def _flask_record(token: str, data: dict[str, Any], expires: float | None) -> LegacyRecord:
    """Flask's session keys become websession's own: flashes and the permanent flag."""
    flashes: list[tuple[str, Any]] = []
    for item in data.pop("_flashes", None) or ():
        if isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[0], str):
            flashes.append((item[0], item[1]))
    # Flask-Session's default is permanent; a non-permanent session ends with the browser.
    permanent = data.pop("_permanent", True)
    return LegacyRecord(
        token=token, data=data, expires=expires, flashes=flashes, browser_session=not permanent
    )


def _flask_session_cookie(sid: str, secret_key: str | None) -> str:
    """The cookie value for ``sid``: the sid, or signed as ``SESSION_USE_SIGNER`` signs it."""
    if secret_key is None:
        return sid
    import itsdangerous

    signer = itsdangerous.Signer(secret_key, salt="flask-session", key_derivation="hmac")
    return signer.sign(sid.encode()).decode("ascii")


def read_flask_session_sql(
    rows: Iterable[tuple[Any, ...]], prefix: str, signer_key: str | None
) -> Iterator[Item]:
    """Records from ``(session_id, data, expiry)`` rows of Flask-Session's SQLAlchemy table."""
    for store_id, raw, expiry in rows:
        store_id = str(store_id)
        if not store_id.startswith(prefix):
            continue
        sid = store_id[len(prefix) :]
        if raw is None:
            yield Skipped(UNDECODABLE, f"{sid[:6]}...: no data")
            continue
        data = _flask_session_data(bytes(raw))
        if isinstance(data, Skipped):
            data.detail = f"{sid[:6]}...: {data.detail}"
            yield data
            continue
        try:
            expires = _utc_timestamp(expiry)
        except ValueError as exc:
            yield Skipped(UNDECODABLE, f"{sid[:6]}...: {exc}")
            continue
        yield _flask_record(_flask_session_cookie(sid, signer_key), data, expires)


# -- Redis (Flask-Session, starsessions) ----------------------------------------------------------


def _redis_records(url: str, prefix: str) -> Iterator[tuple[str, bytes, float | None]]:
    """``(key without prefix, value, expires)`` for every key under ``prefix``, in batches."""
    try:
        import redis
    except ImportError:
        fail("reading Redis needs redis-py: pip install 'websession[redis]'")
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
    try:
        client = redis.Redis.from_url(url)
    except ValueError as exc:
        fail(f"bad Redis URL {mask_url(url)}: {exc}")
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                yield from _redis_batch(client, batch, prefix)
                batch = []
        if batch:
            yield from _redis_batch(client, batch, prefix)
    except redis.RedisError as exc:
        fail(f"Redis {mask_url(url)} failed: {exc}")
    finally:
        client.close()


def _redis_batch(
    client: Any, keys: list[bytes], prefix: str
) -> Iterator[tuple[str, bytes, float | None]]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
        pipe.pttl(key)
    replies = pipe.execute()
    now = time.time()
    for index, key in enumerate(keys):
        value, pttl = replies[2 * index], replies[2 * index + 1]
        if value is None or pttl == -2:
            continue  # expired between SCAN and GET
        expires = None if pttl < 0 else now + pttl / 1000
        yield key.decode("utf-8", "replace")[len(prefix) :], value, expires


def read_flask_session_redis(
    records: Iterable[tuple[str, bytes, float | None]], signer_key: str | None
) -> Iterator[Item]:
    for sid, raw, expires in records:
        data = _flask_session_data(raw)
        if isinstance(data, Skipped):
            data.detail = f"{sid[:6]}...: {data.detail}"
            yield data
            continue
        yield _flask_record(_flask_session_cookie(sid, signer_key), data, expires)


def read_starsessions(records: Iterable[tuple[str, bytes, float | None]]) -> Iterator[Item]:
    """Records of starsessions' JsonSerializer; ``__metadata__`` becomes websession's metadata."""
    for session_id, raw, expires in records:
        if raw.startswith(_PICKLE_START):
            yield Skipped(PICKLED, f"{session_id[:6]}...: pickled data")
            continue
        try:
            data = json.loads(raw)
        except ValueError as exc:
            yield Skipped(UNDECODABLE, f"{session_id[:6]}...: {exc}")
            continue
        if not isinstance(data, dict):
            yield Skipped(UNDECODABLE, f"{session_id[:6]}...: not a JSON object")
            continue
        metadata = data.pop("__metadata__", None)
        created = last_seen = None
        if isinstance(metadata, dict):
            created = _number(metadata.get("created"))
            last_seen = _number(metadata.get("last_access"))
        yield LegacyRecord(
            token=session_id, data=data, expires=expires, created=created, last_seen=last_seen
        )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# -- the click commands ---------------------------------------------------------------------------


def _cutoff(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # click parses "2026-03-01" as naive: read it as UTC
    return value.timestamp()


def _target(url: str) -> Any:
    def refuse_client_side(u: str) -> str | None:
        scheme = u.partition("://")[0].lower()
        if scheme in ("cookie", "memory"):
            return (
                f"{scheme}:// cannot receive migrated sessions: give the server store the app uses"
            )
        return None

    return opened_store(url, check=refuse_client_side)


@dataclass(frozen=True)
class _Into:
    """Where and how the migrated sessions are written: the options every subcommand takes."""

    store_url: str
    cutoff: datetime | None
    dry_run: bool
    verbose: bool


def _run(items: Iterable[Item], store: Store, into: _Into, user_key: str | None) -> Counter[str]:
    report = (lambda line: click.echo(line, err=True)) if into.verbose else None
    counts = write_records(
        items,
        store,
        cutoff=_cutoff(into.cutoff),
        user_key=user_key or None,
        dry_run=into.dry_run,
        report=report,
    )
    verb = "would migrate" if into.dry_run else "migrated"
    parts = [
        f"{counts[name]} {verb if name == MIGRATED else name}" for name in _ORDER if counts[name]
    ]
    click.echo((", ".join(parts) or "no sessions found") + ".")
    if counts[PICKLED]:
        click.echo(
            "Pickled sessions are never read (unpickling runs code); those visitors sign in again.",
            err=True,
        )
    return counts


_store_option = required_store_option("The websession store to write into (the one the app uses).")
_cutoff_option = click.option(
    "--cutoff",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]),
    default=None,
    help="The app's legacy_session_cutoff (UTC unless an offset is given): records end by then.",
)
_dry_run_option = click.option(
    "--dry-run", is_flag=True, help="Read and check everything, write nothing."
)
_verbose_option = click.option(
    "-v", "--verbose", is_flag=True, help="Say why each skipped record was skipped."
)


def _into_options(command: Callable[..., None]) -> Callable[..., None]:
    """--store, --cutoff, --dry-run and -v on ``command``, which receives them as one ``into``."""

    @functools.wraps(command)
    def packed(
        *, store_url: str, cutoff: datetime | None, dry_run: bool, verbose: bool, **options: Any
    ) -> None:
        command(into=_Into(store_url, cutoff, dry_run, verbose), **options)

    for option in (_verbose_option, _dry_run_option, _cutoff_option, _store_option):
        packed = option(packed)
    return packed


_django_secret_option = click.option(
    "--secret-key",
    "secret_keys",
    multiple=True,
    required=True,
    envvar="DJANGO_SECRET_KEY",
    show_envvar=True,
    help="Django's SECRET_KEY; repeat for SECRET_KEY_FALLBACKS.",
)
_django_user_option = click.option(
    "--user-key",
    default="_auth_user_id",
    show_default=True,
    help="Data key holding the signed-in user's id ('' for none).",
)


def _check_django_key(counts: Counter[str]) -> None:
    """Stop with a hint when not one Django session verified: the key is likely wrong."""
    if counts[BAD_SIGNATURE] and not counts[MIGRATED] and not counts[PRESENT]:
        fail("no session verified: is --secret-key the project's SECRET_KEY?")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def migrate() -> None:
    """Copy live sessions of Django, Flask-Session or starsessions into a websession store.

    Visitors keep their session: an app with legacy_session_cutoff accepts
    their old cookie once (until the cutoff) and moves them to a new id.
    Pickled records are never read.
    """


@migrate.command(name="django-db")
@click.option(
    "--from",
    "source",
    required=True,
    metavar="URL|PATH",
    help="The Django database: an SQLAlchemy URL or the path of an SQLite file.",
)
@_django_secret_option
@click.option("--table", default="django_session", show_default=True)
@_django_user_option
@_into_options
def django_db(
    source: str,
    secret_keys: tuple[str, ...],
    table: str,
    user_key: str,
    into: _Into,
) -> None:
    """Django's db and cached_db sessions (signed JSON, the default serializer)."""
    query = f"SELECT session_key, session_data, expire_date FROM {_table(table)}"  # noqa: S608
    with _target(into.store_url) as store, _rows(source, query) as rows:
        counts = _run(read_django(rows, list(secret_keys)), store, into, user_key)
    _check_django_key(counts)


@migrate.command(name="django-file")
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Django's SESSION_FILE_PATH (the directory its file backend writes).",
)
@_django_secret_option
@click.option(
    "--prefix",
    default="sessionid",
    show_default=True,
    help="The file name prefix: Django's SESSION_COOKIE_NAME.",
)
@click.option(
    "--cookie-age",
    type=click.IntRange(min=1),
    default=1209600,
    show_default=True,
    help="Django's SESSION_COOKIE_AGE, in seconds (a file's life after its last write).",
)
@_django_user_option
@_into_options
def django_file(
    source: Path,
    secret_keys: tuple[str, ...],
    prefix: str,
    cookie_age: int,
    user_key: str,
    into: _Into,
) -> None:
    """Django's file sessions (signed JSON, the default serializer)."""
    with _target(into.store_url) as store:
        counts = _run(
            read_django_files(source, prefix, list(secret_keys), cookie_age), store, into, user_key
        )
    _check_django_key(counts)


@migrate.command(name="flask-session")
@click.option(
    "--from",
    "source",
    required=True,
    metavar="URL|PATH",
    help="redis://... for SESSION_TYPE='redis'; an SQLAlchemy URL or SQLite path for 'sqlalchemy'.",
)
@click.option("--table", default="sessions", show_default=True, help="SESSION_SQLALCHEMY_TABLE.")
@click.option("--key-prefix", default="session:", show_default=True, help="SESSION_KEY_PREFIX.")
@click.option(
    "--signer-secret-key",
    default=None,
    envvar="FLASK_SECRET_KEY",
    help="The app's SECRET_KEY, if SESSION_USE_SIGNER was on (cookies hold signed ids).",
)
@click.option(
    "--user-key",
    default="_user_id",
    show_default=True,
    help="Data key holding the signed-in user's id (Flask-Login's; '' for none).",
)
@_into_options
def flask_session(
    source: str,
    table: str,
    key_prefix: str,
    signer_secret_key: str | None,
    user_key: str,
    into: _Into,
) -> None:
    """Flask-Session 0.6+ sessions (msgpack or JSON) from Redis or its SQLAlchemy table."""
    if source.partition("://")[0].lower() in ("redis", "rediss", "unix"):
        with _target(into.store_url) as store:
            records = _redis_records(source, key_prefix)
            _run(read_flask_session_redis(records, signer_secret_key), store, into, user_key)
        return
    query = f"SELECT session_id, data, expiry FROM {_table(table)}"  # noqa: S608
    with _target(into.store_url) as store, _rows(source, query) as rows:
        _run(read_flask_session_sql(rows, key_prefix, signer_secret_key), store, into, user_key)


@migrate.command(name="starsessions")
@click.option(
    "--from", "source", required=True, metavar="URL", help="The Redis server (redis://...)."
)
@click.option(
    "--prefix", default="starsessions.", show_default=True, help="RedisStore's key prefix."
)
@click.option("--user-key", default="", help="Data key holding the signed-in user's id, if any.")
@_into_options
def starsessions(
    source: str,
    prefix: str,
    user_key: str,
    into: _Into,
) -> None:
    """starsessions' RedisStore with its JsonSerializer."""
    if source.partition("://")[0].lower() not in ("redis", "rediss", "unix"):
        fail(f"--from {mask_url(source)!r}: starsessions is read from Redis (redis://...)")
    with _target(into.store_url) as store:
        _run(read_starsessions(_redis_records(source, prefix)), store, into, user_key)
