"""Claims with the locks in a dict: a key starts only under its lock, and its lock goes only
after it has stopped."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from cluster.claims import Claim, Lock, Unlock


class Locks:
    """PostgreSQL's advisory locks, as far as claims see them: who holds which key."""

    def __init__(self) -> None:
        self.holder: dict[str, str] = {}

    def of(self, node: str) -> tuple[Lock, Unlock]:
        async def lock(key: str) -> bool:
            return self.holder.setdefault(key, node) == node

        async def unlock(key: str) -> None:
            assert self.holder.pop(key) == node

        return lock, unlock


class Work:
    def __init__(self) -> None:
        self.running: set[str] = set()
        self.log: list[str] = []
        self.release = threading.Event()  # stops wait for this, like a drain would
        self.release.set()

    def start(self, key: str) -> None:
        self.running.add(key)
        self.log.append(f"start {key}")

    def stop(self, key: str) -> None:
        assert self.release.wait(10)
        self.running.discard(key)
        self.log.append(f"stop {key}")


def owns(keys: set[str]) -> Callable[[str], bool]:
    return lambda owner_key: owner_key.split(":")[1] in keys


async def beat(claim: Claim, mine: set[str], locks: tuple[Lock, Unlock]) -> None:
    await claim.reconcile(owns(mine), *locks)


async def settle(claim: Claim, mine: set[str], locks: tuple[Lock, Unlock]) -> None:
    """Heartbeats until nothing is starting or stopping."""
    for _ in range(500):
        await beat(claim, mine, locks)
        if not claim.busy:
            await beat(claim, mine, locks)  # the one that takes what finished into account
            if not claim.busy:
                return
        await asyncio.sleep(0.01)  # the next heartbeat, while the threads work
    raise AssertionError("claims did not settle")


def test_a_key_moves_only_after_its_old_holder_stopped() -> None:
    async def scenario() -> None:
        locks = Locks()
        keys = ["0", "1", "2", "3"]
        a_work, b_work = Work(), Work()
        a = Claim("partition", keys, a_work.start, a_work.stop)
        b = Claim("partition", keys, b_work.start, b_work.stop)
        await settle(a, {"0", "1", "2", "3"}, locks.of("a"))  # a alone: everything
        assert a_work.running == {"0", "1", "2", "3"} and a.running == a_work.running

        # b joins and should own 2 and 3; a is slow to stop them.
        a_work.release.clear()
        await beat(b, {"2", "3"}, locks.of("b"))
        await beat(a, {"0", "1"}, locks.of("a"))
        await beat(b, {"2", "3"}, locks.of("b"))
        assert b_work.running == set(), "b must not start what a still holds"
        assert locks.holder["2"] == "a" and a.busy
        a_work.release.set()
        await settle(a, {"0", "1"}, locks.of("a"))
        await settle(b, {"2", "3"}, locks.of("b"))
        assert a_work.running == {"0", "1"} and b_work.running == {"2", "3"}
        assert sorted(a_work.log[4:]) == ["stop 2", "stop 3"]
        assert locks.holder == {"0": "a", "1": "a", "2": "b", "3": "b"}

    asyncio.run(scenario())


def test_a_node_cut_off_stops_what_another_took_meanwhile() -> None:
    async def scenario() -> None:
        locks = Locks()
        work = Work()
        a = Claim("partition", ["0", "1"], work.start, work.stop)
        await settle(a, {"0", "1"}, locks.of("a"))
        # a's connection dies: PostgreSQL frees its locks, and b takes key 1 meanwhile.
        a.lost_locks()
        locks.holder.clear()
        locks.holder["1"] = "b"
        await settle(a, {"0", "1"}, locks.of("a"))
        assert work.running == {"0"} and locks.holder == {"0": "a", "1": "b"}

    asyncio.run(scenario())


def test_a_start_that_fails_lets_the_lock_go_and_is_tried_again() -> None:
    async def scenario() -> None:
        locks = Locks()
        attempts: list[str] = []

        def start(key: str) -> None:
            attempts.append(key)
            if len(attempts) == 1:
                raise ConnectionError("database away")

        claim = Claim("partition", ["0"], start, lambda key: None)
        await settle(claim, {"0"}, locks.of("a"))
        assert attempts == ["0", "0"] and claim.running == {"0"} and locks.holder == {"0": "a"}

    asyncio.run(scenario())
