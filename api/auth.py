"""Bearer tokens on every /api/v1 route: who is calling, with which role, for which sites.

401 when the token is missing or unknown (with `WWW-Authenticate: Bearer`), 403 when the
caller may not see or act on what was asked. Tokens are made with `python -m api tokens`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from api.state import AppState, app_state
from devices.tokens import Principal, Role

# With auth turned off (a closed test network), every caller is an administrator.
NOBODY_CHECKED = Principal(name="anonymous", role=Role.ADMIN, sites=None)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": 'Bearer realm="mingliang"'})


async def principal(request: Request, state: Annotated[AppState, Depends(app_state)]) -> Principal:
    if not state.settings.auth.enabled:
        return NOBODY_CHECKED
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized(
            "missing token: send 'Authorization: Bearer <token>' "
            "(an administrator creates one with: python -m api tokens create)"
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("the Authorization header must be 'Bearer <token>'")
    found = await asyncio.to_thread(state.tokens.verify, token.strip())
    if found is None:
        raise _unauthorized("unknown or revoked token")
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
