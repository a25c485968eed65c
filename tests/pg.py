"""A throw-away PostgreSQL database on the local server (127.0.0.1:5432, user postgres, trust).

    postgres_url = postgres_database()        # in a test module: a session-scoped fixture

The fixture creates one database with a unique name for the test session and drops it at the
end. A server that does not answer fails the tests that need it, with a message saying so:
they must not pass by skipping. `temporary_database` is the same thing for scripts (bench/).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

HOST = os.environ.get("MINGLIANG_TEST_PGHOST", "127.0.0.1")
PORT = int(os.environ.get("MINGLIANG_TEST_PGPORT", "5432"))
USER = os.environ.get("MINGLIANG_TEST_PGUSER", "postgres")


class PostgresUnavailable(RuntimeError):
    pass


def _admin() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(
            host=HOST, port=PORT, user=USER, dbname="postgres", autocommit=True, connect_timeout=5
        )
    except psycopg.OperationalError as exc:
        raise PostgresUnavailable(
            f"PostgreSQL at {HOST}:{PORT} (user {USER}) does not answer: {exc}. "
            "These tests need a running server; start it (trust authentication for "
            f"{USER} on 127.0.0.1) or point MINGLIANG_TEST_PGHOST/PGPORT/PGUSER at one."
        ) from exc


def url_for(database: str) -> str:
    return f"postgresql+psycopg://{USER}@{HOST}:{PORT}/{database}"


@contextlib.contextmanager
def temporary_database(prefix: str = "mingliang_test") -> Iterator[str]:
    """Create a fresh database, yield its SQLAlchemy URL, drop it (connections and all)."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with _admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield url_for(name)
    finally:
        with _admin() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def reset_database(url: str) -> None:
    """Empty the database between tests: drop and recreate the public schema."""
    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def postgres_database(prefix: str = "mingliang_test") -> Callable[..., Iterator[str]]:
    """A session-scoped fixture yielding the URL of a fresh database; fails if there is none."""

    @pytest.fixture(scope="session")
    def fixture() -> Iterator[str]:
        problem = None
        try:
            _admin().close()
        except PostgresUnavailable as exc:
            problem = str(exc)
        if problem is not None:  # outside the except: the message alone, no exception chain
            pytest.fail(problem, pytrace=False)
        with temporary_database(prefix) as url:
            yield url

    return fixture
