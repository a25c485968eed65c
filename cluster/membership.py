"""A node's seat in the cluster, and the live members as PostgreSQL sees them.

    Exception
    └── ClusterError              everything raised on purpose
        ├── NodeIdInUse           another running node holds this node id
        └── ClusterUnavailable    PostgreSQL unreachable, or our session was ended

A node is alive while it holds its advisory lock, which lives on a connection of its own:

* a node that exits or is killed closes that connection, and PostgreSQL releases the lock at
  once;
* a machine that vanishes is noticed by TCP keepalives, which are set on the session;
* a node whose process hangs stops sending heartbeats, and `idle_session_timeout` ends its
  session after `dead_after_s`.

Every `heartbeat_s` the node lists the members whose locks are held (`pg_locks`). That query
is also its heartbeat. Ownership of anything (a camera, a share of the sites, the relay) is
`rendezvous.owner(key, members)`: every node computes the same answer from the same members.
Until the node has joined, and while it is cut off, it counts itself the only member. It keeps
working alone rather than refusing work; the others take its keys once its lock is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy.engine import make_url

from alerts.store.db import SCHEMA_LOCK, libpq_conninfo
from cluster import rendezvous
from cluster.claims import Claim

log = logging.getLogger(__name__)

# Arbitrary constants naming the advisory locks of cluster seats ("MLND") and claims ("MLCM").
SEAT_LOCKS: Final = 0x4D4C_4E44
CLAIM_LOCKS: Final = 0x4D4C_434D

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS cluster_nodes (
    node_id   text PRIMARY KEY,
    seat      integer NOT NULL UNIQUE,
    api_url   text NOT NULL,
    joined_at timestamptz NOT NULL,
    seen_at   timestamptz NOT NULL
)
"""
_LIVE: Final = """
SELECT n.node_id, n.api_url FROM cluster_nodes n
WHERE EXISTS (
    SELECT 1 FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid = %(seats)s::oid AND l.objid = n.seat::oid
)
ORDER BY n.node_id
"""


class ClusterError(Exception):
    """The message says what is wrong and what to do."""


class NodeIdInUse(ClusterError):
    pass


class ClusterUnavailable(ClusterError):
    pass


@dataclass(frozen=True, slots=True, order=True)
class Member:
    node_id: str
    api_url: str


# The claim of cameras pulled over RTSP; its keys are camera ids (claims.Claim.owner_key).
CAMERA_CLAIM: Final = "camera"


def camera_key(camera_id: str) -> str:
    """What a camera's owner is taken over: its media goes to one node (api/video.py). The
    same key the claim of pulled cameras uses, so the node that pulls a camera over RTSP is
    the one requests for it are sent to."""
    return f"{CAMERA_CLAIM}:{camera_id}"


def seat_of(node_id: str) -> int:
    """The node's advisory lock key: a stable non-negative 31-bit number from its id."""
    return _lock_number(node_id)


