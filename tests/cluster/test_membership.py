"""Membership on a real PostgreSQL: nodes see each other, and see a node go when its process is
killed or hangs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from cluster.membership import ClusterError, Member, Membership, NodeIdInUse, conninfo
from tests.pg import reset_database
from tests.support import ROOT, in_background

HEARTBEAT_S = 0.2


@pytest.fixture
def url(postgres_url: str) -> str:
    reset_database(postgres_url)
    return postgres_url


def member(name: str) -> Member:
    return Member(name, f"http://127.0.0.1/{name}")


def running(membership: Membership) -> contextlib.AbstractAsyncContextManager[asyncio.Task[None]]:
    return in_background(membership.run(), ClusterError)


def names(membership: Membership) -> list[str]:
    return [m.node_id for m in membership.members]


@contextlib.contextmanager
def node_process(url: str, node_id: str, dead_after_s: float) -> Iterator[subprocess.Popen[str]]:
    """A node in a process of its own, which prints `joined` once it holds its seat."""
    script = textwrap.dedent(
        f"""
        import asyncio
        from cluster.membership import Member, Membership

        async def main():
            node = Membership(Member({node_id!r}, "http://elsewhere"), {url!r},
                              heartbeat_s={HEARTBEAT_S}, dead_after_s={dead_after_s})
            task = asyncio.create_task(node.run())
            assert await node.wait_for(lambda members: len(members) >= 1 and node.joined, 30)
            print("joined", flush=True)
            await task

        asyncio.run(main())
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "joined"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_two_nodes_see_each_other_and_agree_on_owners(url: str) -> None:
    async def scenario() -> None:
        metrics = CollectorRegistry()
        a = Membership(member("node-a"), url, heartbeat_s=HEARTBEAT_S, metrics=metrics)
        b = Membership(member("node-b"), url, heartbeat_s=HEARTBEAT_S)
        seen: list[list[str]] = []
        a.add_listener(lambda members: seen.append([m.node_id for m in members]))
        async with running(a), running(b):
            for node in (a, b):
                assert await node.wait_for(lambda members: len(members) == 2, 10), names(node)
            assert a.members == b.members == (member("node-a"), member("node-b"))
            keys = [f"cam-{i}" for i in range(100)]
            assert [a.owner(k) for k in keys] == [b.owner(k) for k in keys]
            mine = [k for k in keys if a.mine(k)]
            assert 20 < len(mine) < 80 and not any(b.mine(k) for k in mine)
            assert metrics.get_sample_value("mingliang_cluster_members") == 2
            assert metrics.get_sample_value("mingliang_cluster_joined") == 1
        assert ["node-a", "node-b"] in seen and seen[-1] == ["node-a"]
        # Cut off, a node counts itself alone: it keeps working rather than refusing work.
        assert a.members == (member("node-a"),) and a.mine("cam-1")
        assert metrics.get_sample_value("mingliang_cluster_joined") == 0

    asyncio.run(scenario())


def test_a_node_id_in_use_is_refused(url: str) -> None:
    async def scenario() -> None:
        a = Membership(member("node-a"), url, heartbeat_s=HEARTBEAT_S)
        async with running(a):
            assert await a.wait_for(lambda members: a.joined, 10)
            twin = Membership(member("node-a"), url, heartbeat_s=HEARTBEAT_S)
            with pytest.raises(NodeIdInUse, match="node id 'node-a' is held by another"):
                await twin.run()
            assert a.joined and names(a) == ["node-a"]

    asyncio.run(scenario())


@pytest.mark.parametrize("how", ["killed", "hung"])
def test_a_node_that_dies_or_hangs_leaves_the_members(url: str, how: str) -> None:
    dead_after_s = 1.5

    async def scenario() -> None:
        b = Membership(member("node-b"), url, heartbeat_s=HEARTBEAT_S, dead_after_s=dead_after_s)
        async with running(b):
            with node_process(url, "node-a", dead_after_s) as proc:
                assert await b.wait_for(lambda members: len(members) == 2, 10), names(b)
                assert b.owner("anything").node_id in ("node-a", "node-b")
                if how == "killed":
                    proc.kill()
                else:  # the process is alive but does nothing: its session times out
                    os.kill(proc.pid, signal.SIGSTOP)
                # Killed: at once; hung: after dead_after_s and a heartbeat.
                gone = await b.wait_for(lambda members: names_of(members) == ["node-b"], 10)
                assert gone, names(b)
                assert all(b.mine(f"cam-{i}") for i in range(50))

    asyncio.run(scenario())


def names_of(members: tuple[Member, ...]) -> list[str]:
    return [m.node_id for m in members]


def test_a_node_alone_owns_everything_and_sqlite_cannot_hold_a_cluster(tmp_path: Any) -> None:
    alone = Membership(member("solo"), None)
    assert alone.joined and alone.members == (member("solo"),) and alone.mine("x")
    asyncio.run(alone.run())  # nothing to run
    with pytest.raises(ClusterError, match="several nodes need a PostgreSQL alert store"):
        conninfo(f"sqlite:///{tmp_path / 'alerts.db'}")
