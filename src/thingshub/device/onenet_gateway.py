"""`OneNetGateway`: a OneNET gateway speaking for its sub-devices on its own thing prefix.

Rules (docs/protocols.md section 4.9, "OneNET gateway topics"):
- A gateway is a `OneNetDevice` (token login, image, thing model for
  itself) that also speaks `$sys/{pid}/{name}/thing/sub/...`. It listens on
  `thing/#` from its first connect: the replies to its requests, the
  platform's tree changes and the calls to its sub-devices all arrive
  there, and a sub-device's calls must never find the gateway deaf.
- A sub-device is a `SubDevice` handle (`gw.sub_device(pid, name, key)`),
  made once per device and kept by the gateway. Its `key` (the
  sub-device's own) is needed only to add it to or delete it from the
  gateway's tree, which OneNET proves with the sub-device's token.
- Logged-in sub-devices are logged in again after every reconnect: the
  platform takes them offline with the gateway. One the platform refuses
  then (unbound while the gateway was away) is marked logged out.
- Calls to a sub-device (`sub/property/set`, `sub/property/get`,
  `sub/service/invoke`) go to its own handler, else to the gateway-wide
  one that takes the sub-device first; with neither, the answer is 309
  (identifier not exist), at once, rather than a timeout. A handler raising
  `ThingError(code, msg)` answers with that code; anything else 500.
- Sub-device data travels in `pack/post` with `identity` (OneNET needs no
  login for it: data makes a sub-device online). `post_batch` sends
  several devices' values; past OneNET's 10 entries a message it sends
  several messages, each stored whole.
- Requests the platform refuses raise `Rejected` with OneNET's code (307:
  not in this gateway's tree, 1107: no such device, 1103-1106: the token).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from thingshub.core.errors import Unauthorized
from thingshub.device.base import call
from thingshub.device.client import DeviceError, Rejected
from thingshub.device.onenet import OneNetDevice, ThingError, json_object
from thingshub.dialects.onenet.token import make_token

log = logging.getLogger("thingshub.device")

#: Platform-to-gateway requests on `thing/sub/...`, answered on the topic + `_reply`.
CALLS = ("sub/property/set", "sub/property/get", "sub/service/invoke")
TOPO_CHANGE = "sub/topo/change"
#: OneNET's limit of entries in one `pack/post`.
PACK_ENTRIES = 10

TopologyHandler = Callable[[list["SubDevice"]], Any]


class SubDevice:
    """A sub-device as its gateway speaks for it: its ids, its handlers, its login."""

    def __init__(self, gateway: OneNetGateway, product_id: str, name: str) -> None:
        self.gateway = gateway
        self.product_id = product_id
        self.name = name
        #: The sub-device's own key (base64), for adding it to the tree and deleting it.
        self.key: str | None = None
        #: Whether the gateway has it logged in (and logs it in again after a reconnect).
        self.logged_in = False
        self.on_set: Callable[[dict[str, Any]], Any] | None = None
        self.on_get: Callable[[list[str]], Any] | None = None
        self.services: dict[str, Callable[[dict[str, Any]], Any]] = {}

    @property
    def identity(self) -> dict[str, str]:
        """How OneNET names it in a request: {"productID", "deviceName"}."""
        return {"productID": self.product_id, "deviceName": self.name}

    def __repr__(self) -> str:
        return f"SubDevice({self.product_id}/{self.name})"

    def token(self, ttl: int = 3600) -> str:
        """Its OneNET token (`sasToken`), valid `ttl` seconds; needs its key."""
        if self.key is None:
            raise DeviceError(f"{self!r}: adding or deleting a sub-device needs its key")
        return make_token(self.key, self.product_id, self.name, int(time.time()) + ttl)

    # ---------------------------------------------------------------- handlers

    def on_property_set(self, handler: Callable[[dict[str, Any]], Any]) -> Any:
        """`handler(values)` answers the platform's property set for this sub-device."""
        self.on_set = handler
        return handler

    def on_property_get(self, handler: Callable[[list[str]], Any]) -> Any:
        """`handler(ids) -> {id: value}` answers a property get."""
        self.on_get = handler
        return handler

    def on_service(self, identifier: str, handler: Callable[[dict[str, Any]], Any]) -> Any:
        """`handler(input) -> output` answers the service `identifier`."""
        self.services[identifier] = handler
        return handler

    # ---------------------------------------------------------------- requests

    async def add(self) -> None:
        await self.gateway.add_sub_device(self)

    async def delete(self) -> None:
        await self.gateway.delete_sub_device(self)

    async def login(self) -> None:
        await self.gateway.login_sub_device(self)

    async def logout(self) -> None:
        await self.gateway.logout_sub_device(self)

    async def post_properties(self, values: dict[str, Any], time_ms: int | None = None) -> None:
        await self.gateway.post_sub_properties(self, values, time_ms)

    async def post_event(
        self, identifier: str, value: dict[str, Any], time_ms: int | None = None
    ) -> None:
        await self.gateway.post_sub_event(self, identifier, value, time_ms)

    async def post_history(self, properties: dict[str, list[tuple[Any, int]]]) -> None:
        await self.gateway.post_sub_history(self, properties)


