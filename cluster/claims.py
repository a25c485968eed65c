"""Keys a node runs one at a time across the cluster: partitions of the sites, for ingest.

For each key, the owner among the live members (rendezvous) should run it, but it starts
only once it holds the key's advisory lock, and a node lets the lock go only after its `stop`
has finished. So a partition is never run by two nodes at once: the new owner waits for the
old one to store its progress, or for the old one's death, which frees its locks.

`reconcile` runs on each heartbeat of the membership loop with the connection's lock and
unlock. `start` and `stop` block (connecting, draining, storing progress) and run on threads;
the heartbeat goes on meanwhile. A node cut off from PostgreSQL has lost its locks but keeps
running what it ran: when it is back, a key another node has taken meanwhile is stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger(__name__)

Lock = Callable[[str], Awaitable[bool]]
Unlock = Callable[[str], Awaitable[None]]


class Claim:
    def __init__(
        self,
        name: str,
        keys: Sequence[str],
        start: Callable[[str], None],
        stop: Callable[[str], None],
    ) -> None:
        self.name = name
        self.keys = tuple(keys)
        self._start = start
        self._stop = stop
        self.locked: set[str] = set()
        self.running: set[str] = set()
        self._starting: dict[str, asyncio.Task[None]] = {}
        self._stopping: dict[str, asyncio.Task[None]] = {}

    @property
    def busy(self) -> bool:
        """Something is starting or stopping."""
        return bool(self._starting or self._stopping)

    def owner_key(self, key: str) -> str:
        """What the rendezvous hash is taken over: the claim's name and the key."""
        return f"{self.name}:{key}"

    def lost_locks(self) -> None:
        """The connection that held the locks is gone; PostgreSQL has let them go."""
        self.locked.clear()

    async def reconcile(self, mine: Callable[[str], bool], lock: Lock, unlock: Unlock) -> None:
        await self._finished(unlock)
        busy = self._starting.keys() | self._stopping.keys()
        for key in self.keys:
            if key in busy:
                continue
            if mine(self.owner_key(key)):
                if key in self.locked:
                    continue
                if await lock(key):
                    self.locked.add(key)
                    if key not in self.running:
                        self._starting[key] = self._spawn(self._start, key)
                elif key in self.running:
                    log.warning("%s %s was taken over while we were cut off", self.name, key)
                    self._stopping[key] = self._spawn(self._stop, key)
            elif key in self.running:
                self._stopping[key] = self._spawn(self._stop, key)
            elif key in self.locked:
                await unlock(key)
                self.locked.discard(key)

    async def _finished(self, unlock: Unlock) -> None:
        for key, task in list(self._stopping.items()):
            if not task.done():
                continue
            del self._stopping[key]
            self.running.discard(key)
            if task.exception() is not None:
                log.error("stopping %s %s failed: %r", self.name, key, task.exception())
            if key in self.locked:
                await unlock(key)
                self.locked.discard(key)
        for key, task in list(self._starting.items()):
            if not task.done():
                continue
            del self._starting[key]
            if task.exception() is None:
                self.running.add(key)
                continue
            log.error("starting %s %s failed: %r", self.name, key, task.exception())
            if key in self.locked:  # another node may take it, or we retry on the next beat
                await unlock(key)
                self.locked.discard(key)

    @staticmethod
    def _spawn(work: Callable[[str], None], key: str) -> asyncio.Task[None]:
        return asyncio.create_task(asyncio.to_thread(work, key))
