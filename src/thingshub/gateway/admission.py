"""Waiting out the login rules of core/throttle.py: lanes and penalties, on the event loop.

Rules:
- An attempt that `at_once` allows is judged without waiting and holds
  nothing (it is over within one call). Every other attempt enters its lanes
  in the throttle's order, waits its penalties while holding them, is judged,
  and leaves them, however it ends.
- Nothing blocks: waiting is a future per waiter, handed its place by the
  attempt that leaves before it, or a sleep.
- An attempt cancelled while it waits (the server gave up on its client)
  withdraws from its queue, or passes on a place it was handed: a lane never
  stays taken by someone who is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from thingshub.core.ports import Clock
from thingshub.core.throttle import Lanes, LoginThrottle


class Admission:
    def __init__(self, throttle: LoginThrottle, clock: Clock) -> None:
        self.throttle = throttle
        self.clock = clock

    def at_once(self, address: str, identity: str) -> bool:
        return self.throttle.at_once(address, identity, self.clock.monotonic_ms())

    @asynccontextmanager
    async def admitted(self, address: str, identity: str) -> AsyncIterator[None]:
        """Hold the attempt's lanes, its penalties served, for the time of the block."""
        throttle = self.throttle
        lanes = throttle.lanes
        held: list[str] = []
        served = 0.0
        try:
            for lane in throttle.plan(address, identity, self.clock.monotonic_ms()):
                await _enter(lanes, lane.key, lane.limit)
                held.append(lane.key)
                # Decided once the lane is ours: the failures of those before us count.
                delay = throttle.penalty(lane, address, identity, served, self.clock.monotonic_ms())
                if delay > 0:
                    await asyncio.sleep(delay)
                    served += delay
            yield
        finally:
            for key in reversed(held):
                _leave(lanes, key)


async def _enter(lanes: Lanes[asyncio.Future[None]], key: str, limit: int) -> None:
    if lanes.try_enter(key, limit):
        return
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    lanes.wait(key, waiter)
    try:
        await waiter
    except asyncio.CancelledError:
        if waiter.done() and not waiter.cancelled():
            _leave(lanes, key)  # handed the place just as we were cancelled
        else:
            lanes.withdraw(key, waiter)
        raise


def _leave(lanes: Lanes[asyncio.Future[None]], key: str) -> None:
    while (waiter := lanes.leave(key)) is not None:
        if not waiter.done():
            waiter.set_result(None)
            return
        # Cancelled before its turn came and not yet withdrawn: pass the place on.
