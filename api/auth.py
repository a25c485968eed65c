"""Bearer tokens on every /api/v1 route: who is calling, with which role, for which sites.

401 when the token is missing or unknown (with `WWW-Authenticate: Bearer`), 403 when the
caller may not see or act on what was asked. Tokens are made with `python -m api tokens`.

A browser (the console) signs in once with a token (api/session.py) and then sends the
session cookie instead. A cookie goes with every request the browser makes to this origin,
whoever's page asked for it, so a change made by cookie must also carry the session's CSRF
value in a header: only our page, which read it from the sign-in answer, knows it. A request
with an Authorization header is judged by that header alone.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Annotated, Final

from fastapi import Depends, HTTPException, Request

from api.state import AppState, app_state
from devices.sessions import ActiveSession
from devices.tokens import Principal, Role

SESSION_COOKIE: Final = "mingliang_session"
CSRF_HEADER: Final = "X-CSRF-Token"
# Methods that change nothing; every other one needs the CSRF header when sent by cookie.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})

# With auth turned off (a closed test network), every caller is an administrator.
NOBODY_CHECKED = Principal(name="anonymous", role=Role.ADMIN, sites=None)


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": 'Bearer realm="mingliang"'})


async def cookie_session(request: Request, state: AppState) -> ActiveSession | None:
    """The live session the request's cookie names; None without a cookie; 401 for a cookie
    whose session is over (expired, signed out, or its token revoked)."""
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        return None
    found = await asyncio.to_thread(state.sessions.verify, secret)
    if found is None:
        raise unauthorized(
            "your session expired or was ended (signed out, or its token revoked): sign in again"
        )
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
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("the Authorization header must be 'Bearer <token>'")
    found = await asyncio.to_thread(state.tokens.verify, token.strip())
    if found is None:
        raise unauthorized("unknown or revoked token")
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
