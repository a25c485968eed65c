"""API bearer tokens: who may see and act on which sites.

A token is 256 random bits (``mlt_`` + ``secrets.token_urlsafe(32)``), shown once by create()
and stored only as its SHA-256. Slow password hashes exist to stop guessing low-entropy
secrets; a 256-bit random token cannot be guessed, so one fast hash suffices and keeps
verify() to one indexed lookup per request. Nothing is cached, so a revocation applies to
the very next request on every API node.

Roles: ``viewer`` sees its sites; ``supervisor`` also acts on alerts of its sites; ``admin``
sees and acts everywhere (and manages tokens). Sites are a set of site ids, or None (``*``)
for all sites.

Tokens live in the ``api_tokens`` table of the alert store's database; pass the AlertStore's
engine (``TokenStore(store.engine)``) to share its connection pool, or a URL.
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
    Engine,
    Index,
    Integer,
    MetaData,
    Row,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from alerts.store.db import SCHEMA_LOCK, Clock, advisory_lock, make_engine, now_ms, transaction

PREFIX: Final = "mlt_"
CAMERA_PREFIX: Final = "mlc_"  # camera tokens: publish one camera's video, nothing else
_MAX_TOKEN_CHARS: Final = 200  # far above a real token; longer input is refused unhashed
ALL_SITES: Final = "*"


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

    @property
    def active(self) -> bool:
        return self.revoked_ms is None


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
    sqlite_autoincrement=True,
)
Index("camera_tokens_camera", camera_tokens.c.camera_id)


class TokenStore:
    def __init__(self, target: Engine | str, *, clock: Clock = now_ms) -> None:
        self._owns_engine = isinstance(target, str)
        self._engine = make_engine(target) if isinstance(target, str) else target
        self._clock = clock

    def close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()

    def create_schema(self) -> None:
        with transaction(self._engine, write=True) as conn:
            advisory_lock(conn, SCHEMA_LOCK)
            _metadata.create_all(conn, checkfirst=True)

    def create(
        self, name: str, role: Role | str, sites: frozenset[str] | None
    ) -> tuple[str, TokenInfo]:
        """A new token and its record; the token itself is returned here and never again."""
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
        token = PREFIX + secrets.token_urlsafe(32)
        now = self._clock()
        stmt = (
            insert(api_tokens)
            .values(
                name=name,
                role=role.value,
                sites=None if sites is None else sorted(sites),
                token_hash=hash_token(token),
                created_ms=now,
            )
            .returning(api_tokens.c.id)
        )
        try:
            with transaction(self._engine, write=True) as conn:
                token_id = int(conn.execute(stmt).scalar_one())
        except IntegrityError as exc:
            raise ValueError(f"an active token named {name!r} exists; revoke it first") from exc
        return token, TokenInfo(token_id, name, role, sites, now, None)

    def verify(self, token: str) -> Principal | None:
        """The principal of an active token; None for an unknown, revoked or malformed one."""
        if not token.startswith(PREFIX) or len(token) > _MAX_TOKEN_CHARS:
            return None
        digest = hash_token(token)
        query = select(api_tokens).where(api_tokens.c.token_hash == digest, _ACTIVE)
        with transaction(self._engine, write=False) as conn:
            row = conn.execute(query).first()
        # The lookup already matched the hash; comparing again in constant time costs nothing
        # and keeps timing independent of how a database compares strings.
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        info = _info(row)
        return Principal(info.name, info.role, info.sites)

    def revoke(self, token: int | str) -> bool:
        """Revoke by id (int) or by the name of the active token (str); False if none."""
        where = api_tokens.c.id == token if isinstance(token, int) else api_tokens.c.name == token
        stmt = update(api_tokens).where(where, _ACTIVE).values(revoked_ms=self._clock())
        with transaction(self._engine, write=True) as conn:
            return conn.execute(stmt).rowcount > 0

    def create_camera(self, camera_id: str) -> str:
        """A new publishing token for one camera, returned here and never again.

        A camera may hold several active tokens, so that a new one can be installed before the
        old one is revoked.
        """
        if not camera_id or not camera_id.strip():
            raise ValueError("a camera token names its camera")
        token = CAMERA_PREFIX + secrets.token_urlsafe(32)
        stmt = insert(camera_tokens).values(
            camera_id=camera_id, token_hash=hash_token(token), created_ms=self._clock()
        )
        with transaction(self._engine, write=True) as conn:
            conn.execute(stmt)
        return token

    def verify_camera(self, token: str) -> str | None:
        """The camera an active camera token publishes for; None if unknown or revoked."""
        if not token.startswith(CAMERA_PREFIX) or len(token) > _MAX_TOKEN_CHARS:
            return None
        digest = hash_token(token)
        query = select(camera_tokens.c.camera_id, camera_tokens.c.token_hash).where(
            camera_tokens.c.token_hash == digest, camera_tokens.c.revoked_ms.is_(None)
        )
        with transaction(self._engine, write=False) as conn:
            row = conn.execute(query).first()
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        return str(row.camera_id)

    def revoke_camera(self, camera_id: str) -> int:
        """Revoke every active token of a camera; how many were revoked."""
        stmt = (
            update(camera_tokens)
            .where(camera_tokens.c.camera_id == camera_id, camera_tokens.c.revoked_ms.is_(None))
            .values(revoked_ms=self._clock())
        )
        with transaction(self._engine, write=True) as conn:
            return int(conn.execute(stmt).rowcount)

    def list(self) -> builtins.list[TokenInfo]:
        """Every token, revoked ones included, oldest first."""
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
    )
