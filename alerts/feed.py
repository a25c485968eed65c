"""Who waits for alert changes, and when to wake them: the newest change's sequence number.

The store's change log is the source of truth, so a follower sees changes made by any process,
in order. One poller per process (`run`, a loop of the supervisor: a database error restarts
it after a back-off) watches the log's newest sequence number and wakes the waiters, rather
than each waiter polling.
"""

from __future__ import annotations

import asyncio
import contextlib

from alerts.store import AlertStore


class ChangeFeed:
    """Knows the newest change's sequence number and wakes whoever waits for a newer one."""

    def __init__(self, store: AlertStore, poll_s: float = 0.25) -> None:
        """Make it on the event loop that will run it."""
        self._loop = asyncio.get_running_loop()
        self._store = store
        self._poll_s = poll_s
        self._seq = 0
        self._changed = asyncio.Condition()
        self._nudged = asyncio.Event()

    @property
    def seq(self) -> int:
        return self._seq

    def nudge(self) -> None:
        """This process just changed something: look now instead of at the next poll.

        Any thread may call it (the alert engine's do): asyncio objects are not thread-safe,
        so the event is set by the loop itself."""
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._nudged.set)

    async def run(self) -> None:
        while True:
            seq = await asyncio.to_thread(self._store.last_seq)
            if seq != self._seq:
                self._seq = seq
                async with self._changed:
                    self._changed.notify_all()
            # Waiting for the next poll, or for a nudge from this process's own writes.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudged.wait(), self._poll_s)
            self._nudged.clear()

    async def wait_beyond(self, seq: int, timeout: float) -> bool:
        """True once a change newer than `seq` exists; False on timeout."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: self._seq > seq), timeout)
            return self._seq > seq
