"""The blocking face of a device, for scripts: the same device on a loop of its own thread.

Rules:
- `Blocking(device)` (or `device.blocking()`) runs an event loop in a daemon
  thread; every method of the device is called on that loop and waited for,
  so `dev.report({...})` returns once the platform answered, as `await
  dev.report(...)` would. `with` connects and closes.
- Handlers run on the device's thread: a plain function there should return
  quickly (a slow one holds up the device's other messages); a coroutine
  function may take its time.
- `timeout` bounds each call, so a script never hangs on a dead server.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from concurrent.futures import Future
from typing import Any, Self


class Blocking:
    """A device's methods, blocking."""

    def __init__(self, device: Any, timeout: float = 60.0) -> None:
        self.device = device
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"device:{device.client.client_id}", daemon=True
        )
        self._thread.start()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.device, name)
        if not callable(attr):
            return attr

        def run(*args: Any, **kwargs: Any) -> Any:
            return self._run(attr, args, kwargs)

        run.__name__ = name
        run.__doc__ = attr.__doc__
        return run

    def _run(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not self._thread.is_alive():
            raise RuntimeError("the device's thread has stopped (closed)")
        if inspect.iscoroutinefunction(fn):
            return asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), self._loop).result(
                self.timeout
            )
        done: Future[Any] = Future()

        def call() -> None:
            try:
                done.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(call)
        return done.result(self.timeout)

    def connect(self) -> Self:
        self._run(self.device.connect, (), {})
        return self

    def close(self) -> None:
        """Disconnect, then stop the device's thread."""
        if self._thread.is_alive():
            try:
                self._run(self.device.close, (), {})
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(10)
                self._loop.close()

    def __enter__(self) -> Self:
        return self.connect()

    def __exit__(self, *_exc: object) -> None:
        self.close()
