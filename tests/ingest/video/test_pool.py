"""The camera pool keeps its worker processes running under the supervisor, whatever stops them."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from config.settings import load_settings
from ingest.video import pool as pool_module
from ingest.video.pool import CameraPool
from service.supervisor import Supervisor
from tests.conftest import INVENTORY


async def until_ready(pool: CameraPool, old_pid: int, timeout: float) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        pid = pool.pids().get(0)
        if pid is not None and pid != old_pid and pool.workers[0].ready.is_set():
            return pid
        await asyncio.sleep(0.05)  # polling the pool's state
    raise AssertionError(f"worker 0 was not back within {timeout} s")


def test_a_worker_is_restarted_after_an_unexpected_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A restart that fails in a way nobody planned for (here the process table is full) is a
    failure like any other: the supervisor tries again after its back-off."""
    settings = load_settings({}, cameras={"workers": 1}).cameras
    supervisor = Supervisor(initial_s=0.2, max_s=1.0)
    real_exec = asyncio.create_subprocess_exec
    failures = {"left": 0}

    async def flaky_exec(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        if failures["left"]:
            failures["left"] -= 1
            raise BlockingIOError(11, "Resource temporarily unavailable (fork)")
        return await real_exec(*args, **kwargs)

    monkeypatch.setattr(pool_module.asyncio, "create_subprocess_exec", flaky_exec)

    async def scenario() -> None:
        async with CameraPool(settings, INVENTORY, streams=[], supervisor=supervisor) as pool:
            first = pool.pids()[0]
            failures["left"] = 2
            os.kill(first, signal.SIGKILL)
            second = await until_ready(pool, first, 60)
            (status,) = supervisor.statuses()
            # The exit, then two failed starts: each a failure of the same loop.
            assert status.failures >= 3, status
            assert failures["left"] == 0
            stats, down = await pool.stats()
            assert down == [] and stats[0].pid == second

    asyncio.run(asyncio.wait_for(scenario(), 120))
