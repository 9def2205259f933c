"""Stopping a background loop (`services/background.py`): nothing of it runs once
`cancel` has returned, and a loop that already ended, or none, is no error."""

from __future__ import annotations

import asyncio

from thingshub.services.background import cancel


def test_a_running_loop_has_ended_when_cancel_returns() -> None:
    ticks: list[int] = []

    async def loop() -> None:
        while True:
            ticks.append(1)
            await asyncio.sleep(0)

    async def scenario() -> None:
        task = asyncio.get_running_loop().create_task(loop())
        await asyncio.sleep(0.01)
        await cancel(task)
        assert task.cancelled()
        seen = len(ticks)
        await asyncio.sleep(0.01)
        assert len(ticks) == seen > 0

    asyncio.run(scenario())


def test_an_ended_task_or_none_is_nothing_to_do() -> None:
    async def scenario() -> None:
        async def done() -> int:
            return 1

        task = asyncio.get_running_loop().create_task(done())
        await task
        await cancel(task)
        await cancel(None)
        assert task.result() == 1

    asyncio.run(scenario())
