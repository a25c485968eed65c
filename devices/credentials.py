"""Broker credentials: every device, and each of the service's own MQTT clients, its own account.

An account is a user name and a random password (``secrets.token_urlsafe(24)``, 192 bits) that
`create` and `rotate` return once; the store keeps only Mosquitto's PBKDF2-SHA512 hash of it
(``$7$`` in its password file). A device's user name is its device id; the service's accounts
are named by their role:

- ``ingest`` reads what devices send: ``v1/sites/+/devices/+/{telemetry,status,events}``;
- ``relay`` writes alert changes: ``v1/alerts/#``.

`broker_files` turns the inventory and the active accounts into Mosquitto's password file and
ACL: a device writes only its own telemetry, status and events topics under its own site, and
reads only its own command topics; a gateway also writes for the other devices of its site,
which talk through it. An account whose device left the inventory gets no line at all, and
nobody else gets anything: anonymous clients are refused by ``allow_anonymous false``.

As with tokens, a 192-bit random secret cannot be guessed, so the hash's iteration count only
has to make a stolen password file useless for recovering it, not to slow guessing.

Accounts live in the ``broker_accounts`` table of the alert store's database; every change is
in the audit trail (devices/audit.py).
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from sqlalchemy import (
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
    select,
    update,
)

from alerts.store.db import SCHEMA_LOCK, Clock, advisory_lock, make_engine, now_ms, transaction
from devices.audit import AuditLog, cli_actor
from devices.registry import Registry

PBKDF2_ITERATIONS: Final = 1000
CHANNELS: Final = ("telemetry", "status", "events")
COMMANDS: Final = "commands/#"
GATEWAY_TYPE: Final = "gateway"


class CredentialError(Exception):
    """A credential cannot be made, changed or written; the message says which and why."""


class ServiceRole(StrEnum):
    INGEST = "ingest"
    RELAY = "relay"


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """An account as list() shows it: never the password, never its hash."""

    username: str
    role: str  # "device", or a ServiceRole
    created_ms: int
    revoked_ms: int | None

    @property
    def active(self) -> bool:
        return self.revoked_ms is None


_metadata = MetaData()
broker_accounts = Table(
    "broker_accounts",
    _metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("username", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("revoked_ms", BigInteger),
    CheckConstraint(
        "role IN ('device', " + ", ".join(f"'{r.value}'" for r in ServiceRole) + ")",
        name="broker_accounts_role",
    ),
    sqlite_autoincrement=True,
)
_ACTIVE = broker_accounts.c.revoked_ms.is_(None)
Index(
    "broker_accounts_active_username",
    broker_accounts.c.username,
    unique=True,
    sqlite_where=_ACTIVE,
    postgresql_where=_ACTIVE,
)


def mosquitto_hash(password: str, *, salt: bytes | None = None) -> str:
    """Mosquitto 2's password-file hash: ``$7$<iterations>$<salt>$<PBKDF2-SHA512>``."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    encoded_salt, encoded_digest = (
        base64.b64encode(salt).decode(),
        base64.b64encode(digest).decode(),
    )
    return f"$7${PBKDF2_ITERATIONS}${encoded_salt}${encoded_digest}"


