"""Browser sessions: the console signs in with an API token once and then uses a cookie.

A page that kept the token itself would have it in reach of any script that ever runs there,
and in URLs where EventSource, <img> and <video> cannot send headers. Instead the token is
exchanged for a session (devices/sessions.py): its secret in an HttpOnly cookie that scripts
cannot read, sent only by pages of this origin (SameSite=Strict), and a CSRF value the page
sends back in the X-CSRF-Token header with every change (api/auth.py checks it).

    POST   /api/v1/session   {"token": "mlt_..."}  sign in: the cookie, and who it speaks for
    GET    /api/v1/session                         who the cookie speaks for (after a reload)
    DELETE /api/v1/session                         sign out: the session ends, the cookie goes
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
from typing import Annotated, Final

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alerts.store.db import now_ms
from api.auth import (
    GUESSED_COOKIES,
    NOBODY_CHECKED,
    SESSION_COOKIE,
    cookie_session,
    require_csrf,
    token_refusal,
    unauthorized,
)
from api.body import BodyTooLarge, read_capped
from api.guard import client_address
from api.state import AppState, app_state
from devices.tokens import Principal, Refused, Role

router = APIRouter(prefix="/api/v1/session", tags=["session"])
State = Annotated[AppState, Depends(app_state)]

# A token is under fifty characters; a kilobyte leaves room for JSON's white space.
MAX_BODY_BYTES: Final = 1024
JSON = "application/json"
# The answer carries the CSRF value: no cache may keep it.
NO_STORE: Final = {"Cache-Control": "no-store"}


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(
        min_length=1, max_length=200, description="An API token (`mlt_...`), as issued."
    )


class SessionView(BaseModel):
    name: str = Field(description="The token's name.")
    role: Role
    sites: list[str] | None = Field(description="The sites it covers; null for every site.")
    csrf: str = Field(
        description="Send as the X-CSRF-Token header with every request that changes something."
    )
    expires_ms: int = Field(description="When the session ends (epoch ms): sign in again then.")


def _view(who: Principal, csrf: str, expires_ms: int) -> SessionView:
    sites = None if who.sites is None else sorted(who.sites)
    return SessionView(name=who.name, role=who.role, sites=sites, csrf=csrf, expires_ms=expires_ms)


def _anonymous(state: AppState) -> SessionView:
    """With auth off, the answer the console expects, for the anonymous administrator. No
    cookie is set and nothing is checked: the CSRF value is there only to keep the shape."""
    expires = now_ms() + state.settings.console.session_ttl_s * 1000
    return _view(NOBODY_CHECKED, secrets.token_urlsafe(32), expires)


async def _sign_in_body(request: Request) -> SignIn:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != JSON:
        # A form on another site can POST here but cannot send JSON without our consent
        # (CORS): requiring it stops a page from signing a browser in with a token of its own.
        raise HTTPException(415, f"send the token as {JSON}, not {kind or 'nothing'!r}")
    try:
        body = await read_capped(request, MAX_BODY_BYTES)
    except BodyTooLarge as exc:
        raise HTTPException(413, f"the body is {exc}") from exc
    # Reported like any other invalid body: 422 with FastAPI's list of errors, located in
    # "body", but without the usual `input`: it could hold a token, and need not even be text
    # that a JSON answer can carry (invalid UTF-8, lone surrogates).
    try:
        data = json.loads(body)
    except ValueError as exc:  # not JSON, or not UTF-8
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body",),
                    "msg": "JSON decode error",
                    "ctx": {"error": str(exc)},
                }
            ]
        ) from exc
    try:
        return SignIn.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors]
        ) from exc


@router.post(
    "",
    response_model=SessionView,
    summary="Sign in with an API token: a session cookie for the browser",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": SignIn.model_json_schema()}},
        }
    },
    responses={
        401: {"description": "Unknown, revoked or expired token."},
        429: {"description": "Too many failed attempts from this address: wait Retry-After."},
    },
)
async def sign_in(request: Request, response: Response, state: State) -> SessionView:
    """Sets the HttpOnly cookie `mingliang_session` for `console.session_ttl_s`, or until the
    token expires if that is sooner; the answer says who the token speaks for and the CSRF
    value to send with every change. With auth off, answers as the anonymous administrator and
    sets no cookie."""
    if state.settings.auth.enabled:
        state.guard.admit(request)
    body = await _sign_in_body(request)
    response.headers.update(NO_STORE)
    if not state.settings.auth.enabled:
        return _anonymous(state)
    token = body.token.strip()
    ttl_s = state.settings.console.session_ttl_s
    opened = await asyncio.to_thread(
        state.sessions.open, token, ttl_s, source=client_address(request)
    )
    if isinstance(opened, Refused):
        state.guard.failed(request, opened.reason)
        raise unauthorized(token_refusal(opened))
    state.guard.succeeded(request)
    # The browser forgets the cookie when the session ends, the token's expiry included.
    left_s = math.ceil((opened.expires_ms - now_ms()) / 1000)
    response.set_cookie(
        SESSION_COOKIE,
        opened.secret,
        max_age=max(1, min(ttl_s, left_s)),
        path="/",
        secure=state.settings.console.secure_cookie,
        httponly=True,
        samesite="strict",
    )
    return _view(opened.principal, opened.csrf, opened.expires_ms)


@router.get(
    "",
    response_model=SessionView,
    summary="The session of the cookie: who it speaks for, its CSRF value and expiry",
    responses={401: {"description": "No session, or it expired or was ended."}},
)
async def current(request: Request, response: Response, state: State) -> SessionView:
    response.headers.update(NO_STORE)
    if not state.settings.auth.enabled:
        return _anonymous(state)
    session = await cookie_session(request, state)
    if session is None:
        raise unauthorized("no session: sign in with POST /api/v1/session")
    return _view(session.principal, session.csrf, session.expires_ms)


@router.delete(
    "",
    status_code=204,
    summary="Sign out: end the cookie's session and clear the cookie",
    responses={403: {"description": "The session is live and the CSRF header is missing."}},
)
async def sign_out(request: Request, state: State) -> Response:
    """Needs the X-CSRF-Token header while the session is live. Signing out without a cookie,
    or with one whose session is already over, ends nothing and still clears the cookie."""
    secret = request.cookies.get(SESSION_COOKIE)
    if secret and state.settings.auth.enabled:
        state.guard.admit(request)
        found = await asyncio.to_thread(state.sessions.authenticate, secret)
        if isinstance(found, Refused):
            # Nothing to end; only a secret naming no session may be a guess (api/auth.py).
            state.guard.failed(request, found.reason, throttle=found.reason in GUESSED_COOKIES)
        else:
            state.guard.succeeded(request)
            require_csrf(request, found)
            await asyncio.to_thread(state.sessions.close, secret, source=client_address(request))
    done = Response(status_code=204, headers=NO_STORE)
    # The attributes it was set with: a browser replaces only the cookie whose path matches.
    done.delete_cookie(
        SESSION_COOKIE,
        path="/",
        secure=state.settings.console.secure_cookie,
        httponly=True,
        samesite="strict",
    )
    return done
