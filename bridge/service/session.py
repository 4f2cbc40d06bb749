"""Browser sign-in for the dashboard: one-time tickets, session cookies and their CSRF tokens.

A browser cannot run `munge -n`. `skbridge dashboard`, run by the user, trades a MUNGE
credential for a one-time ticket (POST /dashboard/ticket) and prints /login?ticket=...;
opening it sets an HttpOnly, SameSite=Strict session cookie. Tickets and sessions live in
this process's memory only: a restart of the service signs everyone out, like its tokens.
Cookie-authenticated requests that change something (submit, cancel, sign-out) also carry the
session's CSRF token and, when the browser sends one, an Origin of this service.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from bridge.service.access import ServiceState, state_of
from bridge.service.identity import AuthError, Identity, identity_for

COOKIE = "skb_session"
_MAX_SESSIONS = 10000  # a bound on memory: the oldest sessions go first
_MAX_TICKETS = 1000


@dataclass
class Session:
    uid: int
    gid: int
    expires: float
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))


class SessionStore:
    def __init__(self, session_ttl_s: float, ticket_ttl_s: float) -> None:
        self.session_ttl_s = session_ttl_s
        self.ticket_ttl_s = ticket_ttl_s
        self._tickets: dict[str, tuple[int, int, float]] = {}
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def issue_ticket(self, uid: int, gid: int, *, now: float | None = None) -> tuple[str, float]:
        moment = time.time() if now is None else now
        ticket = secrets.token_urlsafe(32)
        expires = moment + self.ticket_ttl_s
        with self._lock:
            self._prune(moment)
            while len(self._tickets) >= _MAX_TICKETS:
                self._tickets.pop(next(iter(self._tickets)))
            self._tickets[ticket] = (uid, gid, expires)
        return ticket, expires

    def redeem(self, ticket: str, *, now: float | None = None) -> tuple[str, Session]:
        """A new session for a ticket, which is used up whether or not it was still valid."""
        moment = time.time() if now is None else now
        with self._lock:
            found = self._tickets.pop(ticket, None)
        if found is None:
            raise AuthError("this sign-in link was used already or is unknown: run `skbridge dashboard` again")
        uid, gid, expires = found
        if moment >= expires:
            raise AuthError("this sign-in link expired: run `skbridge dashboard` again")
        return self.open_session(uid, gid, now=moment)

    def open_session(self, uid: int, gid: int, *, now: float | None = None) -> tuple[str, Session]:
        moment = time.time() if now is None else now
        session_id = secrets.token_urlsafe(32)
        session = Session(uid=uid, gid=gid, expires=moment + self.session_ttl_s)
        with self._lock:
            self._prune(moment)
            while len(self._sessions) >= _MAX_SESSIONS:
                self._sessions.pop(next(iter(self._sessions)))
            self._sessions[session_id] = session
        return session_id, session

    def get(self, session_id: str, *, now: float | None = None) -> Session | None:
        moment = time.time() if now is None else now
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and moment >= session.expires:
                del self._sessions[session_id]
                return None
        return session

    def close(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def _prune(self, moment: float) -> None:
        for ticket in [t for t, (_u, _g, exp) in self._tickets.items() if moment >= exp]:
            del self._tickets[ticket]
        for sid in [s for s, session in self._sessions.items() if moment >= session.expires]:
            del self._sessions[sid]


_create_lock = threading.Lock()


def store_of(request: Request) -> SessionStore:
    """The app's session store, made on first use (the app is assembled in app.py)."""
    app_state = request.app.state
    store: SessionStore | None = getattr(app_state, "dashboard_sessions", None)
    if store is None:
        with _create_lock:
            store = getattr(app_state, "dashboard_sessions", None)
            if store is None:
                service = state_of(request).settings.service
                store = SessionStore(service.session_ttl_s, service.login_ticket_ttl_s)
                app_state.dashboard_sessions = store
    return store


@dataclass(frozen=True)
class Signed:
    """The browser's user and the session's CSRF token (for the forms it renders)."""

    who: Identity
    csrf: str
    session_id: str


def session_of(request: Request, state: ServiceState) -> Signed | None:
    session_id = request.cookies.get(COOKIE, "")
    if not session_id:
        return None
    session = store_of(request).get(session_id)
    if session is None:
        return None
    try:
        who = identity_for(session.uid, session.gid, state.admin_gid)
    except AuthError:
        return None
    return Signed(who=who, csrf=session.csrf, session_id=session_id)


def same_origin(request: Request) -> bool:
    """Whether the Origin the browser sent (if any) is this service: a second line behind SameSite."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin in (f"{request.url.scheme}://{host}", f"http://{host}", f"https://{host}")


def check_form(request: Request, signed: Signed, token: str) -> None:
    """403 unless the form carries the session's CSRF token and came from this service's pages."""
    if not same_origin(request) or not hmac.compare_digest(token.encode(), signed.csrf.encode()):
        raise HTTPException(status_code=403, detail="the form's CSRF token or origin is not this session's: reload the page")


def _state(request: Request) -> ServiceState:
    return state_of(request)


def page_user(request: Request) -> Signed:
    """The signed-in browser's user, or a redirect to the login page."""
    signed = session_of(request, _state(request))
    if signed is None:
        raise HTTPException(status_code=303, detail="sign in first", headers={"Location": "/login"})
    return signed


def browser_user(request: Request) -> Signed:
    """The signed-in browser's user for a page's own fetches (log stream, downloads): 401 otherwise."""
    state = _state(request)
    signed = session_of(request, state)
    if signed is None:
        state.metrics.auth_failures.labels("session").inc()
        raise HTTPException(status_code=401, detail="sign in first: run `skbridge dashboard`")
    return signed


PageUser = Annotated[Signed, Depends(page_user)]
BrowserUser = Annotated[Signed, Depends(browser_user)]
