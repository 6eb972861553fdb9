"""What the WSGI and ASGI drivers share: store resolution and response headers."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .config import SessionConfig, build_config
from .cookies import CookieRenderer, client_address, get_cookie, header_value, is_secure
from .errors import SessionConfigError, StoreUnavailable
from .events import SessionEvent, check_hooks, fire, settle
from .flow import CLEAR, NOTHING, Flow, Outcome, run_async, run_sync
from .identity import (
    SessionInfo,
    TooManySessions,
    UserIndexMissing,
    current_key,
    keys_to_keep,
    maybe_await,
    report,
    revoke_events,
    settle_all,
)
from .ids import handle_of
from .session import Session
from .stores.base import Entry, InlineAsyncStore
from .stores.cookie import CookieStore
from .urls import store_from_url

DEFAULT_STORE_URL = "sqlite:///websession.db"
log = logging.getLogger("websession")
#: Flow.loaded or Flow.adopt_legacy: takes what the store returned, names a key to delete.
Adopt = Callable[[Session, str, Entry | None], str | None]
security_log = logging.getLogger("websession.security")


_CACHE_CONTROL = frozenset({"cache-control", b"cache-control"})


def marked_public(headers: Iterable[tuple[str, str]] | Iterable[tuple[bytes, bytes]]) -> bool:
    """True when a response's headers say ``Cache-Control: public`` (any of them, if
    several): WSGI's str pairs or ASGI's latin-1 bytes pairs."""
    for name, value in headers:
        if len(name) == 13 and name.lower() in _CACHE_CONTROL:
            text = value if isinstance(value, str) else value.decode("latin-1")
            if is_public(text):
                return True
    return False


#: ``close(settled=...)`` default: the caller has not asked ``flow.settled`` yet.
#: (Sentinels compared by identity, never handed to a response.)
UNSETTLED = Outcome(None, None)
#: What :meth:`Driver.quiet` answers when the commit has nothing to do at all.
QUIET = Outcome(None, None)


def is_public(cache_control: str | None) -> bool:
    """True when a Cache-Control value lets shared caches store the response."""
    if not cache_control:
        return False
    return any(part.strip().lower() == "public" for part in cache_control.split(","))


class Driver:
    """Per-middleware state: config, flow, store, cookie renderer."""

    def __init__(
        self,
        store: Any,
        config: SessionConfig | None,
        fields: Mapping[str, Any],
        *,
        asynchronous: bool,
        clock: Callable[[], float] | None = None,
        hooks: Mapping[str, Any] | None = None,
    ) -> None:
        self.hooks = check_hooks(hooks or {}, asynchronous=asynchronous)
        if config is not None and not isinstance(config, SessionConfig):
            raise SessionConfigError(
                f"config must be a websession.SessionConfig, not {type(config).__name__}"
            )
        self.config = config = build_config(config, fields)
        if store is None:
            store = config.store or DEFAULT_STORE_URL
        if isinstance(store, str):
            store = store_from_url(store, asynchronous=asynchronous)
        self.store = store
        #: The sync store to call inline (lazy loading), or None when calls must be awaited.
        self.sync_store: Any = None
        self.async_store: Any = None
        client = store if isinstance(store, CookieStore) else None
        if client is None:
            if not callable(getattr(store, "load", None)) or not callable(
                getattr(store, "save", None)
            ):
                raise SessionConfigError(f"store={store!r} is not a session store or a store URL")
            is_async = inspect.iscoroutinefunction(store.load)
            if isinstance(store, InlineAsyncStore):
                self.sync_store = store.sync
            elif not is_async:
                if asynchronous and not getattr(store, "inline", False):
                    raise SessionConfigError(
                        f"{type(store).__name__} does network I/O and would block the event loop; "
                        "give the ASGI middleware its async form (or a URL, which builds it)"
                    )
                if not asynchronous or getattr(store, "inline", False):
                    self.sync_store = store
            else:
                if not asynchronous:
                    raise SessionConfigError(
                        f"{type(store).__name__} is an async store; the WSGI middleware needs "
                        "its sync form"
                    )
                self.async_store = store
        flow_kwargs: dict[str, Any] = {
            "client_store": client,
            "payload_limit": getattr(store, "max_payload_size", None),
        }
        if clock is not None:
            flow_kwargs["clock"] = clock
        self.flow = Flow(config, **flow_kwargs)
        #: Sessions live in the cookie (CookieStore): a commit makes no store call.
        self.client_side = client is not None
        self.renderer = CookieRenderer(config)
        self.proxies = config.proxy_networks()
        self.cookie_transport = config.transport == "cookie"
        self.cookie_name = config.cookie_name
        self.header_name = config.header_name
        #: What the response's Vary header gets when the session was accessed.
        self.vary_value = "Cookie" if self.cookie_transport else config.header_name
        secure = config.cookie_secure
        self.fixed_secure: bool | None = None if secure == "auto" else bool(secure)

        self.fail_open = config.on_store_error == "fail_open"
        self.cap = config.max_sessions_per_user
        self.refuse = config.session_limit == "refuse"
        index_store = self.sync_store if self.sync_store is not None else self.async_store
        self.index: Any = (
            index_store
            if all(callable(getattr(index_store, n, None)) for n in ("sessions_for", "revoke"))
            else None
        )
        if self.cap is not None and self.index is None:
            raise SessionConfigError(
                f"max_sessions_per_user needs a store with a per-user index; "
                f"{type(store).__name__} has none"
            )
        self.csrf_protect = config.csrf_protect
        self.csrf_environ_key = "HTTP_" + config.csrf_header_name.upper().replace("-", "_")
        self.csrf_header_key = config.csrf_header_name.lower().encode("latin-1")
        self.inline = self.async_store is None
        self.autoload = config.autoload

    # -- the request cycle: what every framework glue does -------------------------

    def open(self, token: str | None) -> Session:
        """The session of a request that presented ``token``, loaded on first touch.

        Only for inline stores (sync, memory, file, SQLite, cookie); see :meth:`aopen`.
        """
        session = Session(loader=self.load)
        session._token = token
        self.prepare(session)
        return session

    def prepare(self, session: Session) -> None:
        """Wire per-middleware hooks into a request's session (glue that builds its own)."""
        if self.cap is not None and self.refuse and self.inline:
            session._admit = self._admit

    async def aopen(self, token: str | None) -> Session:
        """Like :meth:`open`; an async network store loads now if there is a token,
        or, with ``autoload=False``, when the app awaits ``session.load()``."""
        if self.inline:
            return self.open(token)
        session = Session()
        session._token = token
        if token is not None:
            if self.autoload:
                await self.aload(session)
            else:
                session._loaded = False
                session._aloader = self.aload
        return session

    async def aload(self, session: Session) -> None:
        """Load ``session`` (its ``_token`` set) from an async store, now.

        For glue code with its own Session subclass; :meth:`aopen` uses it.
        """
        if session._token is None:
            return
        flow = self.flow
        key = flow.load_key(session)
        if key is not None and not await self._afetch(session, key, flow.loaded):
            return
        if flow.legacy_until is not None:
            old = flow.legacy_key(session)
            if old is not None:
                await self._afetch(session, old, flow.adopt_legacy)

    def cookie_token(self, cookies: str | Iterable[tuple[bytes, bytes]] | None) -> str | None:
        """The session token in a ``Cookie`` header (str) or in ASGI raw headers, or None."""
        if cookies is not None and not isinstance(cookies, str):
            cookies = header_value(cookies, b"cookie")
        # An empty value (a half-deleted cookie) is no session, not an attack to log.
        return get_cookie(cookies, self.cookie_name) or None

    def load(self, session: Session) -> None:
        """The lazy loader of inline sessions (runs on the first touch)."""
        flow = self.flow
        token = session._token
        if token is None:
            cookies = session._cookies
            if cookies is None:
                return
            session._cookies = None
            token = session._token = self.cookie_token(cookies)
            if token is None:
                return
        key = flow.load_key(session)
        if key is not None and not self._fetch(session, key, flow.loaded):
            return
        if flow.legacy_until is not None:
            # Migrated sessions (legacy_session_cutoff): one more lookup, until the cutoff.
            old = flow.legacy_key(session)
            if old is not None:
                self._fetch(session, old, flow.adopt_legacy)

    def _fetch(self, session: Session, key: str, adopt: Adopt) -> bool:
        """Load ``key`` and let the flow ``adopt`` it; False when the store failed."""
        store = self.sync_store
        try:
            entry = store.load(key)
        except StoreUnavailable as exc:
            self._degrade(session, exc)
            return False
        doomed = adopt(session, key, entry)
        if doomed is not None:
            store.delete(doomed)
        return True

    async def _afetch(self, session: Session, key: str, adopt: Adopt) -> bool:
        store = self.async_store
        try:
            entry = await store.load(key)
        except StoreUnavailable as exc:
            self._degrade(session, exc)
            return False
        doomed = adopt(session, key, entry)
        if doomed is not None:
            await store.delete(doomed)
        return True

    def close(
        self,
        session: Session,
        status: int,
        ip: str | None = None,
        user_agent: str | None = None,
        *,
        public: bool = False,
        settled: Outcome | None = UNSETTLED,
    ) -> Outcome:
        """Commit an inline session; what the response must carry.

        ``public``: the response is marked ``Cache-Control: public``, so a shared
        cache could hand its Set-Cookie to other visitors: no cookie is sent, and
        changes that need one (a new or rotated id, a cookie-store session) are
        dropped with a warning. ``settled``: what ``flow.settled(session, status)``
        answered, when the caller asked already (see :meth:`quiet`).
        """
        if settled is UNSETTLED:
            settled = self.flow.settled(session, status)
        if public and self._needs_cookie(session, settled):
            return NOTHING
        outcome = self._commit_inline(session, status, ip, user_agent, settled)
        if public:
            outcome = self._withhold(outcome)
        if self.cap is not None and session._events is not None and self.inline:
            outcome = self._enforce_cap(session, outcome)
        if session._events is not None and status < 500 and not session._degraded:
            for event, pending in self._report(session):
                # Only an ASGI glue can await; a sync one refused async hooks upfront.
                pending.close()
                log.error("async %s hook skipped: use aclose() from async code", event.kind)
        return outcome

    def quiet(self, session: Session, status: int) -> Outcome | None:
        """:data:`QUIET` when closing ``session`` would do nothing (no store call, no
        cookie, no hook), else what to pass to :meth:`close` as ``settled``.

        The common read-only request ends here, before any header is looked at.
        """
        settled = self.flow.settled(session, status)
        if settled is NOTHING and session._events is None:
            return QUIET
        return settled

    def _commit_inline(
        self,
        session: Session,
        status: int,
        ip: str | None,
        user_agent: str | None,
        settled: Outcome | None,
    ) -> Outcome:
        flow = self.flow
        outcome = settled
        if outcome is None:
            if self.client_side:
                return flow.commit_client(session)
            try:
                outcome = run_sync(flow.commit(session, status, ip, user_agent), self.sync_store)
            except StoreUnavailable as exc:
                if not self.fail_open:
                    raise
                log.error("session not saved (failing open): %s", exc)
                return NOTHING
        return outcome

    async def aclose(
        self,
        session: Session,
        status: int,
        ip: str | None = None,
        user_agent: str | None = None,
        *,
        public: bool = False,
        settled: Outcome | None = UNSETTLED,
    ) -> Outcome:
        """Commit a session (awaiting an async store), then run the hooks (see :meth:`close`)."""
        if settled is UNSETTLED:
            settled = self.flow.settled(session, status)
        if public and self._needs_cookie(session, settled):
            return NOTHING
        if self.inline:
            outcome = self._commit_inline(session, status, ip, user_agent, settled)
        else:
            flow = self.flow
            if settled is not None:
                outcome = settled
            else:
                try:
                    outcome = await run_async(
                        flow.commit(session, status, ip, user_agent), self.async_store
                    )
                except StoreUnavailable as exc:
                    if not self.fail_open:
                        raise
                    log.error("session not saved (failing open): %s", exc)
                    return NOTHING
        if public:
            outcome = self._withhold(outcome)
        if self.cap is not None and session._events is not None:
            if self.inline:
                outcome = self._enforce_cap(session, outcome)
            else:
                outcome = await self._aenforce_cap(session, outcome)
        if session._events is not None and status < 500 and not session._degraded:
            for event, pending in self._report(session):
                await settle(pending, event)
        return outcome

    def _needs_cookie(self, session: Session, settled: Outcome | None) -> bool:
        """True (and a warning) when a public response would have to carry a new cookie."""
        if settled is not None:
            return False
        needs = (
            self.client_side
            or session._rotate
            or (session._entry is None and not session._is_empty())
        )
        if needs:
            security_log.warning(
                "session changes dropped: the response is Cache-Control: public, and a "
                "shared cache would hand its session cookie to other visitors"
            )
        return needs

    @staticmethod
    def _withhold(outcome: Outcome) -> Outcome:
        if outcome.token is None and not outcome.clear:
            return outcome
        security_log.warning("Set-Cookie withheld from a Cache-Control: public response")
        return NOTHING

    # -- a user's sessions ------------------------------------------------------------------

    def _admit(self, user_id: str, own_key: str | None) -> None:
        others = [k for k, _ in self.index.sessions_for(user_id) if k != own_key]
        if self.cap is not None and len(others) >= self.cap:
            raise TooManySessions(user_id, self.cap)

    def _logins(self, session: Session) -> list[str]:
        return [
            user
            for kind, _key, _prev, user in session._events or ()
            if kind in ("create", "rotate") and user is not None
        ]

    def _over_cap(
        self, session: Session, outcome: Outcome, found: list[tuple[str, Entry]]
    ) -> tuple[Outcome, list[tuple[str, Entry]]]:
        """Which sessions go when a login took the user past the cap (newest first)."""
        cap = self.cap or 0
        own = session._key
        others = [(k, e) for k, e in found if k != own]
        if len(others) < cap:
            return outcome, []
        if self.refuse:
            # Only reached when login() could not ask first (async stores).
            log.warning("login refused after the fact: max_sessions_per_user=%d reached", cap)
            mine = [(k, e) for k, e in found if k == own]
            return CLEAR, mine
        return outcome, others[cap - 1 :]

    def _enforce_cap(self, session: Session, outcome: Outcome) -> Outcome:
        for user in self._logins(session):
            outcome, doomed = self._over_cap(session, outcome, self.index.sessions_for(user))
            for key, entry in doomed:
                if self.index.revoke(key):
                    session._event("revoke", key, None, entry.user_id)
        return outcome

    async def _aenforce_cap(self, session: Session, outcome: Outcome) -> Outcome:
        for user in self._logins(session):
            found = await self.index.sessions_for(user)
            outcome, doomed = self._over_cap(session, outcome, found)
            for key, entry in doomed:
                if await self.index.revoke(key):
                    session._event("revoke", key, None, entry.user_id)
        return outcome

    def _index(self) -> Any:
        if self.index is None:
            raise UserIndexMissing(
                f"{type(self.store).__name__} keeps no per-user index; use a store that does "
                "(memory, file, SQLite, SQL, Redis) to list or revoke a user's sessions"
            )
        return self.index

    def sessions_for(self, user_id: str, current: Session | None = None) -> list[SessionInfo]:
        """The live sessions of ``user_id``, most recently seen first (sync stores)."""
        found = self._index().sessions_for(str(user_id))
        return [SessionInfo.of(k, e, current_key(current)) for k, e in found]

    async def asessions_for(
        self, user_id: str, current: Session | None = None
    ) -> list[SessionInfo]:
        found = await maybe_await(self._index().sessions_for(str(user_id)))
        return [SessionInfo.of(k, e, current_key(current)) for k, e in found]

    def _doomed(
        self, found: list[tuple[str, Entry]], handle: str | None, keep: Any
    ) -> list[tuple[str, Entry]]:
        if handle is not None:
            if len(handle) < 8:  # too short to name one session without guessing
                return []
            return [(k, e) for k, e in found if k.startswith(handle)][:1]
        keep_list: list[str] = []
        if isinstance(keep, Session):
            own = current_key(keep)
            if own:
                keep_list.append(own)
        elif keep:
            keep_list.extend(str(k) for k in keep)
        return keys_to_keep(found, keep_list)[1]

    def revoke(self, user_id: str, handle: str) -> bool:
        """Revoke the session of ``user_id`` whose handle is ``handle`` ("sign out that device")."""
        index = self._index()
        doomed = self._doomed(index.sessions_for(str(user_id)), handle, None)
        gone = [(k, e) for k, e in doomed if index.revoke(k)]
        self._fire_now(revoke_events(gone, self.flow.clock()))
        return bool(gone)

    def revoke_user(self, user_id: str, keep: Session | Iterable[str] | None = None) -> int:
        """Revoke all of ``user_id``'s sessions but ``keep`` (a Session, or handles): "sign out
        everywhere (else)". Returns how many went."""
        index = self._index()
        doomed = self._doomed(index.sessions_for(str(user_id)), None, keep)
        gone = [(k, e) for k, e in doomed if index.revoke(k)]
        self._fire_now(revoke_events(gone, self.flow.clock()))
        return len(gone)

    async def arevoke(self, user_id: str, handle: str) -> bool:
        index = self._index()
        found = await maybe_await(index.sessions_for(str(user_id)))
        gone = [
            (k, e)
            for k, e in self._doomed(found, handle, None)
            if await maybe_await(index.revoke(k))
        ]
        await settle_all(report(self.hooks, revoke_events(gone, self.flow.clock())))
        return bool(gone)

    async def arevoke_user(self, user_id: str, keep: Session | Iterable[str] | None = None) -> int:
        index = self._index()
        found = await maybe_await(index.sessions_for(str(user_id)))
        gone = [
            (k, e) for k, e in self._doomed(found, None, keep) if await maybe_await(index.revoke(k))
        ]
        await settle_all(report(self.hooks, revoke_events(gone, self.flow.clock())))
        return len(gone)

    def delete_expired(self, limit: int = 1000) -> int:
        """Remove up to ``limit`` expired sessions; ``on_expire`` hears of each when the
        store can say which went (memory, SQLite), else only the count is known."""
        store = self.sync_store if self.sync_store is not None else self.store
        pop = getattr(store, "pop_expired", None)
        if pop is None or "expire" not in self.hooks:
            return int(store.delete_expired(limit))
        gone = pop(limit)
        at = self.flow.clock()
        self._fire_now([SessionEvent("expire", handle_of(k), user, at) for k, user in gone])
        return len(gone)

    async def adelete_expired(self, limit: int = 1000) -> int:
        if self.inline:
            store: Any = self.sync_store
            pop = getattr(store, "pop_expired", None)
            if pop is None or "expire" not in self.hooks:
                return int(store.delete_expired(limit))
            gone = pop(limit)
        else:
            return int(await self.async_store.delete_expired(limit))
        at = self.flow.clock()
        events = [SessionEvent("expire", handle_of(k), user, at) for k, user in gone]
        await settle_all(report(self.hooks, events))
        return len(gone)

    def _fire_now(self, events: list[SessionEvent]) -> None:
        for event, pending in report(self.hooks, events):
            pending.close()
            log.error("async %s hook skipped: use the async method from async code", event.kind)

    def _report(self, session: Session) -> list[tuple[SessionEvent, Any]]:
        """Hand this request's lifecycle events to the hooks; returns pending async ones."""
        records, session._events = session._events or [], None
        if not self.hooks:
            return []
        at = self.flow.clock()
        pending = []
        for record in records:
            event = SessionEvent.from_record(record, at)
            result = fire(self.hooks, event)
            if result is not None:
                pending.append((event, result))
        return pending

    def _degrade(self, session: Session, exc: StoreUnavailable) -> None:
        if not self.fail_open:
            raise exc
        # An empty session that is never saved: the visitor's stored session
        # stays as it was for when the store is back.
        log.error("session store unavailable, serving an empty unsaved session: %s", exc)
        session._degraded = True

    def secure(self, scheme: str, peer: str | None, forwarded_proto: str | None) -> bool:
        if self.fixed_secure is not None:
            return self.fixed_secure
        if not self.proxies:
            return scheme == "https" or scheme == "wss"
        return is_secure(scheme, peer, forwarded_proto, self.proxies)

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str | None:
        if not forwarded_for or not self.proxies:
            return peer
        return client_address(peer, forwarded_for, self.proxies)

    def response_headers(self, outcome: Outcome, secure: bool) -> list[tuple[str, str]]:
        """Headers for ``outcome`` (Vary is the caller's: it depends on access, not outcome)."""
        if outcome.token is None and not outcome.clear:
            return []
        if self.cookie_transport:
            if outcome.clear:
                return [("Set-Cookie", self.renderer.delete(secure))]
            return [("Set-Cookie", self.renderer.set(outcome.token, outcome.max_age, secure))]  # type: ignore[arg-type]
        return [(self.header_name, "" if outcome.clear else outcome.token)]  # type: ignore[list-item]


def add_vary(headers: list[tuple[str, str]], value: str) -> None:
    """Add ``value`` to the response's Vary header (merging with an existing one)."""
    for header in headers:
        name = header[0]
        # The length first: most responses have no Vary, and this skips their lower().
        if len(name) == 4 and name.lower() == "vary":
            headers[headers.index(header)] = (name, merged_vary(header[1], value))
            return
    headers.append(("Vary", value))


def merged_vary(current: str, value: str) -> str:
    """A Vary header value that also names ``value``."""
    lower = value.lower()
    if current.strip() == "*" or lower in (v.strip().lower() for v in current.split(",")):
        return current
    return f"{current}, {value}"
