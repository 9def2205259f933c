"""`OneNetDevice`: a OneNET device — token login, device image, commands, thing model.

Rules (docs/protocols.md sections 1.2, 2, 3, 5):
- It logs in with a token minted from its key at every connect (client id =
  device name, user name = product id), valid `token_ttl` seconds.
- The image is kept in sync: after every connect it asks for the image
  (`image/get`), hands any delta to the `on_delta` handler and reports what
  the handler applied; deltas pushed later go the same way. A delta whose
  version was already applied is not applied again (the platform pushes the
  pending delta after each SUBACK as well as answering the get).
- `on_delta(delta) -> values | None`: the values to report as applied;
  None reports the delta as it came (the desired state followed), `{}`
  reports nothing.
- Commands: `on_command(payload: bytes) -> bytes | str | None`, answered on
  `cmd/response/{cmdid}` (None answers empty bytes).
- Thing model: `on_property_set(values) -> None`, `on_property_get(ids) ->
  values`, `on_service(identifier, handler(input) -> output)`. A handler
  raising `ThingError(code, msg)` answers with that code; anything else it
  raises answers 500 with the exception's words.
- Posts (`post_properties`, `post_event`, `post_history`, `pack_post`) wait
  for the reply and raise `Rejected` unless its code is 200.
- OTA: `on_ota(install, api_url=..., version=...)` takes upgrades through
  OneNET's HTTP API, set off by the `ota/inform` notice and checked after
  every connect (device/onenet_ota.py).
- `await OneNetDevice.register(api_url, pid, access_key, name, url)`: a
  device holding only its product's access key registers itself (OneNET's
  dynamic registration) and is made with the key the platform gave it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Callable
from typing import Any, Self

from thingshub.device import ota, registration
from thingshub.device.base import Device, call
from thingshub.device.client import Rejected
from thingshub.device.onenet_ota import OneNetOta
from thingshub.dialects.onenet.token import make_token


class ThingError(Exception):
    """Raised by a thing-model handler to answer with this OneJSON code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


DeltaHandler = Callable[[dict[str, Any]], Any]


