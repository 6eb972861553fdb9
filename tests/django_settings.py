"""Django settings for the test process, configured once and shared by Django test modules.

Django's settings are global to a process, so every test module that needs
Django calls :func:`configure` instead of ``settings.configure``. The database
(users for ``client.login()``) lives in a temporary directory removed at exit.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import django
from django.conf import settings

SECRET_KEY = "websession-tests-not-a-real-secret-0123456789"


def configure(urlconf: str) -> None:
    """Configure Django (once) with websession as the session engine and ``urlconf`` as URLs."""
    if settings.configured:
        return
    workdir = Path(tempfile.mkdtemp(prefix="websession-django-"))
    atexit.register(shutil.rmtree, workdir, True)
    settings.configure(
        DEBUG=False,
        SECRET_KEY=SECRET_KEY,
        ALLOWED_HOSTS=["testserver", "localhost", "127.0.0.1"],
        ROOT_URLCONF=urlconf,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            # Only so Django's session test module imports; this engine needs no app.
            "django.contrib.sessions",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        SESSION_ENGINE="websession.integrations.django",
        # Tests point this at their own store; the default keeps strays in memory.
        WEBSESSION_STORE="memory://",
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(workdir / "db.sqlite3")}
        },
        # Fast hashing: the tests log users in, they do not test password storage.
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
