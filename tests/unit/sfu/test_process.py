"""The SFU's health loop asks every 2 s whether its process exited: those checks leave nothing
behind (a task per check that lived as long as the SFU grew the agent by 2.6 MiB/h in a soak)."""
from __future__ import annotations

import asyncio
import types

from agent.sfu.process import SfuProcess
from agent.supervise.process import Child


async def test_exit_checks_on_a_running_sfu_leave_no_task_behind():
    child = await Child.spawn(["sleep", "30"], on_stdout=lambda _: None, on_stderr=lambda _: None)
    holder = types.SimpleNamespace(child=child)
    try:
        before = len(asyncio.all_tasks())
        for _ in range(50):
            assert not await SfuProcess._exited_within(holder, 0.001)  # type: ignore[arg-type]
        assert len(asyncio.all_tasks()) == before, "tasks left by 50 checks of a running process"
        child.kill()
        assert await SfuProcess._exited_within(holder, 10)  # type: ignore[arg-type]
        assert await child.wait() == -9
    finally:
        child.kill()
