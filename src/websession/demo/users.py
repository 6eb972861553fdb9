"""The demo's user accounts: a ``demo_users`` table in an SQLite file, passwords as salted scrypt.

The table lives in the same file as the session store, so the whole demo is
one file to copy or delete. Each call opens its own connection: the demo
server answers requests on several threads and sqlite3 connections must not
be shared between them.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass

__all__ = ["SEED_EMAIL", "SEED_NAME", "SEED_PASSWORD", "SignupError", "User", "UserDB"]

SEED_EMAIL = "alice@example.com"
SEED_PASSWORD = "wonderland"  # noqa: S105 - the published demo account, shown on the page
SEED_NAME = "Alice"

MIN_PASSWORD = 8
# scrypt parameters (RFC 7914): 16 MiB of memory and ~50 ms per hash on a laptop,
# a cost an attacker with a stolen file pays for every guess.
_N, _R, _P, _DKLEN = 2**14, 8, 1, 32
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS demo_users (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE COLLATE NOCASE,
    name TEXT NOT NULL,
    password TEXT NOT NULL,
    created REAL NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class User:
    """A demo account (the password hash stays in the database)."""

    id: int
    email: str
    name: str


class SignupError(ValueError):
    """A sign-up form value is unusable; the message is shown on the form."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    """A self-describing scrypt hash: ``scrypt$n$r$p$salt$hash`` (hex), with a fresh salt."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=_DKLEN, maxmem=64 * 2**20
    )
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored`` (constant-time comparison of the hashes)."""
    try:
        scheme, n, r, p, salt_hex, digest_hex = stored.split("$")
        if scheme != "scrypt":
            return False
        salt, expected = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
        digest = hashlib.scrypt(
            password.encode("utf-8"),
            salt=salt,
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=64 * 2**20,
        )
    except ValueError:
        return False
    return hmac.compare_digest(digest, expected)


# Checked against when the email is unknown, so a wrong email costs as much time as a
# wrong password and response times do not reveal which accounts exist.
_DUMMY_HASH = hash_password("not a real password", salt=b"\0" * 16)


class UserDB:
    """Accounts in the ``demo_users`` table of the SQLite file at ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        if not os.path.exists(path):
            # 0600 from the start: the file holds password hashes (and, when shared
            # with the session store, sessions); sqlite3 would honour only the umask.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        with closing(self._connect()) as conn, conn:
            # WAL, as the session store uses: readers and the writer do not block each other.
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(_SCHEMA)
        if self.find_by_email(SEED_EMAIL) is None:
            self._insert(SEED_EMAIL, SEED_NAME, SEED_PASSWORD)

    def __repr__(self) -> str:
        return f"UserDB({self.path!r})"

    def _connect(self) -> sqlite3.Connection:
        # timeout: the session store writes to the same file from other threads.
        return sqlite3.connect(self.path, timeout=10)

    def _insert(self, email: str, name: str, password: str) -> User | None:
        stored = hash_password(password)
        with closing(self._connect()) as conn, conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO demo_users (email, name, password, created) "
                "VALUES (?, ?, ?, ?)",
                (email, name, stored, time.time()),
            )
            if cursor.rowcount == 0:
                return None
            user_id = cursor.lastrowid
        assert user_id is not None  # an INSERT that added a row always sets lastrowid
        return User(user_id, email, name)

    def find_by_email(self, email: str) -> User | None:
        with closing(self._connect()) as conn:
            row = conn.execute(
                "SELECT id, email, name FROM demo_users WHERE email = ?", (email.strip(),)
            ).fetchone()
        return User(*row) if row else None

    def get(self, user_id: str | int | None) -> User | None:
        """The user with ``user_id`` (as stored in the session), None if absent or malformed."""
        if user_id is None:
            return None
        try:
            number = int(user_id)
        except ValueError:
            return None
        with closing(self._connect()) as conn:
            row = conn.execute(
                "SELECT id, email, name FROM demo_users WHERE id = ?", (number,)
            ).fetchone()
        return User(*row) if row else None

    def authenticate(self, email: str, password: str) -> User | None:
        """The user whose email and password match, else None (same cost either way)."""
        with closing(self._connect()) as conn:
            row = conn.execute(
                "SELECT id, email, name, password FROM demo_users WHERE email = ?",
                (email.strip(),),
            ).fetchone()
        if row is None:
            verify_password(password, _DUMMY_HASH)
            return None
        if not verify_password(password, row[3]):
            return None
        return User(row[0], row[1], row[2])

    def sign_up(self, email: str, name: str, password: str) -> User:
        """Create an account; :class:`SignupError` says what is wrong with the form."""
        email, name = email.strip(), " ".join(name.split())
        if not _EMAIL_RE.fullmatch(email) or len(email) > 254:
            raise SignupError("Enter a valid email address.")
        if not name or len(name) > 80:
            raise SignupError("Enter your name (up to 80 characters).")
        if len(password) < MIN_PASSWORD:
            raise SignupError(f"Choose a password of at least {MIN_PASSWORD} characters.")
        user = self._insert(email, name, password)
        if user is None:
            raise SignupError("An account with this email exists already; sign in instead.")
        return user