class OneNetGateway(OneNetDevice):
    """A OneNET gateway of product `product_id`, named `name`, holding `key`; the
    other options are `OneNetDevice`'s."""

    def __init__(
        self,
        product_id: str,
        name: str,
        key: str,
        url: str = "mqtt://127.0.0.1:1883",
        **options: Any,
    ) -> None:
        super().__init__(product_id, name, key, url, **options)
        self.subs: dict[tuple[str, str], SubDevice] = {}
        #: The gateway's children as the platform last listed them (topo/get, topo/change).
        self.children: list[SubDevice] = []
        self._on_sub_set: Callable[[SubDevice, dict[str, Any]], Any] | None = None
        self._on_sub_get: Callable[[SubDevice, list[str]], Any] | None = None
        self._sub_services: dict[str, Callable[[SubDevice, dict[str, Any]], Any]] = {}
        self._on_topology: TopologyHandler | None = None
        self.client.subscriptions[self.prefix + "thing/#"] = 1
        self.client.on_connect.append(self._relogin_soon)

    def sub_device(self, product_id: str, name: str, key: str | None = None) -> SubDevice:
        """The handle of sub-device `product_id`/`name` (made at the first ask, then the
        same); `key`, its own key, is needed to add it to the tree or delete it."""
        sub = self.subs.get((product_id, name))
        if sub is None:
            sub = self.subs[product_id, name] = SubDevice(self, product_id, name)
        if key is not None:
            try:
                make_token(key, product_id, name, 0)  # a bad key fails here, not at add()
            except Unauthorized as exc:
                raise ValueError(f"{sub!r}: its key is not base64") from exc
            sub.key = key
        return sub

    def _sub(self, target: SubDevice | tuple[str, str]) -> SubDevice:
        return target if isinstance(target, SubDevice) else self.sub_device(*target)

    # ---------------------------------------------------------------- handlers

    def on_sub_property_set(self, handler: Callable[[SubDevice, dict[str, Any]], Any]) -> Any:
        """`handler(sub, values)`: property sets for sub-devices without their own handler."""
        self._on_sub_set = handler
        return handler

    def on_sub_property_get(self, handler: Callable[[SubDevice, list[str]], Any]) -> Any:
        """`handler(sub, ids) -> {id: value}`, for sub-devices without their own handler."""
        self._on_sub_get = handler
        return handler

    def on_sub_service(
        self, identifier: str, handler: Callable[[SubDevice, dict[str, Any]], Any]
    ) -> Any:
        """`handler(sub, input) -> output` for the service `identifier` of any sub-device
        that has no handler of its own for it."""
        self._sub_services[identifier] = handler
        return handler

    def on_topology_change(self, handler: TopologyHandler) -> TopologyHandler:
        """`handler(children)`: the gateway's complete list of sub-devices after an
        application changed it (`sub/topo/change`); the gateway answers 200 unless the
        handler raises."""
        self._on_topology = handler
        return handler

    # ---------------------------------------------------------------- the tree

    async def add_sub_device(self, target: SubDevice | tuple[str, str], ttl: int = 3600) -> None:
        """Bind the sub-device to this gateway (`sub/topo/add`, proved by its token)."""
        sub = self._sub(target)
        await self._thing("sub/topo/add", {**sub.identity, "sasToken": sub.token(ttl)})

    async def delete_sub_device(self, target: SubDevice | tuple[str, str], ttl: int = 3600) -> None:
        """Unbind it (`sub/topo/delete`); it is no longer logged in."""
        sub = self._sub(target)
        await self._thing("sub/topo/delete", {**sub.identity, "sasToken": sub.token(ttl)})
        sub.logged_in = False

    async def topology(self) -> list[SubDevice]:
        """The gateway's children as the platform has them (`sub/topo/get`); the
        gateway tells the platform it took the list (`sub/topo/get/result`)."""
        key = self.next_id()  # the result names the listing it answers
        self.children = self._listed(await self._thing("sub/topo/get", {}, key))
        result = {"id": key, "code": 200, "msg": "success"}
        await self.client.publish(
            self.prefix + "thing/sub/topo/get/result", json.dumps(result).encode(), 1, self.timeout
        )
        return list(self.children)

    def _listed(self, items: Any) -> list[SubDevice]:
        listed = []
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict):
                pid, name = item.get("productID"), item.get("deviceName")
                if isinstance(pid, str) and isinstance(name, str):
                    listed.append(self.sub_device(pid, name))
        return listed

    # ---------------------------------------------------------------- presence

    async def login_sub_device(self, target: SubDevice | tuple[str, str]) -> None:
        """Log the sub-device in (`sub/login`: online, reached through this gateway);
        it is logged in again after every reconnect until logged out."""
        sub = self._sub(target)
        await self._thing("sub/login", sub.identity)
        sub.logged_in = True

    async def logout_sub_device(self, target: SubDevice | tuple[str, str]) -> None:
        sub = self._sub(target)
        sub.logged_in = False
        await self._thing("sub/logout", sub.identity)

    def _relogin_soon(self) -> None:
        subs = [sub for sub in self.subs.values() if sub.logged_in]
        if subs:
            self.spawn(self._relogin(subs))

    async def _relogin(self, subs: list[SubDevice]) -> None:
        for sub in subs:
            try:
                await self._thing("sub/login", sub.identity)
            except Rejected as exc:  # unbound, or deleted, while the gateway was away
                sub.logged_in = False
                self.errors += 1
                log.warning("gateway %s: %r cannot log in again: %s", self.name, sub, exc)

    # ---------------------------------------------------------------- data

    async def post_sub_properties(
        self,
        target: SubDevice | tuple[str, str],
        values: dict[str, Any],
        time_ms: int | None = None,
    ) -> None:
        await self.post_batch(properties={self._sub(target): values}, time_ms=time_ms)

    async def post_sub_event(
        self,
        target: SubDevice | tuple[str, str],
        identifier: str,
        value: dict[str, Any],
        time_ms: int | None = None,
    ) -> None:
        await self.post_batch(events={self._sub(target): {identifier: value}}, time_ms=time_ms)

    async def post_sub_history(
        self, target: SubDevice | tuple[str, str], properties: dict[str, list[tuple[Any, int]]]
    ) -> None:
        """Values the sub-device recorded earlier: identifier -> [(value, time_ms), ...]."""
        values = {
            k: [{"value": v, "time": t} for v, t in points] for k, points in properties.items()
        }
        entry = {"identity": self._sub(target).identity, "properties": values}
        await self._thing("history/post", [entry])

    async def post_batch(
        self,
        properties: Mapping[SubDevice | tuple[str, str] | None, dict[str, Any]] | None = None,
        events: Mapping[SubDevice | tuple[str, str] | None, dict[str, dict[str, Any]]]
        | None = None,
        time_ms: int | None = None,
    ) -> None:
        """Several devices' properties ({device: {id: value}}) and events ({device:
        {event: value}}) in `pack/post`; the device None is the gateway itself."""
        stamp = {"time": time_ms} if time_ms else {}
        entries: dict[tuple[str, str] | None, dict[str, Any]] = {}

        def entry(target: SubDevice | tuple[str, str] | None) -> dict[str, Any]:
            sub = None if target is None else self._sub(target)
            key = None if sub is None else (sub.product_id, sub.name)
            if key not in entries:
                entries[key] = {} if sub is None else {"identity": sub.identity}
            return entries[key]

        for target, values in (properties or {}).items():
            entry(target)["properties"] = {k: {"value": v, **stamp} for k, v in values.items()}
        for target, fired in (events or {}).items():
            entry(target)["events"] = {k: {"value": v, **stamp} for k, v in fired.items()}
        listed = list(entries.values())
        if not listed:
            raise ValueError("post_batch needs properties or events")
        for start in range(0, len(listed), PACK_ENTRIES):
            await self.pack_post(listed[start : start + PACK_ENTRIES])

    # ---------------------------------------------------------------- messages in

    def _thing_message(self, rest: str, payload: bytes) -> None:
        if rest not in CALLS and rest != TOPO_CHANGE:
            super()._thing_message(rest, payload)
            return
        body = json_object(payload)
        if body is None:
            return
        reply_topic = self.prefix + "thing/" + rest + "_reply"
        if rest == TOPO_CHANGE:
            work = self._topology_changed(body)
            self.spawn(self._answer_thing(reply_topic, body, work, is_call=False))
        else:
            self.spawn(self._answer_thing(reply_topic, body, self._sub_call(rest, body)))

    async def _topology_changed(self, body: dict[str, Any]) -> None:
        params = body.get("params")
        listed = params.get("subList") if isinstance(params, dict) else None
        if not isinstance(listed, list):
            raise ThingError(313, "bad request: params needs subList")
        self.children = self._listed(listed)
        for sub in self.subs.values():
            if sub.logged_in and sub not in self.children:
                sub.logged_in = False  # left the tree: the platform logged it out
        if self._on_topology is not None:
            await call(self._on_topology, list(self.children))

    async def _sub_call(self, rest: str, body: dict[str, Any]) -> Any:
        params = body.get("params")
        if not isinstance(params, dict):
            raise ThingError(313, "bad request: params must be an object")
        pid, name = params.get("productID"), params.get("deviceName")
        if not isinstance(pid, str) or not isinstance(name, str):
            raise ThingError(313, "bad request: params needs productID and deviceName")
        sub = self.sub_device(pid, name)
        if rest == "sub/service/invoke":
            identifier = str(params.get("identifier", ""))
            output = await self._service(sub, identifier, params.get("input") or {})
            return {**sub.identity, "identifier": identifier, "output": output or {}}
        values = params.get("params")
        if rest == "sub/property/set":
            if sub.on_set is not None:
                return await call(sub.on_set, values or {})
            if self._on_sub_set is not None:
                return await call(self._on_sub_set, sub, values or {})
        else:
            if sub.on_get is not None:
                return await call(sub.on_get, values or [])
            if self._on_sub_get is not None:
                return await call(self._on_sub_get, sub, values or [])
        raise ThingError(309, f"identifier not exist: {sub!r} takes no {rest}")

    async def _service(self, sub: SubDevice, identifier: str, given: Any) -> Any:
        own = sub.services.get(identifier)
        if own is not None:
            return await call(own, given)
        shared = self._sub_services.get(identifier)
        if shared is not None:
            return await call(shared, sub, given)
        raise ThingError(309, f"identifier not exist: {identifier}")
