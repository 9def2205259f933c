"""The MQTT server's hooks, bound to the platform: who gets in, what they may touch.

Rules:
- Every CONNECT must name a registered device, in the credential form of
  one of the dialects (a OneNET token, a ThingsPanel user name and
  password, ...), which then verifies them. Failed logins are throttled per
  (address, identity) and per identity, attempts in flight are bounded per
  pair, identity and address (core/throttle.py, waited out in
  admission.py); a penalty applies to an attempt whatever its outcome, so
  timing tells an attacker nothing, and never to another identity's
  attempts from the same address.
- Refusals: bad credentials, unknown device, an expired token, or a token
  naming another device than the client id does → "bad user name or
  password" (0x86; 3.1.1: 4); a disabled device → "not authorized" (0x87;
  3.1.1: 5).
- A device's MQTT session is keyed by (device, client id), so one device can
  never take over another's session by reusing its client id; and the device
  is the connection's identity, so it holds one connection and one session
  whatever client ids it uses: its newest login takes over the older one.
- Topic rights, logins, decoding and encoding come from the dialects, asked
  through their registry: nothing here knows a topic or a credential form.
- Presence: online on CONNECT, offline when its connection closes, ordered
  by the connections' sequence; a connection taken over by a newer login of
  the device does not make it offline (the newer one holds it). Activity is
  sampled from the server once a second.
- A deleted device's connections are closed at once.
- In a cluster, logins are also told to `logins` (gateway/cluster.py), which
  closes the device's older connection on another node.
- Presence is also told to whoever listens for it (`PresenceNotice`: on
  ThingsPanel's `devices/status/{dn}`), as the connection opens and closes;
  while the server holds no subscription at all, nobody can, and the notice
  is not even encoded.
- Client-chosen strings reach the log escaped (mqtt/logs.py).
- Publishes per device are limited when `limit_publishes` set a rate (a
  token bucket holding one second's worth): a message over it stores
  nothing and is counted (`rate_limited`); 5.0 QoS 1/2 get PUBACK/PUBREC
  0x97 (quota exceeded), 3.1.1 QoS 1/2, which has no refusal, are closed
  unacknowledged (the device sends again later), QoS 0 is dropped.
- A handler's outcome goes to the MQTT server as it is when it is a future or
  a `Settlement` (the storage's batch, acknowledged as it commits); any other
  awaitable runs as a task.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from thingshub.core.errors import Forbidden, ThingsHubError, Unauthorized
from thingshub.core.events import DeviceDeleted, Event
from thingshub.core.messages import (
    AttributesGet,
    Call,
    Control,
    DeviceRef,
    Outbound,
    PresenceNotice,
    ViaGateway,
)
from thingshub.core.model import Device
from thingshub.core.ports import Clock, EventBus
from thingshub.core.ratelimit import RateLimiter
from thingshub.core.settlement import Settlement
from thingshub.core.throttle import LoginThrottle
from thingshub.dialects.port import Login
from thingshub.dialects.registry import Registry
from thingshub.gateway.admission import Admission
from thingshub.gateway.cluster import ClusterLogins
from thingshub.mqtt.codec.packets import MQTT_5
from thingshub.mqtt.codec.reasons import ReasonCode
from thingshub.mqtt.hooks import (
    Accept,
    ClientInfo,
    CloseReason,
    ConnectRequest,
    Message,
    PublishOutcome,
    Refuse,
)
from thingshub.mqtt.logs import logger
from thingshub.mqtt.server import Broker
from thingshub.services.background import cancel
from thingshub.services.devices import DeviceService
from thingshub.services.presence import PresenceService

log = logger("thingshub.gateway")


#: Handles one kind of message from a device; its result is the QoS 1
#: acknowledgement's reason code (None: success), given once it is stored.
#: A coroutine runs in a task of its own; an asyncio future (ingest's telemetry,
#: the thing model's common post) is handed to the server as it is, so one
#: handler may return either, message by message.
Handler = Callable[[DeviceRef, Any], Awaitable[int | None] | Settlement]


class DeviceGateway:
    def __init__(
        self,
        devices: DeviceService,
        presence: PresenceService,
        clock: Clock,
        bus: EventBus,
        dialects: Registry,
        throttle: LoginThrottle | None = None,
        activity_interval: float = 1.0,
    ) -> None:
        self.dialects = dialects
        self.devices = devices
        self.presence = presence
        self.clock = clock
        self.admission = Admission(throttle or LoginThrottle(), clock)
        self.activity_interval = activity_interval
        self.logins_ok = 0
        self.logins_failed: Counter[str] = Counter()
        self.messages_in: Counter[str] = Counter()
        self.messages_out: Counter[str] = Counter()
        self._broker: Broker | None = None
        self._task: asyncio.Task[None] | None = None
        self._handlers: dict[type, Handler] = {}
        self._subscribe_listeners: list[Callable[[DeviceRef, list[str]], None]] = []
        self.unhandled = 0
        self.publish_limit: RateLimiter | None = None
        self.rate_limited = 0  # publishes refused over a device's rate
        #: Takeover across the nodes of a cluster (None: one process).
        self.logins: ClusterLogins | None = None
        bus.subscribe(self._on_event, [DeviceDeleted])

    def limit_publishes(self, rate: float) -> None:
        """At most `rate` messages a second per device, `rate` at once (0: no limit)."""
        self.publish_limit = RateLimiter(rate, max(rate, 1.0)) if rate > 0 else None

    def handle(self, kind: type, handler: Handler) -> None:
        """Route device messages of type `kind` (from a dialect's decode) to `handler`."""
        self._handlers[kind] = handler

    def on_device_subscribe(self, listener: Callable[[DeviceRef, list[str]], None]) -> None:
        """Be told of the filters a device was granted, right after its SUBACK."""
        self._subscribe_listeners.append(listener)

    @property
    def throttle(self) -> LoginThrottle:
        return self.admission.throttle

    @throttle.setter
    def throttle(self, throttle: LoginThrottle) -> None:
        self.admission.throttle = throttle

    @property
    def broker(self) -> Broker:
        assert self._broker is not None, "attach() the gateway to a broker first"
        return self._broker

    def attach(self, broker: Broker) -> None:
        self._broker = broker
        broker.track_activity = True  # _sample_activity asks for it every second

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._sample_activity())

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    # ------------------------------------------------------------ login

    def authenticate(self, request: ConnectRequest) -> Accept | Refuse | Awaitable[Accept | Refuse]:
        """At once when the device is cached and the throttle lets the attempt
        through without waiting (the common reconnect); otherwise in a
        coroutine, after its lanes and penalties and a lookup."""
        host = request.address.rsplit(":", 1)[0]
        login: Login | ThingsHubError
        try:
            login = self._credentials(request)
        except ThingsHubError as exc:
            login = exc
        who = _identity(request, login)
        if isinstance(login, Login) and self.admission.at_once(host, who):
            device = self.devices.cached(login.lookup)
            if device is not None:
                return self._decide(request, host, who, login, device)
        return self._authenticate_later(request, host, who, login)

    async def _authenticate_later(
        self, request: ConnectRequest, host: str, who: str, login: Login | ThingsHubError
    ) -> Accept | Refuse:
        async with self.admission.admitted(host, who):
            if isinstance(login, ThingsHubError):
                return self._refuse(request, host, who, login)
            device = await self.devices.lookup(login.lookup)
            return self._decide(request, host, who, login, device)

    def _decide(
        self, request: ConnectRequest, host: str, who: str, login: Login, device: Device | None
    ) -> Accept | Refuse:
        try:
            self._verify(login, device)
        except ThingsHubError as exc:
            return self._refuse(request, host, who, exc)
        assert device is not None
        self.logins_ok += 1
        self.throttle.succeeded(host, who, self.clock.monotonic_ms())
        principal = DeviceRef(device.product_id, device.name, device.device_number)
        return Accept(
            principal,
            session_key=f"{device.product_id}/{device.name}/{request.client_id}",
            identity=f"{device.product_id}/{device.name}",
        )

    def _refuse(self, request: ConnectRequest, host: str, who: str, exc: ThingsHubError) -> Refuse:
        self.throttle.failed(host, who, self.clock.monotonic_ms())
        self.logins_failed[type(exc).__name__] += 1
        log.info(
            "login refused for %s from %s: %s", request.client_id, request.address, exc.message
        )
        return Refuse(_REFUSAL.get(type(exc), ReasonCode.NOT_AUTHORIZED), exc.message)

    def _credentials(self, request: ConnectRequest) -> Login:
        login = self.dialects.login(request.client_id, request.username, request.password)
        if login is None:
            raise Unauthorized("user name and password are required")
        return login

    def _verify(self, login: Login, device: Device | None) -> None:
        if device is None:
            token_login = login.lookup[0] == "d"
            raise Unauthorized("no such device" if token_login else "wrong user name or password")
        self.dialects.get(login.dialect).verify(
            login, device, self.clock.now_ms() // 1000, self.devices.password_matches
        )
        if device.status != "enabled":
            raise Forbidden(f"device is {device.status}")

    # ------------------------------------------------------------ topic rights

    def authorize_publish(self, client: ClientInfo, topic: str) -> bool:
        p = client.principal
        if not isinstance(p, DeviceRef):
            return False
        return self.dialects.may_publish(p, topic)

    def authorize_subscribe(self, client: ClientInfo, topic_filter: str) -> bool | int:
        p = client.principal
        if not isinstance(p, DeviceRef):
            return False
        return self.dialects.may_subscribe(p, topic_filter)

    # ------------------------------------------------------------ events from the server

    def on_connect(self, client: ClientInfo) -> None:
        p = client.principal
        if isinstance(p, DeviceRef):
            self.presence.connected(p.product_id, p.name, client.seq)
            if self.logins is not None:
                self.logins.logged_in(p, client.seq)
            self._notify(p, True)

    def on_disconnect(self, client: ClientInfo, reason: CloseReason) -> None:
        p = client.principal
        if self.logins is not None and isinstance(p, DeviceRef):
            self.logins.logged_out(p, client.seq)
        # Taken over: a newer connection of the same device is being accepted
        # right now and keeps it online; going offline in between would flap.
        if isinstance(p, DeviceRef) and reason is not CloseReason.TAKEN_OVER:
            self.presence.disconnected(p.product_id, p.name, client.seq)
            self._notify(p, False)

    def _notify(self, ref: DeviceRef, online: bool) -> None:
        if self.broker.subscribed:  # else it reaches nobody: saved at every connect and close
            self.send(ref, PresenceNotice(online))

    def on_publish(self, client: ClientInfo, message: Message) -> PublishOutcome:
        ref = client.principal
        if not isinstance(ref, DeviceRef):
            self.messages_in[self.dialects.family(message.topic)] += 1
            return None
        limit = self.publish_limit
        if limit is not None and not limit.allow(ref, self.clock.monotonic_ms() / 1000):
            return self._over_rate(client, message)
        decoded = self.dialects.decode(ref, message.topic, message.payload, self.clock.now_ms())
        if decoded is None:
            self.messages_in[self.dialects.family(message.topic)] += 1
            self.unhandled += 1
            return 0  # a device topic nothing handles (yet): consumed, acknowledged
        dialect, inbound = decoded
        self.messages_in[dialect.name] += 1
        handler = self._handlers.get(type(inbound))
        if handler is None:
            self.unhandled += 1
            return 0
        loop = self.broker.loop
        try:
            outcome = handler(ref, inbound)
        except Exception as exc:  # as if raised in its task: no acknowledgement
            failed: asyncio.Future[int] = loop.create_future()
            failed.set_exception(exc)
            return failed
        if isinstance(outcome, asyncio.Future | Settlement):
            return outcome  # resolves to int | None (None is 0); settles to 0 or a failure
        return loop.create_task(_run(outcome))

    def _over_rate(self, client: ClientInfo, message: Message) -> int:
        self.rate_limited += 1
        if message.qos and client.protocol_level != MQTT_5:
            # 3.1.1 cannot refuse a message: close without acknowledging it.
            self.broker.disconnect(client.session_key, ReasonCode.QUOTA_EXCEEDED)
            return 0
        return ReasonCode.QUOTA_EXCEEDED if message.qos else 0

    def on_subscribe(self, client: ClientInfo, granted: list[tuple[str, int]]) -> None:
        ref = client.principal
        if isinstance(ref, DeviceRef) and self._subscribe_listeners:
            filters = [f for f, _ in granted]
            for listener in self._subscribe_listeners:
                listener(ref, filters)

    # ------------------------------------------------------------ the DeviceLink

    def send(self, ref: DeviceRef, message: Outbound) -> bool:
        """Publish a message to a device (QoS 0); False if no connection of it received it.

        A message its dialect sends nothing for counts as received. A request
        no connection took in its direct form goes in the gateway form (a
        gateway listening there for requests to itself); one that no dialect
        carries through a gateway reaches nobody."""
        try:
            dialect, wire = self.dialects.encode(ref, message)
        except TypeError:
            if isinstance(message, ViaGateway):
                return False
            raise
        received = not wire
        for topic, payload in wire:
            if self.broker.publish(topic, payload) > 0:
                self.messages_out[dialect.name] += 1  # only what reached a device
                received = True
        if not received and isinstance(message, Call | Control | AttributesGet):
            return self.send(ref, ViaGateway((), message))
        return received

    def heard(self, ref: DeviceRef) -> bool:
        """False when no connection holds a subscription: then nothing sent reaches anyone."""
        return self.broker.subscribed

    def listens(self, ref: DeviceRef, filters: list[str], kind: type) -> bool:
        """Whether one of a device's filters takes messages of `kind`."""
        return self.dialects.covers(ref, filters, kind)

    def is_online(self, product_id: str, name: str) -> bool:
        return self.presence.is_online(product_id, name)

    # ------------------------------------------------------------ platform events

    def _on_event(self, event: Event) -> None:
        if isinstance(event, DeviceDeleted) and self._broker is not None:
            n = self.broker.disconnect_where(
                lambda c: (
                    isinstance(c.principal, DeviceRef)
                    and c.principal.product_id == event.product_id
                    and c.principal.name == event.name
                )
            )
            self.presence.forget(event.product_id, event.name)
            if n:
                log.info(
                    "closed %d connection(s) of deleted device %s/%s",
                    n,
                    event.product_id,
                    event.name,
                )

    async def _sample_activity(self) -> None:
        while True:
            await asyncio.sleep(self.activity_interval)
            now = self.clock.now_ms()
            for client, idle in self.broker.activity():
                p = client.principal
                if isinstance(p, DeviceRef):
                    self.presence.touch(p.product_id, p.name, now - int(idle * 1000))


def _identity(request: ConnectRequest, login: Login | ThingsHubError) -> str:
    """Who a CONNECT claims to be, for the throttle (before anything is checked)."""
    if isinstance(login, Login):
        return "/".join(login.lookup)
    return f"u/{request.username or ''}"


async def _run(handling: Awaitable[int | None]) -> int:
    code = await handling
    return code or 0


_REFUSAL: dict[type[ThingsHubError], int] = {
    Unauthorized: ReasonCode.BAD_USER_NAME_OR_PASSWORD,
    Forbidden: ReasonCode.NOT_AUTHORIZED,
}
