"""PostgreSQL for the tests: a server of their own, on a free loopback port in a temporary folder.

    postgres_server()                 # a running server (simulators.local_services.Postgres)
    temporary_database(server)        # a fresh database in it, dropped afterwards

The conftest starts one server for the session; the fault tests start their own, to stop it.
Nothing depends on a PostgreSQL the machine may or may not run; the Debian package
`postgresql` provides the binaries (`./mingliang test` installs it).
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from simulators.local_services import Postgres


@contextlib.contextmanager
def postgres_server(workdir: Path | None = None) -> Iterator[Postgres]:
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        server = Postgres(workdir)
        stack.callback(server.remove)
        server.start()
        yield server


def _admin(server: Postgres) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=server.host, port=server.port, user="postgres", dbname="postgres", autocommit=True
    )


def url_for(server: Postgres, database: str) -> str:
    return f"postgresql+psycopg://postgres@{server.host}:{server.port}/{database}"


@contextlib.contextmanager
def temporary_database(server: Postgres, prefix: str = "mingliang_test") -> Iterator[str]:
    """Create a fresh database, yield its SQLAlchemy URL, drop it (connections and all)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with _admin(server) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield url_for(server, name)
    finally:
        if server.running:
            with _admin(server) as admin:
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