def _lock_number(name: str) -> int:
    digest = hashlib.blake2b(name.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF


def conninfo(store_url: str) -> str:
    """A libpq connection string from the store's SQLAlchemy URL."""
    url = make_url(store_url)
    if url.get_backend_name() != "postgresql":
        raise ClusterError(
            f"several nodes need a PostgreSQL alert store (alerts.store_url), not {url.drivername}"
        )
    return libpq_conninfo(url)


class Membership:
    """This node's view of the cluster: `members`, `owner(key)`, `mine(key)`."""

    def __init__(
        self,
        me: Member,
        store_url: str | None,
        *,
        heartbeat_s: float = 2.0,
        dead_after_s: float = 10.0,
        metrics: CollectorRegistry | None = None,
    ) -> None:
        """`store_url=None`: a node alone, which owns everything and runs no loop."""
        if store_url is not None and not heartbeat_s < dead_after_s:
            raise ValueError(f"heartbeat_s {heartbeat_s} must be less than dead_after_s")
        self.me = me
        self._conninfo = conninfo(store_url) if store_url is not None else None
        self._heartbeat_s = heartbeat_s
        self._dead_after_s = dead_after_s
        self._members: tuple[Member, ...] = (me,)
        self._joined = False
        self._listeners: list[Callable[[tuple[Member, ...]], None]] = []
        self._claims: list[Claim] = []
        self._claiming = True
        self._changed = asyncio.Event()
        self._gauges: tuple[Gauge, Gauge] | None = None
        if metrics is not None:
            self._gauges = (
                Gauge(
                    "mingliang_cluster_members",
                    "Live nodes of the cluster, as this node last saw them.",
                    registry=metrics,
                ),
                Gauge(
                    "mingliang_cluster_joined",
                    "1 while this node holds its seat in PostgreSQL (always 1 for a node alone).",
                    registry=metrics,
                ),
            )
            self._gauges[0].set(1)
            self._gauges[1].set(0 if self.clustered else 1)

    @property
    def clustered(self) -> bool:
        return self._conninfo is not None

    @property
    def joined(self) -> bool:
        return self._joined or not self.clustered

    @property
    def members(self) -> tuple[Member, ...]:
        return self._members

    def owner(self, key: str) -> Member:
        names = {member.node_id: member for member in self._members}
        return names[str(rendezvous.owner(key, names))]

    def mine(self, key: str) -> bool:
        return self.owner(key) == self.me

    def add_listener(self, listener: Callable[[tuple[Member, ...]], None]) -> None:
        """Called on the event loop with the members whenever they, or `joined`, change."""
        self._listeners.append(listener)

    def claim(self, claim: Claim) -> None:
        """Run `claim`'s keys this node owns, one node at a time (cluster/claims.py), from the
        membership loop's heartbeats; call before `run`."""
        self._claims.append(claim)

    def stop_claiming(self) -> None:
        """The node is stopping: start and stop nothing more. What it runs is stopped by its
        owners (ingest closes its partitions), and its locks go with its seat."""
        self._claiming = False

    async def wait_for(
        self, predicate: Callable[[tuple[Member, ...]], bool], timeout: float
    ) -> bool:
        """True once `predicate(members)` holds; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed = self._changed  # taken before looking, so no change is missed
            if predicate(self._members):
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    async def run(self) -> None:
        """Join, then heartbeat until cancelled; a lost connection raises ClusterUnavailable
        (the supervisor restarts the loop, which joins again). A node alone returns at once."""
        if self._conninfo is None:
            return
        conn = await asyncio.to_thread(self._join)

        async def lock(claim: Claim, key: str) -> bool:
            return await asyncio.to_thread(self._lock, conn, claim.owner_key(key), True)

        async def unlock(claim: Claim, key: str) -> None:
            await asyncio.to_thread(self._lock, conn, claim.owner_key(key), False)

        try:
            while True:
                members = await asyncio.to_thread(self._live, conn)
                self._set_members(members, joined=True)
                for claim in self._claims if self._claiming else ():
                    await claim.reconcile(
                        self.mine,
                        functools.partial(lock, claim),
                        functools.partial(unlock, claim),
                    )
                await asyncio.sleep(self._heartbeat_s)
        finally:
            for claim in self._claims:
                claim.lost_locks()
            log.info("node %s is out of the cluster (stopping, or lost its seat)", self.me.node_id)
            self._set_members((self.me,), joined=False, quiet=True)
            await asyncio.to_thread(conn.close)

    def _join(self) -> psycopg.Connection[Any]:
        assert self._conninfo is not None
        seat = seat_of(self.me.node_id)
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise ClusterUnavailable(f"cannot reach the alert store's PostgreSQL: {exc}") from exc
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                conn.execute(_SCHEMA)
            held = conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (SEAT_LOCKS, seat)
            ).fetchone()
            if not held or not held[0]:
                raise NodeIdInUse(
                    f"node id {self.me.node_id!r} is held by another running node: give each "
                    "node its own cluster.node_id"
                )
            idle_ms = round(self._dead_after_s * 1000)
            keepalive_s = max(1, round(self._dead_after_s / 3))
            conn.execute(f"SET idle_session_timeout = {idle_ms}")
            conn.execute(f"SET tcp_keepalives_idle = {keepalive_s}")
            conn.execute(f"SET tcp_keepalives_interval = {keepalive_s}")
            conn.execute("SET tcp_keepalives_count = 3")
            other = conn.execute(
                "SELECT node_id FROM cluster_nodes WHERE seat = %s AND node_id <> %s",
                (seat, self.me.node_id),
            ).fetchone()
            if other is not None:
                raise NodeIdInUse(
                    f"node ids {self.me.node_id!r} and {other[0]!r} share seat {seat}: "
                    "rename one of them"
                )
            conn.execute(
                "INSERT INTO cluster_nodes (node_id, seat, api_url, joined_at, seen_at) "
                "VALUES (%s, %s, %s, now(), now()) ON CONFLICT (node_id) DO UPDATE SET "
                "seat = EXCLUDED.seat, api_url = EXCLUDED.api_url, joined_at = now(), "
                "seen_at = now()",
                (self.me.node_id, seat, self.me.api_url),
            )
        except BaseException as exc:
            conn.close()
            if isinstance(exc, psycopg.Error):
                raise ClusterUnavailable(f"joining the cluster failed: {exc}") from exc
            raise
        log.info("node %s joined the cluster (seat %d)", self.me.node_id, seat)
        return conn

    def _live(self, conn: psycopg.Connection[Any]) -> tuple[Member, ...]:
        try:
            conn.execute(
                "UPDATE cluster_nodes SET seen_at = now() WHERE node_id = %s", (self.me.node_id,)
            )
            rows = conn.execute(_LIVE, {"seats": SEAT_LOCKS}).fetchall()
        except psycopg.Error as exc:
            raise ClusterUnavailable(
                f"lost the cluster seat of node {self.me.node_id!r}: {exc}"
            ) from exc
        members = tuple(Member(str(node_id), str(url)) for node_id, url in rows)
        if self.me not in members:  # our row changed under us: another node with our id
            raise ClusterUnavailable(f"node {self.me.node_id!r} is not among the live members")
        return members

    def _lock(self, conn: psycopg.Connection[Any], name: str, take: bool) -> bool:
        function = "pg_try_advisory_lock" if take else "pg_advisory_unlock"
        try:
            row = conn.execute(
                f"SELECT {function}(%s, %s)", (CLAIM_LOCKS, _lock_number(name))
            ).fetchone()
        except psycopg.Error as exc:
            raise ClusterUnavailable(f"lost the cluster seat while claiming {name}: {exc}") from exc
        return bool(row and row[0])

    def _set_members(
        self, members: tuple[Member, ...], joined: bool, *, quiet: bool = False
    ) -> None:
        if self._gauges is not None:
            self._gauges[0].set(len(members))
            self._gauges[1].set(1 if joined else 0)
        if members == self._members and joined == self._joined:
            return
        if members != self._members and not quiet:
            gone = sorted(m.node_id for m in set(self._members) - set(members))
            came = sorted(m.node_id for m in set(members) - set(self._members))
            log.info(
                "cluster members now %s (gone: %s, new: %s)",
                [m.node_id for m in members],
                gone or "-",
                came or "-",
            )
        self._members, self._joined = members, joined
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        for listener in self._listeners:
            listener(members)
