"""API bearer tokens: who may see and act on which sites.

A token is 256 random bits (``mlt_`` + ``secrets.token_urlsafe(32)``), shown once by create()
and stored only as its SHA-256. Slow password hashes exist to stop guessing low-entropy
secrets; a 256-bit random token cannot be guessed, so one fast hash suffices and keeps
verify() to one indexed lookup per request. Nothing is cached, so a revocation applies to
the very next request on every API node.

Roles: ``viewer`` sees its sites; ``supervisor`` also acts on alerts of its sites; ``admin``
sees and acts everywhere (and manages tokens). Sites are a set of site ids, or None (``*``)
for all sites.

A token may be given an expiry (``expires_ms``); after it, the token is refused as
``expired``, and the console sessions opened with it end (devices/sessions.py). A holder of an
expired or revoked token once had it: telling it "expired" reveals nothing about which other
tokens exist. Every creation and revocation is in the audit trail (devices/audit.py), written
in the same transaction.

Tokens live in the ``api_tokens`` table of the alert store's database; pass the AlertStore's
engine (``TokenStore(store.engine)``) to share its connection pool, or a URL. create_schema()
also adds the columns that came later (``expires_ms``) to tables made before them.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    Row,
    Table,
    Text,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from alerts.store.db import SCHEMA_LOCK, Clock, advisory_lock, make_engine, now_ms, transaction
from devices.audit import AuditLog, cli_actor, create_table

PREFIX: Final = "mlt_"
CAMERA_PREFIX: Final = "mlc_"  # camera tokens: publish one camera's video, nothing else
_MAX_TOKEN_CHARS: Final = 200  # far above a real token; longer input is refused unhashed
ALL_SITES: Final = "*"


class Refusal(StrEnum):
    """Why a secret was refused (the label of mingliang_api_auth_failures_total)."""

    MALFORMED = "malformed"  # not shaped like one of ours: no secret was looked up
    UNKNOWN = "unknown_token"  # no such token
    REVOKED = "revoked"
    EXPIRED = "expired"
    WRONG_KIND = "wrong_kind"  # a camera token where an API token belongs, or the reverse
    UNKNOWN_SESSION = "unknown_session"  # a session cookie naming no session
    SESSION_OVER = "session_over"  # a session that expired or was signed out


@dataclass(frozen=True, slots=True)
class Refused:
    """A secret that was refused, and why; `expired_ms` says when an expired token expired."""

    reason: Refusal
    expired_ms: int | None = None


class Role(StrEnum):
    VIEWER = "viewer"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for."""

    name: str
    role: Role
    sites: frozenset[str] | None  # None: all sites

    @property
    def site_scope(self) -> frozenset[str] | None:
        """The AlertFilter.site_ids / changes_since site_ids that limit this principal."""
        return None if self.role is Role.ADMIN else self.sites

    def can_see(self, site_id: str) -> bool:
        scope = self.site_scope
        return scope is None or site_id in scope

    def can_act(self, site_id: str) -> bool:
        return self.role is not Role.VIEWER and self.can_see(site_id)

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as list() shows it: never the token, never its hash."""

    id: int
    name: str
    role: Role
    sites: frozenset[str] | None
    created_ms: int
    revoked_ms: int | None
    expires_ms: int | None = None  # None: never

    @property
    def active(self) -> bool:
        """Not revoked (it may still have expired: see expired())."""
        return self.revoked_ms is None

    def expired(self, now_ms: int) -> bool:
        return self.expires_ms is not None and self.expires_ms <= now_ms


def parse_sites(text: str) -> frozenset[str] | None:
    """``*`` for all sites, else comma-separated site ids ("s1,s2")."""
    if text.strip() == ALL_SITES:
        return None
    sites = frozenset(part.strip() for part in text.split(",") if part.strip())
    if not sites:
        raise ValueError("name at least one site, or * for all sites")
    return sites


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


_metadata = MetaData()
api_tokens = Table(
    "api_tokens",
    _metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("name", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("sites", JSON),  # sorted list of site ids; NULL for all sites
    Column("token_hash", Text, nullable=False, unique=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("revoked_ms", BigInteger),
    Column("expires_ms", BigInteger),  # NULL: never; added after the first release
    CheckConstraint(
        "role IN (" + ", ".join(f"'{r.value}'" for r in Role) + ")", name="api_tokens_role"
    ),
    sqlite_autoincrement=True,
)
_ACTIVE = api_tokens.c.revoked_ms.is_(None)
# A name belongs to one active token at a time; a revoked token frees its name for the next.
Index(
    "api_tokens_active_name",
    api_tokens.c.name,
    unique=True,
    sqlite_where=_ACTIVE,
    postgresql_where=_ACTIVE,
)


camera_tokens = Table(
    "camera_tokens",
    _metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("camera_id", Text, nullable=False),
    Column("token_hash", Text, nullable=False, unique=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("revoked_ms", BigInteger),
    Column("expires_ms", BigInteger),  # NULL: never; added after the first release
    sqlite_autoincrement=True,
)
Index("camera_tokens_camera", camera_tokens.c.camera_id)

# Columns added after their tables were first released: nullable, without defaults, so that
# ALTER TABLE ... ADD COLUMN gives rows made before them NULL ("never expires").
_LATER_COLUMNS: Final = ((api_tokens, "expires_ms"), (camera_tokens, "expires_ms"))


def upgrade_schema(conn: Connection) -> None:
    """Add the columns an older database lacks (the caller holds the schema lock). A table
    not made yet is left to create_all, which makes it whole."""
    inspector = inspect(conn)
    for table, name in _LATER_COLUMNS:
        if not inspector.has_table(table.name):
            continue
        if name in {column["name"] for column in inspector.get_columns(table.name)}:
            continue
        kind = table.c[name].type.compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}"))


def _expired(expires_ms: int | None, now: int) -> bool:
    return expires_ms is not None and expires_ms <= now


def _who(actor: str | None, source: str | None) -> tuple[str, str | None]:
    """Who changes tokens, for the audit trail: by default whoever runs this command line."""
    if actor is None:
        by = cli_actor()
        return by, by if source is None else source
    return actor, source


class TokenStore:
    """Tokens in the alert store's database. Changes take `actor` and `source` for the audit
    trail; without them they are the command line's (devices.audit.cli_actor())."""

    def __init__(self, target: Engine | str, *, clock: Clock = now_ms) -> None:
        self._owns_engine = isinstance(target, str)
        self._engine = make_engine(target) if isinstance(target, str) else target
        self._clock = clock
        self._audit = AuditLog(self._engine, clock=clock)

    def close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()

    def create_schema(self) -> None:
        with transaction(self._engine, write=True) as conn:
            advisory_lock(conn, SCHEMA_LOCK)
            _metadata.create_all(conn, checkfirst=True)
            upgrade_schema(conn)
            create_table(conn)

    def create(
        self,
        name: str,
        role: Role | str,
        sites: frozenset[str] | None,
        *,
        expires_ms: int | None = None,
        actor: str | None = None,
        source: str | None = None,
    ) -> tuple[str, TokenInfo]:
        """A new token and its record; the token itself is returned here and never again.
        With `expires_ms` (epoch ms, in the future) it is refused from then on."""
        role = Role(role)
        if not name or not name.strip():
            raise ValueError("a token needs a name")
        if sites is not None:
            if ALL_SITES in sites:
                sites = None
            elif not sites:
                raise ValueError("name at least one site, or None (*) for all sites")
        if role is Role.ADMIN and sites is not None:
            raise ValueError("an admin token covers all sites; pass sites=None")
        now = self._clock()
        if expires_ms is not None and expires_ms <= now:
            raise ValueError("the token would expire before it is made: expires_ms is past")
        actor, source = _who(actor, source)
        token = PREFIX + secrets.token_urlsafe(32)
        listed = None if sites is None else sorted(sites)
        stmt = (
            insert(api_tokens)
            .values(
                name=name,
                role=role.value,
                sites=listed,
                token_hash=hash_token(token),
                created_ms=now,
                expires_ms=expires_ms,
            )
            .returning(api_tokens.c.id)
        )
        try:
            with transaction(self._engine, write=True) as conn:
                token_id = int(conn.execute(stmt).scalar_one())
                self._audit.record(
                    actor=actor,
                    action="token.created",
                    target_kind="token",
                    target_id=name,
                    source=source,
                    details={
                        "token_id": token_id,
                        "role": role.value,
                        "sites": listed,
                        "expires_ms": expires_ms,
                    },
                    conn=conn,
                )
        except IntegrityError as exc:
            raise ValueError(f"an active token named {name!r} exists; revoke it first") from exc
        return token, TokenInfo(token_id, name, role, sites, now, None, expires_ms)

    def authenticate(self, token: str) -> Principal | Refused:
        """The principal of an active token, or why it is refused."""
        if token.startswith(CAMERA_PREFIX):
            return Refused(Refusal.WRONG_KIND)
        if not token.startswith(PREFIX) or len(token) > _MAX_TOKEN_CHARS:
            return Refused(Refusal.MALFORMED)
        digest = hash_token(token)
        # By hash alone (unique): a revoked or expired token is told apart from an unknown one.
        query = select(api_tokens).where(api_tokens.c.token_hash == digest)
        with transaction(self._engine, write=False) as conn:
            row = conn.execute(query).first()
        # The lookup already matched the hash; comparing again in constant time costs nothing
        # and keeps timing independent of how a database compares strings.
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return Refused(Refusal.UNKNOWN)
        if row.revoked_ms is not None:
            return Refused(Refusal.REVOKED)
        if _expired(row.expires_ms, self._clock()):
            return Refused(Refusal.EXPIRED, int(row.expires_ms))
        info = _info(row)
        return Principal(info.name, info.role, info.sites)

    def verify(self, token: str) -> Principal | None:
        """The principal of an active token; None for an unknown, revoked, expired or
        malformed one."""
        found = self.authenticate(token)
        return None if isinstance(found, Refused) else found

    def revoke(
        self, token: int | str, *, actor: str | None = None, source: str | None = None
    ) -> bool:
        """Revoke by id (int) or by the name of the active token (str); False if none."""
        where = api_tokens.c.id == token if isinstance(token, int) else api_tokens.c.name == token
        actor, source = _who(actor, source)
        stmt = (
            update(api_tokens)
            .where(where, _ACTIVE)
            .values(revoked_ms=self._clock())
            .returning(api_tokens.c.id, api_tokens.c.name)
        )
        with transaction(self._engine, write=True) as conn:
            revoked = conn.execute(stmt).all()
            for row in revoked:  # at most one: names are unique among active tokens
                self._audit.record(
                    actor=actor,
                    action="token.revoked",
                    target_kind="token",
                    target_id=row.name,
                    source=source,
                    details={"token_id": int(row.id)},
                    conn=conn,
                )
        return bool(revoked)

    def create_camera(
        self,
        camera_id: str,
        *,
        expires_ms: int | None = None,
        site_id: str | None = None,
        actor: str | None = None,
        source: str | None = None,
    ) -> str:
        """A new publishing token for one camera, returned here and never again; with
        `expires_ms`, refused from then on. `site_id` (the camera's) is for the audit trail.

        A camera may hold several active tokens, so that a new one can be installed before the
        old one is revoked.
        """
        if not camera_id or not camera_id.strip():
            raise ValueError("a camera token names its camera")
        now = self._clock()
        if expires_ms is not None and expires_ms <= now:
            raise ValueError("the token would expire before it is made: expires_ms is past")
        actor, source = _who(actor, source)
        token = CAMERA_PREFIX + secrets.token_urlsafe(32)
        stmt = (
            insert(camera_tokens)
            .values(
                camera_id=camera_id,
                token_hash=hash_token(token),
                created_ms=now,
                expires_ms=expires_ms,
            )
            .returning(camera_tokens.c.id)
        )
        with transaction(self._engine, write=True) as conn:
            token_id = int(conn.execute(stmt).scalar_one())
            self._audit.record(
                actor=actor,
                action="camera_token.created",
                target_kind="camera_token",
                target_id=camera_id,
                site_id=site_id,
                source=source,
                details={"token_id": token_id, "expires_ms": expires_ms},
                conn=conn,
            )
        return token

    def authenticate_camera(self, token: str) -> str | Refused:
        """The camera an active camera token publishes for, or why it is refused."""
        if token.startswith(PREFIX):
            return Refused(Refusal.WRONG_KIND)
        if not token.startswith(CAMERA_PREFIX) or len(token) > _MAX_TOKEN_CHARS:
            return Refused(Refusal.MALFORMED)
        digest = hash_token(token)
        query = select(
            camera_tokens.c.camera_id,
            camera_tokens.c.token_hash,
            camera_tokens.c.revoked_ms,
            camera_tokens.c.expires_ms,
        ).where(camera_tokens.c.token_hash == digest)
        with transaction(self._engine, write=False) as conn:
            row = conn.execute(query).first()
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return Refused(Refusal.UNKNOWN)
        if row.revoked_ms is not None:
            return Refused(Refusal.REVOKED)
        if _expired(row.expires_ms, self._clock()):
            return Refused(Refusal.EXPIRED, int(row.expires_ms))
        return str(row.camera_id)

    def verify_camera(self, token: str) -> str | None:
        """The camera an active camera token publishes for; None if unknown, revoked or
        expired."""
        found = self.authenticate_camera(token)
        return None if isinstance(found, Refused) else found

    def revoke_camera(
        self,
        camera_id: str,
        *,
        site_id: str | None = None,
        actor: str | None = None,
        source: str | None = None,
    ) -> int:
        """Revoke every active token of a camera; how many were revoked."""
        actor, source = _who(actor, source)
        stmt = (
            update(camera_tokens)
            .where(camera_tokens.c.camera_id == camera_id, camera_tokens.c.revoked_ms.is_(None))
            .values(revoked_ms=self._clock())
            .returning(camera_tokens.c.id)
        )
        with transaction(self._engine, write=True) as conn:
            ids = sorted(int(row.id) for row in conn.execute(stmt))
            if ids:
                self._audit.record(
                    actor=actor,
                    action="camera_token.revoked",
                    target_kind="camera_token",
                    target_id=camera_id,
                    site_id=site_id,
                    source=source,
                    details={"token_ids": ids},
                    conn=conn,
                )
        return len(ids)

    def list(self) -> builtins.list[TokenInfo]:
        """Every token, revoked and expired ones included, oldest first."""
        query = select(api_tokens).order_by(api_tokens.c.id)
        with transaction(self._engine, write=False) as conn:
            return [_info(row) for row in conn.execute(query)]


def _info(row: Row[Any]) -> TokenInfo:
    return TokenInfo(
        id=int(row.id),
        name=row.name,
        role=Role(row.role),
        sites=None if row.sites is None else frozenset(row.sites),
        created_ms=int(row.created_ms),
        revoked_ms=None if row.revoked_ms is None else int(row.revoked_ms),
        expires_ms=None if row.expires_ms is None else int(row.expires_ms),
    )
