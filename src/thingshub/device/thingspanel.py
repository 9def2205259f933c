"""`ThingsPanelDevice`: a ThingsPanel direct device — reports, calls, OTA.

Rules (docs/protocols.md section 4):
- It logs in with the user name and password issued at registration (or an
  access token as the user name and no password); downlink topics carry its
  device number, so it needs it.
- Telemetry is fire and forget (QoS 1: acknowledged once stored); attributes
  and events wait for the platform's response object and raise `Rejected`
  when `result` is not 0.
- Calls: `on_command(method, params) -> dict | None`, `on_attributes_set(values)`,
  `on_attributes_get(keys) -> values` (sent as an attribute report, which is
  how ThingsPanel answers a get), `on_control(values)` (nothing to answer).
  A command or set handler's dict is merged into the answer `{"result": 0,
  "message": "success", "ts"}`; what it raises answers `result` 1 with its
  words.
- OTA: `on_ota(install)` subscribes to the inform topic; each inform runs
  ota.upgrade once per task (a repeated inform of a task in hand is ignored),
  reporting on `ota/devices/progress` with the task's module.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable
from typing import Any

from thingshub.device import ota
from thingshub.device.base import Device, call
from thingshub.device.client import Rejected


class ThingsPanelDevice(Device):
    """A ThingsPanel device: `device_number`, and its `username` and `password`."""

    #: The request topics' first levels; a gateway speaks on `gateway/...` instead.
    family = "devices"

    def __init__(
        self,
        device_number: str,
        username: str,
        password: str | None = None,
        url: str = "mqtt://127.0.0.1:1883",
        *,
        client_id: str | None = None,
        keepalive: int = 60,
        ssl_context: ssl.SSLContext | None = None,
        backoff: tuple[float, float] = (0.5, 30.0),
        timeout: float = 10.0,
    ) -> None:
        super().__init__(
            url,
            client_id or f"tp-{device_number}",
            username,
            password,
            keepalive=keepalive,
            ssl_context=ssl_context,
            backoff=backoff,
            timeout=timeout,
        )
        self.ssl_context = ssl_context
        self.device_number = dn = device_number
        f = self.family
        self._response_filters = (
            f"{f}/attributes/response/{dn}/+",
            f"{f}/event/response/{dn}/+",
        )
        self._on_command: Callable[[str, Any], Any] | None = None
        self._on_set: Callable[[dict[str, Any]], Any] | None = None
        self._on_get: Callable[[list[str]], Any] | None = None
        self._on_control: Callable[[dict[str, Any]], Any] | None = None
        self._install: ota.Install | None = None
        self._ota_tasks: set[tuple[str, str]] = set()
        #: Final OTA steps by task id (100 upgraded, negative failed).
        self.ota_results: dict[str, int] = {}
        self.calls_answered = 0

    # ---------------------------------------------------------------- handlers

    def on_command(self, handler: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
        self._on_command = handler
        self.listen_soon(f"{self.family}/command/{self.device_number}/+")
        return handler

    def on_attributes_set(self, handler: Callable[[dict[str, Any]], Any]) -> Any:
        self._on_set = handler
        self.listen_soon(f"{self.family}/attributes/set/{self.device_number}/+")
        return handler

    def on_attributes_get(self, handler: Callable[[list[str]], Any]) -> Any:
        self._on_get = handler
        self.listen_soon(f"{self.family}/attributes/get/{self.device_number}")
        return handler

    def on_control(self, handler: Callable[[dict[str, Any]], Any]) -> Any:
        self._on_control = handler
        self.listen_soon(f"{self.family}/telemetry/control/{self.device_number}")
        return handler

    def on_ota(self, install: ota.Install | None = None) -> None:
        """Take firmware upgrades; `install(firmware, data)` (sync or async) flashes it."""
        self._install = install
        self.listen_soon(f"ota/devices/inform/{self.device_number}")

    # ---------------------------------------------------------------- reports

    async def send_telemetry(self, values: dict[str, Any], qos: int = 1) -> None:
        """Real-time telemetry, stamped by the platform on arrival."""
        await self.client.publish(f"{self.family}/telemetry", _json(values), qos, self.timeout)

    async def send_history(self, records: list[tuple[float, dict[str, Any]]]) -> None:
        """Telemetry recorded earlier: [(unix seconds, values), ...]."""
        body = [{"ts": ts, "values": values} for ts, values in records]
        await self.client.publish(f"{self.family}/telemetry", _json(body), 1, self.timeout)

    async def send_attributes(self, values: dict[str, Any]) -> dict[str, Any]:
        """Report attributes; the platform's response object."""
        return await self._reported("attributes", values)

    async def send_event(
        self, method: str, params: dict[str, Any] | None = None, ts_ms: int | None = None
    ) -> dict[str, Any]:
        event: dict[str, Any] = {"method": method, "params": params or {}}
        if ts_ms is not None:
            event["ts"] = ts_ms
        return await self._reported("event", event)

    async def send_events(self, events: list[tuple[int, str, dict[str, Any]]]) -> dict[str, Any]:
        """Events recorded earlier: [(unix milliseconds, method, params), ...]."""
        body = [{"ts": ts, "method": m, "params": p} for ts, m, p in events]
        return await self._reported("event", body)

    async def _reported(self, kind: str, body: Any) -> dict[str, Any]:
        await self.listen(*self._response_filters)
        mid = self.next_id()
        reply: dict[str, Any] = await self.request(
            f"{kind}:{mid}", f"{self.family}/{kind}/{mid}", _json(body)
        )
        if reply.get("result") != 0:
            raise Rejected(reply.get("errcode", "?"), str(reply.get("message", "")))
        return reply

    # ---------------------------------------------------------------- messages in

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            body = json.loads(payload)
        except ValueError:
            return
        self._dispatch(topic.split("/"), body)

    def _dispatch(self, levels: list[str], body: Any) -> None:
        dn = self.device_number
        match levels:
            case [_, ("attributes" | "event") as kind, "response", d, mid] if d == dn:
                self.answer(f"{kind}:{mid}", body)
            case [_, "command", d, mid] if d == dn and self._on_command is not None:
                command = self._on_command
                self._respond(f"command/response/{mid}", lambda: self.command(command, body))
            case [_, "attributes", "set", d, mid] if d == dn and self._on_set is not None:
                setter = self._on_set
                self._respond(f"attributes/set/response/{mid}", lambda: call(setter, body))
            case [_, "attributes", "get", d] if d == dn and self._on_get is not None:
                self.spawn(self._answer_get(self._on_get, body))
            case [_, "telemetry", "control", d] if d == dn and self._on_control is not None:
                self.spawn(call(self._on_control, body))
            case ["ota", "devices", "inform" | "infrom", d] if d == dn:
                self._inform(body)
            case _:
                pass

    async def command(self, handler: Callable[[str, Any], Any], body: Any) -> Any:
        if not isinstance(body, dict):
            raise ValueError("a command is an object")
        return await call(handler, str(body.get("method", "")), body.get("params", {}))

    def _respond(self, path: str, work: Callable[[], Any]) -> None:
        async def run() -> None:
            answer: dict[str, Any] = {"result": 0, "message": "success"}
            try:
                extra = await work()
                if isinstance(extra, dict):
                    answer.update(extra)
            except Exception as exc:
                answer = {"result": 1, "errcode": "DEVICE_ERROR", "message": str(exc)}
                self.errors += 1
            answer.setdefault("ts", int(time.time()))
            await self.client.publish(f"{self.family}/{path}", _json(answer), 1, self.timeout)
            self.calls_answered += 1

        self.spawn(run())

    async def _answer_get(self, handler: Callable[[list[str]], Any], body: Any) -> None:
        keys = body.get("keys", []) if isinstance(body, dict) else body
        values = await call(handler, list(keys or []))
        await self.send_attributes(dict(values))
        self.calls_answered += 1

    # ---------------------------------------------------------------- OTA

    def _inform(self, body: Any) -> None:
        try:
            firmware = ota.Firmware.from_thingspanel(body)
        except ValueError:
            return
        key = (firmware.task_id, firmware.module)
        if key in self._ota_tasks:
            return
        self._ota_tasks.add(key)
        self.spawn(self._upgrade(firmware))

    async def _upgrade(self, firmware: ota.Firmware) -> None:
        async def report(step: int, desc: str) -> None:
            body = {"step": str(step), "desc": desc[:4000], "module": firmware.module}
            await self.client.publish("ota/devices/progress", _json(body), 1, self.timeout)

        step = await ota.upgrade(firmware, report, self._install, ssl_context=self.ssl_context)
        self.ota_results[firmware.task_id] = step


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