class OneNetDevice(Device):
    """A OneNET device of product `product_id`, named `name`, holding `key` (base64)."""

    def __init__(
        self,
        product_id: str,
        name: str,
        key: str,
        url: str = "mqtt://127.0.0.1:1883",
        *,
        token_ttl: int = 7 * 86400,
        keepalive: int = 60,
        ssl_context: ssl.SSLContext | None = None,
        backoff: tuple[float, float] = (0.5, 30.0),
        timeout: float = 10.0,
        image: bool = True,
    ) -> None:
        self.product_id = product_id
        self.name = name
        self.key = key
        self.token_ttl = token_ttl
        make_token(key, product_id, name, 0)  # a key that is not base64 fails here, not later
        super().__init__(
            url,
            name,
            product_id,
            self.token,
            keepalive=keepalive,
            ssl_context=ssl_context,
            backoff=backoff,
            timeout=timeout,
        )
        self.prefix = f"$sys/{product_id}/{name}/"
        #: The image as last read and reported: {"desired", "reported", "version"}.
        self.image: dict[str, Any] = {"desired": {}, "reported": {}, "version": 0}
        self.synced = asyncio.Event()
        self._sync_image = image
        self._applied = 0  # the version of the last delta applied
        self._applying = asyncio.Lock()
        self._on_delta: DeltaHandler | None = None
        self._on_command: Callable[[bytes], Any] | None = None
        self._on_set: Callable[[dict[str, Any]], Any] | None = None
        self._on_get: Callable[[list[str]], Any] | None = None
        self._services: dict[str, Callable[[dict[str, Any]], Any]] = {}
        self.calls_answered = 0
        self.ota: OneNetOta | None = None
        #: Final OTA steps by tid (100 upgraded, negative failed), as ota.upgrade gives them.
        self.ota_results: dict[str, int] = {}
        if image:
            self.client.subscriptions[self.prefix + "image/#"] = 1
            self.client.on_connect.append(self._after_connect)
            self.client.on_disconnect.append(self.synced.clear)

    @classmethod
    async def register(
        cls,
        api_url: str,
        product_id: str,
        access_key: str,
        name: str,
        url: str = "mqtt://127.0.0.1:1883",
        **options: Any,
    ) -> OneNetDevice:
        """The device `name`, registered by itself with only its product's access key
        (dynamic registration, device/registration.py), ready to connect with the key
        it was given. `options` are the constructor's."""
        data = await registration.register(
            api_url,
            product_id,
            access_key,
            name,
            ssl_context=options.get("ssl_context"),
            timeout=options.get("timeout", 10.0),
        )
        return cls(product_id, name, str(data["key"]), url, **options)

    def token(self) -> str:
        """A fresh login token, valid `token_ttl` seconds."""
        expires = int(time.time()) + self.token_ttl
        return make_token(self.key, self.product_id, self.name, expires)

    async def connect(self) -> Self:
        """Connect, subscribe, and (with image sync on) read the image and apply its delta."""
        await super().connect()
        if self._sync_image:
            await asyncio.wait_for(self.synced.wait(), self.timeout)
        return self

    # ---------------------------------------------------------------- handlers

    def on_delta(self, handler: DeltaHandler) -> DeltaHandler:
        """Register the handler of desired changes (usable as a decorator)."""
        self._on_delta = handler
        return handler

    def on_command(self, handler: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
        self._on_command = handler
        self.listen_soon(self.prefix + "cmd/request/+")
        return handler

    def on_property_set(self, handler: Callable[[dict[str, Any]], Any]) -> Any:
        self._on_set = handler
        self.listen_soon(self.prefix + "thing/#")
        return handler

    def on_property_get(self, handler: Callable[[list[str]], Any]) -> Any:
        self._on_get = handler
        self.listen_soon(self.prefix + "thing/#")
        return handler

    def on_service(self, identifier: str, handler: Callable[[dict[str, Any]], Any]) -> Any:
        self._services[identifier] = handler
        self.listen_soon(self.prefix + "thing/#")
        return handler

    def on_ota(
        self,
        install: ota.Install | None = None,
        *,
        api_url: str,
        version: str,
        module_version: str | None = None,
        prefix: str = "/ota",
        check_on_connect: bool = True,
    ) -> OneNetOta:
        """Take firmware upgrades through the OneNET OTA API at `api_url` (the server's
        HTTP address); `install(firmware, data)` (sync or async) flashes the file.
        `version` is the application's version, `module_version` the module's."""
        self.ota = OneNetOta(self, install, api_url, version, module_version, prefix)
        self.listen_soon(self.prefix + "ota/inform")
        if check_on_connect:
            self.client.on_connect.append(self._check_ota)
            if self.online:
                self._check_ota()
        return self.ota

    def _check_ota(self) -> None:
        if self.ota is not None:
            self.spawn(self.ota.after_connect())

    # ---------------------------------------------------------------- image

    def _after_connect(self) -> None:
        self.spawn(self._sync())

    async def _sync(self) -> None:
        document = await self.get_image()
        if document is not None:
            state = document.get("state", {})
            async with self._applying:  # a pushed delta's report may be newer than this read
                if int(document.get("version", 0)) >= self.image["version"]:
                    self.image = {
                        "desired": state.get("desired", {}),
                        "reported": state.get("reported", {}),
                        "version": int(document.get("version", 0)),
                    }
            if state.get("delta"):
                await self._apply(state["delta"], int(document.get("version", 0)))
        self.synced.set()

    async def get_image(self) -> dict[str, Any] | None:
        """The image's document (`state`, `metadata`, `version`), None when it has none."""
        key = self.next_id()
        body = json.dumps({"id": key}).encode()
        ok, reply = await self.request("image:" + key, self.prefix + "image/get", body)
        if ok:
            return dict(reply)
        if reply.get("err_code") == 167:
            return None
        raise Rejected(reply.get("err_code", "?"), reply.get("err_msg", ""))

    async def report(self, values: dict[str, Any]) -> int:
        """Report state (`reported`); the image's new version."""
        return await self._update({"reported": values})

    async def desire(self, values: dict[str, Any]) -> int:
        """Change desired state, as OneNET lets a device do."""
        return await self._update({"desired": values})

    async def _update(self, state: dict[str, Any]) -> int:
        key = self.next_id()
        body = json.dumps({"id": key, "state": state}).encode()
        ok, reply = await self.request("image:" + key, self.prefix + "image/update", body)
        if not ok:
            raise Rejected(reply.get("err_code", "?"), reply.get("detail") or reply.get("err_msg"))
        version = int(reply.get("version", 0))
        for part, values in state.items():
            _merge(self.image[part], values)
        self.image["version"] = version
        return version

    async def _apply(self, delta: dict[str, Any], version: int) -> None:
        async with self._applying:  # one at a time: a second copy of a delta waits, then skips
            if version and version <= self._applied:
                return
            self._applied = max(self._applied, version)
            values = delta if self._on_delta is None else await call(self._on_delta, delta)
            if values is None:
                values = delta
            if values:
                await self.report(values)

    # ---------------------------------------------------------------- data points

    async def post_datapoints(self, values: dict[str, Any], time_s: int | None = None) -> None:
        """Telemetry the OneNET way (`dp/post/json`, section 6), one point a stream."""
        await self.listen(self.prefix + "dp/post/json/+")
        number = int(self.next_id()) % 2_147_483_648
        stamp = {"t": time_s} if time_s else {}
        body = {"id": number, "dp": {k: [{"v": v, **stamp}] for k, v in values.items()}}
        ok, reply = await self.request(
            f"dp:{number}", self.prefix + "dp/post/json", json.dumps(body).encode()
        )
        if not ok:
            raise Rejected(reply.get("err_code", "?"), str(reply.get("detail", "")))

    # ---------------------------------------------------------------- thing model

    async def post_properties(self, values: dict[str, Any], time_ms: int | None = None) -> None:
        params = {
            k: {"value": v, **({"time": time_ms} if time_ms else {})} for k, v in values.items()
        }
        await self._thing("property/post", params)

    async def post_event(
        self, identifier: str, value: dict[str, Any], time_ms: int | None = None
    ) -> None:
        event = {"value": value, **({"time": time_ms} if time_ms else {})}
        await self._thing("event/post", {identifier: event})

    async def post_history(self, properties: dict[str, list[tuple[Any, int]]]) -> None:
        """Values recorded earlier: identifier -> [(value, time_ms), ...]."""
        values = {
            k: [{"value": v, "time": t} for v, t in points] for k, points in properties.items()
        }
        await self._thing("history/post", [{"properties": values}])

    async def pack_post(self, entries: list[dict[str, Any]]) -> None:
        """`pack/post`: several devices' properties and events (a gateway's sub-devices
        named by `identity` {"productID", "deviceName"})."""
        await self._thing("pack/post", entries)

    async def get_desired(self, *identifiers: str) -> dict[str, Any]:
        """Desired values of the thing model: identifier -> {"value", "version"}."""
        data = await self._thing("property/desired/get", list(identifiers))
        return dict(data or {})

    async def _thing(self, path: str, params: Any, key: str | None = None) -> Any:
        await self.listen(self.prefix + "thing/#")
        key = key or self.next_id()
        body = json.dumps({"id": key, "version": "1.0", "params": params}).encode()
        reply = await self.request("thing:" + key, self.prefix + "thing/" + path, body)
        if reply.get("code") != 200:
            raise Rejected(reply.get("code", "?"), reply.get("msg", ""))
        return reply.get("data")

    async def _answer_thing(
        self, topic: str, request: dict[str, Any], work: Any, *, is_call: bool = True
    ) -> None:
        reply: dict[str, Any] = {"id": str(request.get("id", "")), "code": 200, "msg": "success"}
        try:
            data = await work
            if data is not None:
                reply["data"] = data
        except ThingError as exc:
            reply.update(code=exc.code, msg=str(exc))
        except Exception as exc:
            reply.update(code=500, msg=f"device error: {exc}")
            self.errors += 1
        await self.client.publish(topic, json.dumps(reply).encode(), 1, self.timeout)
        self.calls_answered += is_call  # a gateway's answer to a notice is not a call

    # ---------------------------------------------------------------- messages in

    def _on_message(self, topic: str, payload: bytes) -> None:
        if not topic.startswith(self.prefix):
            return
        rest = topic[len(self.prefix) :]
        if rest.startswith("cmd/request/"):
            self.spawn(self._command(rest[len("cmd/request/") :], payload))
        elif rest.startswith("dp/post/json/"):
            with contextlib.suppress(ValueError):
                body = json.loads(payload)
                self.answer(f"dp:{body.get('id')}", (rest.endswith("/accepted"), body))
        elif rest.startswith("image/"):
            self._image_message(rest, payload)
        elif rest.startswith("thing/"):
            self._thing_message(rest[len("thing/") :], payload)
        elif rest == "ota/inform" and self.ota is not None:
            self.ota.inform(payload)

    def _image_message(self, rest: str, payload: bytes) -> None:
        try:
            body = json.loads(payload)
        except ValueError:
            return
        if rest == "image/update/delta":
            self.image["desired"].update(body.get("state", {}))
            self.spawn(self._apply(body.get("state", {}), int(body.get("version", 0))))
        elif rest.endswith(("/accepted", "/rejected")):
            self.answer(f"image:{body.get('id')}", (rest.endswith("/accepted"), body))

    def _thing_message(self, rest: str, payload: bytes) -> None:
        body = json_object(payload)
        if body is None:
            return
        reply_topic = self.prefix + "thing/" + rest + "_reply"
        params = body.get("params")
        if rest.endswith(("/reply", "_reply")):
            self.answer(f"thing:{body.get('id')}", body)
        elif rest == "property/set" and self._on_set is not None:
            self.spawn(self._answer_thing(reply_topic, body, call(self._on_set, params or {})))
        elif rest == "property/get" and self._on_get is not None:
            self.spawn(self._answer_thing(reply_topic, body, call(self._on_get, params or [])))
        elif rest.startswith("service/") and rest.endswith("/invoke"):
            handler = self._services.get(rest[len("service/") : -len("/invoke")])
            work = self._no_service(rest) if handler is None else call(handler, params or {})
            self.spawn(self._answer_thing(reply_topic, body, work))

    @staticmethod
    async def _no_service(rest: str) -> None:
        raise ThingError(309, f"identifier not exist: {rest.split('/')[1]}")

    async def _command(self, cmd_id: str, payload: bytes) -> None:
        if self._on_command is None:
            return
        try:
            answer = await call(self._on_command, payload)
        except Exception as exc:
            answer = f"error: {exc}"
            self.errors += 1
        data = answer.encode() if isinstance(answer, str) else (answer or b"")
        await self.client.publish(self.prefix + f"cmd/response/{cmd_id}", data, 1, self.timeout)
        self.calls_answered += 1


def _merge(target: dict[str, Any], values: dict[str, Any]) -> None:
    """The image's merge, as the platform applies it: null deletes, objects merge."""
    for key, value in values.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def json_object(payload: bytes) -> dict[str, Any] | None:
    """A thing-model message's JSON object, or None for anything else (ignored)."""
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