class CredentialStore:
    def __init__(
        self, target: Engine | str, *, clock: Clock = now_ms, actor: str | None = None
    ) -> None:
        self._owns_engine = isinstance(target, str)
        self._engine = make_engine(target) if isinstance(target, str) else target
        self._clock = clock
        self._audit = AuditLog(self._engine, clock=clock)
        self._actor = actor or cli_actor()

    def close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()

    def create_schema(self) -> None:
        with transaction(self._engine, write=True) as conn:
            advisory_lock(conn, SCHEMA_LOCK)
            _metadata.create_all(conn, checkfirst=True)
        self._audit.create_schema()

    def create(self, username: str, role: str = "device", site_id: str | None = None) -> str:
        """A new account's password, returned here and never again."""
        return self._issue(username, role, site_id, rotate=False)

    def rotate(self, username: str, site_id: str | None = None) -> str:
        """Replace an active account's password; the old one stops working at the next
        broker reload."""
        return self._issue(username, None, site_id, rotate=True)

    def revoke(self, username: str, site_id: str | None = None) -> bool:
        """False if the account has no active password."""
        now = self._clock()
        stmt = (
            update(broker_accounts)
            .where(broker_accounts.c.username == username, _ACTIVE)
            .values(revoked_ms=now)
        )
        with transaction(self._engine, write=True) as conn:
            if conn.execute(stmt).rowcount == 0:
                return False
            self._record(conn, "credential.revoked", username, site_id, {})
        return True

    def active(self) -> dict[str, tuple[str, str]]:
        """User name -> (role, password hash) of every active account."""
        query = select(
            broker_accounts.c.username, broker_accounts.c.role, broker_accounts.c.password_hash
        ).where(_ACTIVE)
        with transaction(self._engine, write=False) as conn:
            return {row.username: (row.role, row.password_hash) for row in conn.execute(query)}

    def list(self) -> builtins.list[AccountInfo]:
        """Every account, revoked ones included, oldest first."""
        query = select(broker_accounts).order_by(broker_accounts.c.id)
        with transaction(self._engine, write=False) as conn:
            return [_info(row) for row in conn.execute(query)]

    def issue(self, accounts: Iterable[tuple[str, str, str | None]]) -> dict[str, str]:
        """New passwords for many (user name, role, site) at once, in one transaction: an
        account that has one is rotated, one that has none is created."""
        passwords: dict[str, str] = {}
        with transaction(self._engine, write=True) as conn:
            active = {
                row.username
                for row in conn.execute(select(broker_accounts.c.username).where(_ACTIVE))
            }
            for username, role, site_id in accounts:
                rotate = username in active
                passwords[username] = self._issue_in(conn, username, role, site_id, rotate=rotate)
        return passwords

    def create_partitioned(self, name: str, role: str, partitions: int) -> dict[str, str]:
        """Accounts `<name>-p00` ... for ingest's partitions (cluster.partitions): one
        password for all, since a node's config holds one (each hashed with its own salt).
        Returned here and never again."""
        if not 1 <= partitions <= 256:
            raise CredentialError(f"partitions must be between 1 and 256, not {partitions}")
        password = secrets.token_urlsafe(24)
        names = [f"{name}-p{p:02d}" for p in range(partitions)]
        with transaction(self._engine, write=True) as conn:
            for username in names:
                self._issue_in(conn, username, role, None, rotate=False, password=password)
        return dict.fromkeys(names, password)

    def _issue(self, username: str, role: str | None, site_id: str | None, *, rotate: bool) -> str:
        with transaction(self._engine, write=True) as conn:
            return self._issue_in(conn, username, role, site_id, rotate=rotate)

    def _issue_in(
        self,
        conn: Connection,
        username: str,
        role: str | None,
        site_id: str | None,
        *,
        rotate: bool,
        password: str | None = None,
    ) -> str:
        password = password or secrets.token_urlsafe(24)
        now = self._clock()
        current = conn.execute(
            select(broker_accounts.c.role).where(broker_accounts.c.username == username, _ACTIVE)
        ).first()
        if rotate:
            if current is None:
                raise CredentialError(f"{username} has no active credential to rotate")
            role = role or str(current.role)
            conn.execute(
                update(broker_accounts)
                .where(broker_accounts.c.username == username, _ACTIVE)
                .values(revoked_ms=now)
            )
        elif current is not None:
            raise CredentialError(
                f"{username} already has a credential: rotate it, or revoke it first"
            )
        conn.execute(
            insert(broker_accounts).values(
                username=username,
                role=role,
                password_hash=mosquitto_hash(password),
                created_ms=now,
            )
        )
        action = "credential.rotated" if rotate else "credential.created"
        self._record(conn, action, username, site_id, {"role": role})
        return password

    def _record(
        self,
        conn: Connection,
        action: str,
        username: str,
        site_id: str | None,
        details: dict[str, Any],
    ) -> None:
        self._audit.record(
            actor=self._actor,
            action=action,
            target_kind="credential",
            target_id=username,
            site_id=site_id,
            source=self._actor,
            details=details,
            conn=conn,
        )


