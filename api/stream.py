"""Server-Sent Events of every alert change, resumable with Last-Event-ID.

The store's change log is the source of truth, so a client sees changes made by any process,
in order, and a reconnecting client resumes where it left off. One poller per process watches
the log's newest sequence number and wakes the clients, rather than each client polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from ingest.alert_relay import change_payload
from ingest.alertstore import AlertStore

KEEPALIVE_S = 15.0
_BATCH = 200


class ChangeFeed:
    """Knows the newest change's sequence number and wakes whoever waits for a newer one."""

    def __init__(self, store: AlertStore, poll_s: float = 0.25) -> None:
        self._store = store
        self._poll_s = poll_s
        self._seq = 0
        self._changed = asyncio.Condition()
        self._nudged = asyncio.Event()

    @property
    def seq(self) -> int:
        return self._seq

    def nudge(self) -> None:
        """This process just changed something: look now instead of at the next poll."""
        self._nudged.set()

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


async def events(
    store: AlertStore,
    feed: ChangeFeed,
    after: int,
    sites: frozenset[str] | None,
) -> AsyncIterator[str]:
    """SSE frames for changes after `after` that the caller may see; keep-alives in between."""
    last = after
    yield "retry: 3000\n\n"
    while True:
        upto = feed.seq
        changes = await asyncio.to_thread(store.changes_since, last, sites, _BATCH)
        for change in changes:
            data = json.dumps(change_payload(change), ensure_ascii=False)
            yield f"id: {change.seq}\nevent: {change.action}\ndata: {data}\n\n"
            last = change.seq
        if len(changes) == _BATCH:
            continue
        # Nothing more for this caller up to `upto`: changes of other sites are skipped too.
        last = max(last, upto)
        if not await feed.wait_beyond(last, KEEPALIVE_S):
            yield ": keep-alive\n\n"
