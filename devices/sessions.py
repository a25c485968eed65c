"""Browser sessions: an API token exchanged once for a cookie, so a web page never keeps it.

The console signs in with an API token; open() checks it and makes a session: a secret of 256
random bits (``mls_`` + ``secrets.token_urlsafe(32)``) that the browser keeps in an HttpOnly
cookie, and a CSRF value the page sends back in a header with every change. As with API tokens,
only the secret's SHA-256 is stored (one fast hash suffices for 256 random bits). The CSRF value
is stored as is: it proves the request came from our page, not who is asking, and is worth
nothing without the cookie.

A session speaks for the API token it was opened with: verify() reads the session and its
token in one query and caches nothing, so revoking the token (``python -m api tokens revoke``)
ends its sessions on the very next request on every API node. A session never outlives its
token's expiry: it is opened to end by then, and verify() checks the token's expiry too.
Signing in and out are in the audit trail (devices/audit.py), in the same transaction.

Sessions live in the ``console_sessions`` table beside ``api_tokens`` in the alert store's
database; pass the AlertStore's engine (``SessionStore(store.engine)``) or a URL.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Final, NamedTuple

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)

from alerts.store.db import SCHEMA_LOCK, Clock, advisory_lock, make_engine, now_ms, transaction
from devices.audit import AuditLog, create_table
from devices.tokens import (
    CAMERA_PREFIX,
    PREFIX,
    Principal,
    Refusal,
    Refused,
    Role,
    api_tokens,
    hash_token,
    upgrade_schema,
)

SESSION_PREFIX: Final = "mls_"
_MAX_SECRET_CHARS: Final = 200  # far above a real secret or token; longer input is refused unhashed
KEEP_ENDED_MS: Final = 86_400_000  # ended and expired sessions stay a day, for whoever looks why
MAX_TTL_S: Final = 7 * 86_400

_metadata = MetaData()
console_sessions = Table(
    "console_sessions",
    _metadata,
    Column("id", Text, primary_key=True),  # SHA-256 (hex) of the session secret
    Column(
        "token_id",
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey(api_tokens.c.id, ondelete="CASCADE"),
        nullable=False,
    ),
    Column("csrf", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    # close() brings this forward to the moment the session ended, so that one indexed
    # condition finds every session that is over, ended or expired (prune, verify).
    Column("expires_ms", BigInteger, nullable=False),
    Column("ended_ms", BigInteger),
)
Index("console_sessions_expires", console_sessions.c.expires_ms)


@dataclass(frozen=True, slots=True)
class OpenedSession:
    """A new session; `secret` is returned here and never again (it goes into the cookie)."""

    secret: str
    csrf: str
    expires_ms: int
    principal: Principal


class ActiveSession(NamedTuple):
    """A verified session: who it speaks for, the CSRF value changes need, when it ends."""

    principal: Principal
    csrf: str
    expires_ms: int


class SessionStore:
    def __init__(self, target: Engine | str, *, clock: Clock = now_ms) -> None:
        self._owns_engine = isinstance(target, str)
        self._engine = make_engine(target) if isinstance(target, str) else target
        self._clock = clock
        self._audit = AuditLog(self._engine, clock=clock)

    def dispose(self) -> None:
        """Let go of the engine if this store made it from a URL (close() ends a session)."""
        if self._owns_engine:
            self._engine.dispose()

    def create_schema(self) -> None:
        with transaction(self._engine, write=True) as conn:
            advisory_lock(conn, SCHEMA_LOCK)
            # A session refers to its token: the tokens' table first, if TokenStore has not
            # made it yet (checkfirst: a no-op when it has).
            api_tokens.metadata.create_all(conn, tables=[api_tokens], checkfirst=True)
            upgrade_schema(conn)  # verify() reads the tokens' expiry
            _metadata.create_all(conn, checkfirst=True)
            create_table(conn)

    def open(self, token: str, ttl_s: int, *, source: str | None = None) -> OpenedSession | Refused:
        """A session for an active API token, ending `ttl_s` seconds from now or when the
        token expires, whichever comes first; else why the token is refused (a camera's
        publishing token included). `source` (the client address) is for the audit trail."""
        if not 0 < ttl_s <= MAX_TTL_S:
            raise ValueError(f"a session lasts 1 to {MAX_TTL_S} seconds, not {ttl_s}")
        if token.startswith(CAMERA_PREFIX):
            return Refused(Refusal.WRONG_KIND)  # camera tokens publish video, nothing else
        if not token.startswith(PREFIX) or len(token) > _MAX_SECRET_CHARS:
            return Refused(Refusal.MALFORMED)
        digest = hash_token(token)
        secret = SESSION_PREFIX + secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = self._clock()
        query = select(api_tokens).where(api_tokens.c.token_hash == digest)
        with transaction(self._engine, write=True) as conn:
            row = conn.execute(query).first()
            # As in TokenStore.verify: timing independent of how the database compares strings.
            if row is None or not hmac.compare_digest(row.token_hash, digest):
                return Refused(Refusal.UNKNOWN)
            if row.revoked_ms is not None:
                return Refused(Refusal.REVOKED)
            if row.expires_ms is not None and row.expires_ms <= now:
                return Refused(Refusal.EXPIRED, int(row.expires_ms))
            expires = now + ttl_s * 1000
            if row.expires_ms is not None:
                expires = min(expires, int(row.expires_ms))
            self._prune(conn, now)  # sign-ins are rare: tidying here needs no loop of its own
            conn.execute(
                insert(console_sessions).values(
                    id=hash_token(secret),
                    token_id=row.id,
                    csrf=csrf,
                    created_ms=now,
                    expires_ms=expires,
                )
            )
            self._audit.record(
                actor=row.name,
                action="session.opened",
                target_kind="session",
                target_id=row.name,
                source=source,
                details={"token_id": int(row.id), "expires_ms": expires},
                conn=conn,
            )
        principal = Principal(
            row.name, Role(row.role), None if row.sites is None else frozenset(row.sites)
        )
        return OpenedSession(secret, csrf, expires, principal)

    def authenticate(self, secret: str) -> ActiveSession | Refused:
        """The session's principal, CSRF value and expiry; else why not: the secret is
        malformed or unknown, the session expired or was signed out (session_over), or its
        token was revoked or expired."""
        if not secret.startswith(SESSION_PREFIX) or len(secret) > _MAX_SECRET_CHARS:
            return Refused(Refusal.MALFORMED)
        digest = hash_token(secret)
        query = (
            select(
                console_sessions.c.id,
                console_sessions.c.csrf,
                console_sessions.c.expires_ms,
                console_sessions.c.ended_ms,
                api_tokens.c.name,
                api_tokens.c.role,
                api_tokens.c.sites,
                api_tokens.c.revoked_ms,
                api_tokens.c.expires_ms.label("token_expires_ms"),
            )
            .select_from(
                console_sessions.join(api_tokens, console_sessions.c.token_id == api_tokens.c.id)
            )
            .where(console_sessions.c.id == digest)
        )
        now = self._clock()
        with transaction(self._engine, write=False) as conn:
            row = conn.execute(query).first()
        if row is None or not hmac.compare_digest(row.id, digest):
            return Refused(Refusal.UNKNOWN_SESSION)
        if row.revoked_ms is not None:
            return Refused(Refusal.REVOKED)
        if row.token_expires_ms is not None and row.token_expires_ms <= now:
            return Refused(Refusal.EXPIRED, int(row.token_expires_ms))
        if row.ended_ms is not None or row.expires_ms <= now:
            return Refused(Refusal.SESSION_OVER)
        sites = None if row.sites is None else frozenset(row.sites)
        return ActiveSession(
            Principal(row.name, Role(row.role), sites), row.csrf, int(row.expires_ms)
        )

    def verify(self, secret: str) -> ActiveSession | None:
        """The live session of `secret`; None whatever the reason it is not (authenticate()
        says which)."""
        found = self.authenticate(secret)
        return None if isinstance(found, Refused) else found

    def close(self, secret: str, *, source: str | None = None) -> bool:
        """End a session (signing out); False if it was unknown or already over. `source`
        (the client address) is for the audit trail."""
        if not secret.startswith(SESSION_PREFIX) or len(secret) > _MAX_SECRET_CHARS:
            return False
        now = self._clock()
        # Only a live session is ended, so its expiry is later than now: bringing it forward
        # to now lets expiry alone tell when a session was over (see console_sessions).
        stmt = (
            update(console_sessions)
            .where(
                console_sessions.c.id == hash_token(secret),
                console_sessions.c.ended_ms.is_(None),
                console_sessions.c.expires_ms > now,
            )
            .values(ended_ms=now, expires_ms=now)
            .returning(console_sessions.c.token_id)
        )
        with transaction(self._engine, write=True) as conn:
            ended = conn.execute(stmt).first()
            if ended is None:
                return False
            name = conn.execute(
                select(api_tokens.c.name).where(api_tokens.c.id == ended.token_id)
            ).scalar_one()
            self._audit.record(
                actor=name,
                action="session.closed",
                target_kind="session",
                target_id=name,
                source=source,
                details={"token_id": int(ended.token_id)},
                conn=conn,
            )
        return True

    def prune(self, now: int | None = None) -> int:
        """Remove sessions that ended or expired more than a day before `now`; how many."""
        with transaction(self._engine, write=True) as conn:
            return self._prune(conn, self._clock() if now is None else now)

    @staticmethod
    def _prune(conn: Connection, now: int) -> int:
        stmt = delete(console_sessions).where(console_sessions.c.expires_ms < now - KEEP_ENDED_MS)
        return int(conn.execute(stmt).rowcount)
