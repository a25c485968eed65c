"""Bearer tokens on every /api/v1 route: who is calling, with which role, for which sites.

401 when the token is missing or unknown (with `WWW-Authenticate: Bearer`), 403 when the
caller may not see or act on what was asked. Tokens are made with `python -m api tokens`.

A browser (the console) signs in once with a token (api/session.py) and then sends the
session cookie instead. A cookie goes with every request the browser makes to this origin,
whoever's page asked for it, so a change made by cookie must also carry the session's CSRF
value in a header: only our page, which read it from the sign-in answer, knows it. A request
with an Authorization header is judged by that header alone.

Every check of a secret goes through the guard (api/guard.py): an address that failed too
often is answered 429 without its token being looked at, failures are counted by reason, and
a success forgets the address's failures. A token with an expiry that has passed gets its own
401 ("token expired on ..."): its holder did have it once, so saying so reveals nothing.
"""

from __future__ import annotations

import asyncio
import hmac
from datetime import UTC, datetime
from typing import Annotated, Final

from fastapi import Depends, HTTPException, Request

from api.state import AppState, app_state
from devices.sessions import ActiveSession
from devices.tokens import Principal, Refusal, Refused, Role

SESSION_COOKIE: Final = "mingliang_session"
CSRF_HEADER: Final = "X-CSRF-Token"
# Methods that change nothing; every other one needs the CSRF header when sent by cookie.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})

# With auth turned off (a closed test network), every caller is an administrator.
NOBODY_CHECKED = Principal(name="anonymous", role=Role.ADMIN, sites=None)
# A browser sends its cookie with every request on its own, many at once when a page loads:
# a session that is over proves its holder once signed in, and counting each of those
# requests would make everyone behind the same address wait. Only a cookie that names no
# session at all may be a guess.
GUESSED_COOKIES: Final = frozenset({Refusal.MALFORMED, Refusal.UNKNOWN_SESSION})


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": 'Bearer realm="mingliang"'})


def iso_ms(at_ms: int) -> str:
    """Epoch milliseconds as an RFC 3339 time in UTC, to the second."""
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def token_refusal(refused: Refused) -> str:
    """The 401 detail for an API token that was refused."""
    if refused.reason is Refusal.EXPIRED and refused.expired_ms is not None:
        return (
            f"token expired on {iso_ms(refused.expired_ms)}: "
            "an administrator makes a new one with python -m api tokens create"
        )
    if refused.reason is Refusal.WRONG_KIND:
        return "a camera token publishes its camera's video only: use an API token (mlt_...)"
    # Unknown and revoked alike: the answer must not tell which tokens exist.
    return "unknown or revoked token"


def session_refusal(refused: Refused) -> str:
    """The 401 detail for a session cookie that was refused."""
    if refused.reason is Refusal.EXPIRED and refused.expired_ms is not None:
        return (
            f"your session ended: its token expired on {iso_ms(refused.expired_ms)}; "
            "sign in again with a new token"
        )
    return "your session expired or was ended (signed out, or its token revoked): sign in again"


async def cookie_session(request: Request, state: AppState) -> ActiveSession | None:
    """The live session the request's cookie names; None without a cookie; 401 for a cookie
    whose session is over (expired, signed out, or its token revoked or expired); 429 while
    the address must wait."""
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        return None
    state.guard.admit(request)
    found = await asyncio.to_thread(state.sessions.authenticate, secret)
    if isinstance(found, Refused):
        state.guard.failed(request, found.reason, throttle=found.reason in GUESSED_COOKIES)
        raise unauthorized(session_refusal(found))
    state.guard.succeeded(request)
    return found


def require_csrf(request: Request, session: ActiveSession) -> None:
    """403 unless a change made by cookie carries the session's CSRF value."""
    if request.method in SAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER, "")
    # Constant time: the value is a secret of the session, not to be guessed byte by byte.
    if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise HTTPException(
            403,
            f"missing or wrong CSRF token: send the header {CSRF_HEADER} with the csrf value "
            "of the session (GET /api/v1/session)",
        )


async def principal(request: Request, state: Annotated[AppState, Depends(app_state)]) -> Principal:
    if not state.settings.auth.enabled:
        return NOBODY_CHECKED
    header = request.headers.get("authorization")
    if not header:
        session = await cookie_session(request, state)
        if session is not None:
            require_csrf(request, session)
            return session.principal
        raise unauthorized(
            "missing token: send 'Authorization: Bearer <token>' "
            "(an administrator creates one with: python -m api tokens create)"
        )
    guard = state.guard
    guard.admit(request)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        guard.failed(request, Refusal.MALFORMED)
        raise unauthorized("the Authorization header must be 'Bearer <token>'")
    found = await asyncio.to_thread(state.tokens.authenticate, token.strip())
    if isinstance(found, Refused):
        guard.failed(request, found.reason)
        raise unauthorized(token_refusal(found))
    guard.succeeded(request)
    return found


Caller = Annotated[Principal, Depends(principal)]


def require_site(caller: Principal, site_id: str, *, act: bool = False) -> None:
    """403 unless the caller may see (or, with `act`, act on) the site."""
    if act and not caller.can_act(site_id):
        if caller.role is Role.VIEWER:
            raise HTTPException(403, f"{caller.name} is a viewer and cannot change alerts")
        raise HTTPException(403, f"{caller.name} may not act on site {site_id!r}")
    if not caller.can_see(site_id):
        raise HTTPException(403, f"{caller.name} may not see site {site_id!r}")


def require_admin(caller: Principal) -> None:
    if caller.role is not Role.ADMIN:
        raise HTTPException(403, f"{caller.name} is not an administrator")