def _info(row: Row[Any]) -> AccountInfo:
    return AccountInfo(
        username=row.username,
        role=row.role,
        created_ms=int(row.created_ms),
        revoked_ms=None if row.revoked_ms is None else int(row.revoked_ms),
    )


def service_acl(role: str) -> list[str]:
    if role == ServiceRole.INGEST:
        return [f"topic read v1/sites/+/devices/+/{channel}" for channel in CHANNELS]
    if role == ServiceRole.RELAY:
        return ["topic write v1/alerts/#"]
    raise CredentialError(f"unknown service role {role!r}")


def device_acl(registry: Registry, device_id: str) -> list[str]:
    """What one device's account may do: its own topics (a gateway's: its whole site's)."""
    device = registry.devices[device_id]
    speaks_for = [device]
    if device.type == GATEWAY_TYPE:
        speaks_for = sorted(registry.devices_at(device.site_id), key=lambda d: d.device_id)
    own = f"v1/sites/{device.site_id}/devices/{device.device_id}"
    lines = [f"topic read {own}/{COMMANDS}"]
    for d in speaks_for:
        lines += [
            f"topic write v1/sites/{d.site_id}/devices/{d.device_id}/{channel}"
            for channel in CHANNELS
        ]
    return lines


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    passwords: str
    acl: str
    accounts: int
    skipped: tuple[str, ...]  # active accounts whose device left the inventory


def broker_files(registry: Registry, accounts: dict[str, tuple[str, str]]) -> BrokerFiles:
    """Mosquitto's password file and ACL for the inventory's devices that hold a credential."""
    passwords: list[str] = []
    acl: list[str] = [
        f"# Generated from inventory {registry.version} by python -m devices credentials.",
        "# Do not edit: regenerate after changing the inventory or a credential.",
        "",
    ]
    skipped: list[str] = []
    for username, (role, password_hash) in sorted(accounts.items()):
        if role == "device":
            if username not in registry.devices:
                skipped.append(username)
                continue
            lines = device_acl(registry, username)
        else:
            lines = service_acl(role)
        passwords.append(f"{username}:{password_hash}")
        acl += [f"user {username}", *lines, ""]
    return BrokerFiles(
        passwords="\n".join(passwords) + "\n",
        acl="\n".join(acl),
        accounts=len(passwords),
        skipped=tuple(skipped),
    )


def read_credentials(path: Path) -> dict[str, str]:
    """'<user name> <password>' lines; a malformed line is named, never echoed (a secret)."""
    found: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{number}: expected '<device id> <password>'")
        found[parts[0]] = parts[1]
    return found


def write_atomically(path: Path, text: str, mode: int = 0o640) -> None:
    """The broker never reads half a file: write beside it, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def write_broker_files(
    registry: Registry, store: CredentialStore, out_dir: Path
) -> tuple[Path, Path, BrokerFiles]:
    """Write ``passwords`` and ``acl`` into `out_dir`; the broker applies them on reload."""
    files = broker_files(registry, store.active())
    password_path, acl_path = out_dir / "passwords", out_dir / "acl"
    write_atomically(password_path, files.passwords)
    write_atomically(acl_path, files.acl)
    return password_path, acl_path, files


def site_of(registry: Registry, username: str) -> str | None:
    device = registry.devices.get(username)
    return device.site_id if device is not None else None


def devices_without_credentials(registry: Registry, store: CredentialStore) -> Iterable[str]:
    active = store.active()
    return [d for d in sorted(registry.devices) if d not in active]
