"""Session lifecycle events, for audit logs and clean-up hooks."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from .errors import SessionConfigError
from .ids import handle_of

__all__ = ["HOOK_NAMES", "EventKind", "Hook", "SessionEvent", "check_hooks"]

EventKind = Literal["create", "rotate", "destroy", "expire", "revoke"]
#: Middleware keyword arguments that take a hook, and the event each one receives.
HOOK_NAMES: Mapping[str, EventKind] = {
    "on_create": "create",
    "on_rotate": "rotate",
    "on_destroy": "destroy",
    "on_expire": "expire",
    "on_revoke": "revoke",
}

log = logging.getLogger("websession")


@dataclasses.dataclass(frozen=True, slots=True)
class SessionEvent:
    """Something that happened to a stored session.

    ``handle`` names the session (a prefix of its hashed key, never its id):
    the new one for ``create`` and ``rotate``, the ended one for ``destroy``
    and ``expire``; ``previous`` is the handle before a ``rotate``.
    """

    kind: EventKind
    handle: str
    user_id: str | None
    at: float
    previous: str | None = None

    @classmethod
    def from_record(
        cls, record: tuple[str, str, str | None, str | None], at: float
    ) -> SessionEvent:
        kind, key, previous, user_id = record
        return cls(
            kind,  # type: ignore[arg-type]
            handle_of(key),
            user_id,
            at,
            handle_of(previous) if previous else None,
        )


Hook = Callable[[SessionEvent], None] | Callable[[SessionEvent], Awaitable[None]]


def check_hooks(hooks: Mapping[str, Any], *, asynchronous: bool) -> dict[str, Any]:
    """Validate ``on_*`` hooks; returns them keyed by event kind."""
    by_kind: dict[str, Any] = {}
    for name, hook in hooks.items():
        if hook is None:
            continue
        if name not in HOOK_NAMES:
            raise SessionConfigError(f"unknown hook {name!r}; known: {', '.join(HOOK_NAMES)}")
        if not callable(hook):
            raise SessionConfigError(f"{name} must be callable, not {type(hook).__name__}")
        if inspect.iscoroutinefunction(hook) and not asynchronous:
            raise SessionConfigError(
                f"{name} is an async function, but this middleware is synchronous (WSGI); "
                "give it a plain function"
            )
        by_kind[HOOK_NAMES[name]] = hook
    return by_kind


def fire(hooks: Mapping[str, Any], event: SessionEvent) -> Any:
    """Call the hook for ``event``; returns an awaitable for async hooks, else None.

    A failing hook is logged with its traceback and never undoes the session
    write, which has already happened.
    """
    hook = hooks.get(event.kind)
    if hook is None:
        return None
    try:
        result = hook(event)
    except Exception:
        log.exception("websession %s hook failed for session %s", event.kind, event.handle)
        return None
    return result if inspect.isawaitable(result) else None


async def settle(awaitable: Any, event: SessionEvent) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("websession %s hook failed for session %s", event.kind, event.handle)
