"""What every device of the SDK shares: its client, its handlers' tasks, replies awaited by id.

Rules:
- Handlers are registered before or after `connect()`; registering one
  subscribes to the topics it needs (at once when connected, else at the
  next connect). A device subscribes only to what it handles, so the
  platform answers calls to what it does not handle at once (HTTP 409)
  instead of letting them time out.
- A handler may be a plain function or a coroutine function. It runs as a
  task of the device's loop, so a slow handler never holds up the
  connection; what it raises becomes the protocol's error answer and is
  logged at WARNING (the device's fault, not the SDK's).
- Replies the device waits for (image, thing model, ThingsPanel responses)
  are matched by their id; a reply nobody waits for is dropped.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self

from thingshub.device.client import DeviceError, MqttClient, NotConnected

log = logging.getLogger("thingshub.device")


async def call(handler: Callable[..., Any], *args: Any) -> Any:
    """A handler's result, awaiting it when it is a coroutine."""
    result = handler(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class Device:
    """A device: a reconnecting MQTT client and the bookkeeping of its calls."""

    def __init__(
        self,
        url: str,
        client_id: str,
        username: str | None,
        password: str | Callable[[], str] | None,
        *,
        keepalive: int = 60,
        ssl_context: ssl.SSLContext | None = None,
        backoff: tuple[float, float] = (0.5, 30.0),
        timeout: float = 10.0,
    ) -> None:
        self.client = MqttClient(
            url,
            client_id,
            username=username,
            password=password,
            on_message=self._on_message,
            keepalive=keepalive,
            ssl_context=ssl_context,
            backoff=backoff,
        )
        #: How long a request waits for the platform's reply, seconds.
        self.timeout = timeout
        self._replies: dict[str, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Ids the device makes: decimal digits (OneJSON wants 1-13 of them); starting
        # from the clock keeps them apart across restarts of a script.
        self._ids = itertools.count(int(time.time() * 1000) % 10**9)
        self.errors = 0  # handlers that failed, replies refused

    # ---------------------------------------------------------------- life

    async def connect(self) -> Self:
        """Connect and wait until connected and subscribed; raises `LoginRefused`."""
        await self.client.start()
        return self

    def start(self) -> None:
        """Start connecting in the background (a fleet's way)."""
        self.client.run_in_background()

    async def close(self) -> None:
        """Disconnect cleanly; handlers still running are canceled."""
        await self.client.close()
        for task in list(self._tasks):
            task.cancel()

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    @property
    def online(self) -> bool:
        return self.client.connected.is_set()

    def blocking(self) -> Any:
        """This device behind a blocking API for scripts (`device/blocking.py`)."""
        from thingshub.device.blocking import Blocking

        return Blocking(self)

    # ---------------------------------------------------------------- helpers

    def next_id(self) -> str:
        return str(next(self._ids) % 10**13)

    def spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.errors += 1
            if not isinstance(exc, DeviceError):
                log.warning("device %s: %r", self.client.client_id, exc)

    async def listen(self, *filters: str) -> None:
        """Subscribe to the filters not yet subscribed (now if connected, else at connect)."""
        new = [f for f in filters if f not in self.client.subscriptions]
        if new:
            await self.client.subscribe(*new, timeout=self.timeout)

    def listen_soon(self, *filters: str) -> None:
        """`listen` from a plain function (a handler's registration)."""
        new = [f for f in filters if f not in self.client.subscriptions]
        if not new:
            return
        if self.client.connected.is_set():
            self.spawn(self.client.subscribe(*new, timeout=self.timeout))
        else:
            self.client.subscriptions.update({f: 1 for f in new})

    def expect(self, key: str) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies[key] = fut
        return fut

    def answer(self, key: str, value: Any) -> None:
        fut = self._replies.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(value)

    async def request(self, key: str, topic: str, payload: bytes, qos: int = 1) -> Any:
        """Publish and wait for the reply filed under `key`."""
        fut = self.expect(key)
        try:
            await self.client.publish(topic, payload, qos, timeout=self.timeout)
            return await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            raise NotConnected(f"no reply on time to {topic}") from None
        finally:
            self._replies.pop(key, None)

    def _on_message(self, topic: str, payload: bytes) -> None:
        raise NotImplementedError
