"""Stopping a background loop (`services/background.py`): nothing of it runs once
`cancel` has returned, and a loop that already ended, or none, is no error.
A loop's retries: an outage of the database is a warning as it starts and as
it ends, never an error per try; other failures are errors."""

from __future__ import annotations

import asyncio
import logging

import pytest

from thingshub.core.errors import StorageUnreachable
from thingshub.services.background import Retries, cancel


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


log = logging.getLogger("thingshub.test_retries")


def _fail(retries: Retries, exc: Exception) -> None:
    try:
        raise exc
    except Exception as caught:
        retries.failed(caught)


def test_an_outage_is_one_warning_as_it_starts_and_one_as_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    retries = Retries(log, "recording presence")
    with caplog.at_level(logging.INFO, "thingshub"):
        retries.succeeded()  # nothing to report while the database is there
        for _ in range(5):
            _fail(retries, StorageUnreachable("the SQLite database is full"))
        assert retries.away
        retries.succeeded()
        retries.succeeded()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "recording presence waits for the database: the SQLite database is full"),
        ("WARNING", "recording presence goes on: the database is back"),
    ]
    assert not retries.away


@pytest.mark.allow_logged_errors  # a failure that is not an outage is an error: the point
def test_another_failure_is_an_error_each_time(caplog: pytest.LogCaptureFixture) -> None:
    retries = Retries(log, "recording presence")
    with caplog.at_level(logging.INFO, "thingshub"):
        _fail(retries, ValueError("a bug"))
        _fail(retries, ValueError("a bug"))
    assert [r.levelname for r in caplog.records] == ["ERROR", "ERROR"]
    assert not retries.away
