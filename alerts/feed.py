"""Who waits for alert changes, and when to wake them: the newest change's sequence number.

The store's change log is the source of truth, so a follower sees changes made by any process
or node, in order. One follower per process (`run`, a loop of the supervisor: a database error
restarts it after a back-off) learns the log's newest sequence number and wakes the waiters,
rather than each waiter asking the database:

* on PostgreSQL it LISTENs: every change NOTIFYs its sequence number on `CHANGES_CHANNEL` when its
  transaction commits, so every node's SSE clients hear of a change made on any node at once.
  It still reads the log every `check_s`, which also finds out if the connection has died.
* on SQLite (one node) it polls every `poll_s`, and this process's own writes `nudge` it.
"""

from __future__ import annotations

import asyncio
import contextlib

import psycopg

from alerts.store import AlertStore, DatabaseUnavailable
from alerts.store.db import CHANGES_CHANNEL, listen_conninfo


class ChangeFeed:
    """Knows the newest change's sequence number and wakes whoever waits for a newer one."""

    def __init__(self, store: AlertStore, poll_s: float = 0.25, check_s: float = 5.0) -> None:
        """Make it on the event loop that will run it."""
        self._loop = asyncio.get_running_loop()
        self._store = store
        self._poll_s = poll_s
        self._check_s = check_s
        self._listen = listen_conninfo(store.engine)
        self._seq = 0
        self._changed = asyncio.Condition()
        self._nudged = asyncio.Event()

    @property
    def seq(self) -> int:
        return self._seq

    @property
    def listening(self) -> bool:
        """True on PostgreSQL: changes arrive as notifications, not by polling."""
        return self._listen is not None

    def nudge(self) -> None:
        """This process just changed something: look now instead of at the next poll.

        Any thread may call it (the alert engine's do): asyncio objects are not thread-safe,
        so the event is set by the loop itself."""
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._nudged.set)

    async def run(self) -> None:
        if self._listen is None:
            await self._poll()
        else:
            await self._follow(self._listen)

    async def _poll(self) -> None:
        while True:
            await self._advance(await asyncio.to_thread(self._store.last_seq))
            # Waiting for the next poll, or for a nudge from this process's own writes.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudged.wait(), self._poll_s)
            self._nudged.clear()

    async def _follow(self, conninfo: str) -> None:
        try:
            conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"cannot listen for alert changes: {exc}") from exc
        async with conn:
            try:
                await conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                while True:
                    # Read after LISTEN took effect: nothing committed in between is missed.
                    await self._advance(await asyncio.to_thread(self._store.last_seq))
                    async for notice in conn.notifies(timeout=self._check_s):
                        if notice.payload.isdigit():
                            await self._advance(int(notice.payload))
            except psycopg.Error as exc:
                raise DatabaseUnavailable(f"lost the alert change notifications: {exc}") from exc

    async def _advance(self, seq: int) -> None:
        if seq > self._seq:
            self._seq = seq
            async with self._changed:
                self._changed.notify_all()

    async def wait_beyond(self, seq: int, timeout: float) -> bool:
        """True once a change newer than `seq` exists; False on timeout."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: self._seq > seq), timeout)
            return self._seq > seq
