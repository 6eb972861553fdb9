"""A single-file Django project with websession as its session engine.

A visit counter, sign-in with Django's auth (the session id rotates, the old
one dies at once) and sign-out, answered as JSON. Django's CSRF token lives in
the session (``CSRF_USE_SESSIONS``). Run it with::

    python examples/django_app.py runserver

then open http://127.0.0.1:8000/ (the user ``demo``, password ``demo``, is
created on start). Sessions go to ``example-sessions.db`` (SQLite) in the
current directory, users to ``example-users.db``; set ``WEBSESSION_STORE`` to
another store URL, e.g. ``redis://localhost:6379/0``, to change the first.

Try it with curl::

    curl -s -c jar -b jar http://127.0.0.1:8000/     # {"count": 1, "user": null, "csrf": "..."}
    TOKEN=$(curl -s -c jar -b jar http://127.0.0.1:8000/ | jq -r .csrf)
    curl -s -c jar -b jar -H "X-CSRFToken: $TOKEN" -d username=demo -d password=demo \\
         http://127.0.0.1:8000/login
"""

from __future__ import annotations

import os
import sys

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example-only-change-me-0123456789abcdef"),
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"],
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ],
    # The three lines that adopt websession:
    SESSION_ENGINE="websession.integrations.django",
    WEBSESSION_STORE=os.environ.get("WEBSESSION_STORE", "sqlite:///example-sessions.db"),
    SESSION_COOKIE_AGE=30 * 60,
    CSRF_USE_SESSIONS=True,
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "example-users.db"}},
    DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    USE_TZ=True,
)

import django  # noqa: E402

django.setup()

from django.contrib.auth import authenticate, login, logout  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.middleware.csrf import get_token  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.http import require_POST  # noqa: E402


def state(request: HttpRequest) -> JsonResponse:
    user = request.user.get_username() if request.user.is_authenticated else None
    return JsonResponse(
        {"count": request.session.get("count", 0), "user": user, "csrf": get_token(request)}
    )


def home(request: HttpRequest) -> JsonResponse:
    request.session["count"] = request.session.get("count", 0) + 1
    return state(request)


@require_POST
def sign_in(request: HttpRequest) -> JsonResponse:
    user = authenticate(
        request, username=request.POST.get("username"), password=request.POST.get("password")
    )
    if user is None:
        return JsonResponse({"error": "wrong user name or password"}, status=403)
    login(request, user)  # rotates the session id (cycle_key) and binds the user
    return state(request)


@require_POST
def sign_out(request: HttpRequest) -> JsonResponse:
    logout(request)  # deletes the session from the store
    return state(request)


urlpatterns = [path("", home), path("login", sign_in), path("logout", sign_out)]


def prepare() -> None:
    """Create the user table and the demo user (idempotent)."""
    from django.contrib.auth.models import User
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    if not User.objects.filter(username="demo").exists():
        User.objects.create_user("demo", password="demo")


if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    prepare()
    execute_from_command_line(sys.argv if len(sys.argv) > 1 else [sys.argv[0], "runserver"])
