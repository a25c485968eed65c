"""The audit trail: who changed what, when, and from where.

Every change to an alert, an API or camera token, a console session or a device credential
is an entry of the ``audit_log`` table in the alert store's database; administrators read it
with ``GET /api/v1/audit`` (api/audit.py). Alert changes are written by the alert store in the
change's own transaction (alerts/store/store.py), tokens by devices/tokens.py, sessions by
devices/sessions.py. Anything else records its changes with:

    AuditLog(engine).record(
        actor="cli:alice@ops-1",             # who: a token's name, rule:<rule>, cli_actor()
        action="credential.created",         # <target kind>.<what happened to it>
        target_kind="credential",            # alert, token, camera_token, session, credential
        target_id="kitchen-0001-fridge-1",   # which one, as people name it
        site_id="kitchen-0001",              # the site it belongs to, or None
        source="cli:alice@ops-1",            # from where: client address, "rules", cli_actor()
        details={"method": "password"},      # a few JSON values: never a secret nor a hash
        conn=None,                           # an open Connection: written in its transaction
    )                                        # -> the entry's id

``engine`` is the alert store's (``AlertStore(url).engine``) or a URL; ``AuditLog.create_schema``
makes the table where AlertStore.create_schema has not (it does). A command-line tool has no
other identity than its operating-system user on its host: it passes ``cli_actor()`` as both
actor and source. Pass ``conn`` whenever the change itself is written in a transaction, so
that the change and its entry are committed together or not at all.

Entries are only ever added; their ids order the trail (newest first when read).
"""

from __future__ import annotations

import base64
import binascii
import builtins
import getpass
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import ColumnElement, Connection, Engine, Row, insert, select

from alerts.store.db import SCHEMA_LOCK, Clock, advisory_lock, make_engine, now_ms, transaction
from alerts.store.schema import audit_log
from config.redact import is_secret_key

MAX_PAGE: Final = 500
MAX_NAME: Final = 500  # characters of an actor, action, target, site or source
MAX_DETAILS_BYTES: Final = 4096
# The shapes of this project's secrets (devices/tokens.py, devices/sessions.py): a value that
# starts like one is refused, whatever its key is called.
_SECRET_PREFIXES: Final = ("mlt_", "mlc_", "mls_")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at_ms: int
    actor: str
    action: str
    target_kind: str
    target_id: str
    site_id: str | None
    source: str | None
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Entries matching every field that is set; times in epoch ms, `until_ms` exclusive."""

    actor: str | None = None
    action: str | None = None
    target_kind: str | None = None
    target_id: str | None = None
    site_id: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None


@dataclass(frozen=True, slots=True)
class AuditPage:
    items: list[AuditEntry]
    next_cursor: str | None  # pass as `cursor` for the next, older page


def cli_actor() -> str:
    """``cli:<os user>@<host>``: who runs a command-line tool, and where."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user without a name
        user = f"uid{os.getuid()}"
    return f"cli:{user}@{socket.gethostname()}"


def _name(what: str, value: str) -> str:
    if not value or not value.strip():
        raise ValueError(f"an audit entry needs its {what}")
    if len(value) > MAX_NAME:
        raise ValueError(f"the audit entry's {what} is longer than {MAX_NAME} characters")
    return value


def checked_details(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """`details` as stored: JSON, small, without anything that looks like a secret."""
    out = dict(details or {})
    for key, value in out.items():
        if is_secret_key(key) or key.lower().endswith("hash"):
            raise ValueError(f"audit details must not hold secrets or hashes: {key!r}")
        if isinstance(value, str) and value.startswith(_SECRET_PREFIXES):
            raise ValueError(f"audit details must not hold secrets: the value of {key!r}")
    size = len(json.dumps(out, ensure_ascii=False).encode())
    if size > MAX_DETAILS_BYTES:
        raise ValueError(f"audit details are {size} bytes; at most {MAX_DETAILS_BYTES}")
    return out


def encode_cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"audit:{entry_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id of the last entry of the previous page; ValueError if malformed."""
    bad = ValueError(f"bad cursor {cursor[:40]!r}: pass next_cursor of a page")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        prefix, _, ident = raw.partition(":")
        entry_id = int(ident)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise bad from exc
    # Ids are 64-bit: a larger number is no id of ours, and no database would take it.
    if prefix != "audit" or not 1 <= entry_id < 2**63 or encode_cursor(entry_id) != cursor:
        raise bad
    return entry_id


class AuditLog:
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
            create_table(conn)

    def record(
        self,
        *,
        actor: str,
        action: str,
        target_kind: str,
        target_id: str,
        site_id: str | None = None,
        source: str | None = None,
        details: Mapping[str, Any] | None = None,
        conn: Connection | None = None,
    ) -> int:
        """Add an entry (see the module's docstring); its id. With `conn`, in that
        connection's transaction; else in one of its own. ValueError for an empty or overlong
        name, or details that are too big or look like a secret."""
        stmt = (
            insert(audit_log)
            .values(
                at_ms=self._clock(),
                actor=_name("actor", actor),
                action=_name("action", action),
                target_kind=_name("target kind", target_kind),
                target_id=_name("target id", target_id),
                site_id=None if site_id is None else _name("site", site_id),
                source=None if source is None else _name("source", source),
                details=checked_details(details),
            )
            .returning(audit_log.c.id)
        )
        if conn is not None:
            return int(conn.execute(stmt).scalar_one())
        with transaction(self._engine, write=True) as own:
            return int(own.execute(stmt).scalar_one())

    def list(
        self, flt: AuditFilter | None = None, cursor: str | None = None, limit: int = 50
    ) -> AuditPage:
        """Entries matching `flt`, newest first, one page at a time. A malformed `cursor` or
        a `limit` out of 1..MAX_PAGE raises ValueError."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
        conditions = _conditions(flt or AuditFilter())
        if cursor is not None:
            conditions.append(audit_log.c.id < decode_cursor(cursor))
        query = (
            select(audit_log).where(*conditions).order_by(audit_log.c.id.desc()).limit(limit + 1)
        )
        with transaction(self._engine, write=False) as conn:
            items = [_entry(row) for row in conn.execute(query)]
        if len(items) <= limit:
            return AuditPage(items, None)
        return AuditPage(items[:limit], encode_cursor(items[limit - 1].id))


def create_table(conn: Connection) -> None:
    """Make the table and its indexes if missing (the caller holds the schema lock)."""
    audit_log.metadata.create_all(conn, tables=[audit_log], checkfirst=True)


def _conditions(flt: AuditFilter) -> builtins.list[ColumnElement[bool]]:
    out: builtins.list[ColumnElement[bool]] = []
    for column, value in (
        (audit_log.c.actor, flt.actor),
        (audit_log.c.action, flt.action),
        (audit_log.c.target_kind, flt.target_kind),
        (audit_log.c.target_id, flt.target_id),
        (audit_log.c.site_id, flt.site_id),
    ):
        if value is not None:
            out.append(column == value)
    if flt.since_ms is not None:
        out.append(audit_log.c.at_ms >= flt.since_ms)
    if flt.until_ms is not None:
        out.append(audit_log.c.at_ms < flt.until_ms)
    return out


def _entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        id=int(row.id),
        at_ms=int(row.at_ms),
        actor=row.actor,
        action=row.action,
        target_kind=row.target_kind,
        target_id=row.target_id,
        site_id=row.site_id,
        source=row.source,
        details=dict(row.details),
    )
