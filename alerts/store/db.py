"""Engines and transactions: SQLite (one file, embedded) by default, PostgreSQL by URL.

One SQLAlchemy Core code path serves both. What differs is kept here:

* SQLite: WAL (readers do not block the writer), a busy timeout, foreign keys on. The sqlite3
  driver's own implicit BEGIN is switched off and SQLAlchemy emits ours, so that write
  transactions start with ``BEGIN IMMEDIATE``: a deferred transaction that reads first and
  writes later can fail with SQLITE_BUSY without waiting, IMMEDIATE takes the write lock up
  front and waits its turn for up to the busy timeout.
* PostgreSQL: ``postgresql://`` URLs get the psycopg 3 driver; pooled connections are pinged
  so that a server restart costs one failed check, not one failed request.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, cast

from sqlalchemy import Connection, Engine, Table, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError

from alerts.store.records import DatabaseUnavailable
from config.redact import redact

_WRITE: Final = "mingliang_write"

# Arbitrary constants naming PostgreSQL advisory locks ("MLCL", "MLSC").
CHANGELOG_LOCK: Final = 0x4D4C_434C
SCHEMA_LOCK: Final = 0x4D4C_5343

# NOTIFY channel on which each alert change's sequence number is sent when it commits.
CHANGES_CHANNEL: Final = "mingliang_alert_changes"

POOL_SIZE: Final = 10
MAX_OVERFLOW: Final = 20

Clock = Callable[[], int]  # epoch milliseconds; injectable so tests control time


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def make_engine(url: str, *, busy_timeout_ms: int = 10_000) -> Engine:
    """An engine for `url`: ``sqlite:////abs/path.db`` or ``postgresql+psycopg://...``."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"not a database URL: {redact(repr(url))}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if sqlite3.sqlite_version_info < (3, 35, 0):
            # Upsert (3.24) and RETURNING (3.35) are how raising stays one atomic statement.
            raise RuntimeError(f"SQLite {sqlite3.sqlite_version} is too old: need 3.35 or later")
        if parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory":
            # Every pooled connection would open its own, empty, in-memory database.
            raise ValueError("the alert store needs a SQLite file, not an in-memory database")
        # The data folder of a fresh installation does not exist yet.
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            pool_size=POOL_SIZE,
            max_overflow=MAX_OVERFLOW,
            connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
        )
        event.listen(
            engine, "connect", functools.partial(_sqlite_connect, busy_timeout_ms=busy_timeout_ms)
        )
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if backend == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(
            parsed, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW, pool_pre_ping=True
        )
    raise ValueError(f"unsupported database {backend!r}: use sqlite:/// or postgresql+psycopg://")


def _sqlite_connect(dbapi_connection: Any, _record: Any, *, busy_timeout_ms: int) -> None:
    conn = cast(sqlite3.Connection, dbapi_connection)
    conn.isolation_level = None  # we emit BEGIN ourselves (see _sqlite_begin)
    cursor = conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


@contextmanager
def transaction(engine: Engine, *, write: bool) -> Iterator[Connection]:
    """One transaction; committed if the block ends normally, rolled back otherwise.

    Lost connections and lock timeouts become DatabaseUnavailable, so callers (the API answers
    503) need not know SQLAlchemy's exceptions.
    """
    try:
        with engine.connect() as conn:
            if write:
                conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable(f"the database did not answer: {redact(str(exc.orig))}") from exc


def upsert(engine: Engine, table: Table) -> sqlite.Insert | postgresql.Insert:
    """The dialect's INSERT, the one that has ``on_conflict_do_update``."""
    return postgresql.insert(table) if is_postgresql(engine) else sqlite.insert(table)


def libpq_conninfo(url: URL) -> str:
    """A PostgreSQL SQLAlchemy URL as libpq takes it, for connections of our own (LISTEN,
    session advisory locks) outside the pool."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def listen_conninfo(engine: Engine) -> str | None:
    """Where to LISTEN for `CHANGES_CHANNEL`; None on SQLite, which has no notifications."""
    return libpq_conninfo(engine.url) if engine.dialect.name == "postgresql" else None


def notify_change(conn: Connection, seq: int) -> None:
    """PostgreSQL only: tell every listening node of change `seq` once this transaction commits."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_notify(CHANGES_CHANNEL, str(seq))))


def advisory_lock(conn: Connection, key: int) -> None:
    """PostgreSQL only: a lock held until the transaction ends (SQLite serialises writers)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(key)))
