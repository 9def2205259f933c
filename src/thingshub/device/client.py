"""A lean asyncio MQTT 3.1.1 client: what every device of the SDK talks through.

Rules:
- It is a device's client, nothing more: one connection, QoS 0 and 1 out,
  whatever the server sends in (the platform sends QoS 0; QoS 1 and 2 are
  acknowledged as the protocol asks). Packets are made and read by the
  project's sans-io codec (`thingshub.mqtt.codec`), the one the server's
  tests prove against paho-mqtt; no thread, no other dependency, so ten
  thousand of them share one event loop (`thingshub simulate`).
- `url` says the transport: `mqtt://host:1883` (TCP), `mqtts://host:8883`
  (TLS), `ws://host:8080/mqtt` or `wss://...` (MQTT over WebSocket, offering
  the subprotocol `mqtt`).
- It reconnects by itself, forever, with exponential backoff and jitter
  (`backoff` = first and longest delay), and subscribes again to every filter
  it was given before anything else is sent: the platform keeps no session
  across its restarts and pushes pending deltas and informs after a SUBACK.
- The password may be a callable, asked at every connect: a OneNET token is
  minted fresh, so a device that was away longer than a token lives still
  logs in.
- A login the server refuses (bad credentials, device disabled) ends the
  client at the first connect (`start` raises `LoginRefused`); later it is
  retried with backoff, since a restarting server may refuse for a while.
- QoS 1 publishes not acknowledged when the connection drops are sent again
  after the reconnect (DUP set), so a message is never lost to a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable
from typing import Any

from thingshub.device.links import Endpoint, Link, WsLink
from thingshub.mqtt.codec import (
    MQTT_3_1_1,
    CodecError,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PubAck,
    Publish,
    Suback,
    Subscribe,
    SubscriptionRequest,
    encode,
    encode_ack,
    encode_publish,
)

log = logging.getLogger("thingshub.device")

#: What a CONNACK return code of MQTT 3.1.1 means.
CONNACK_CODES = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class DeviceError(Exception):
    """Something a device could not do; the message says what."""


class LoginRefused(DeviceError):
    """The server refused the login (CONNACK return code `code`)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"login refused: {CONNACK_CODES.get(code, f'code {code}')}")
        self.code = code


class NotConnected(DeviceError):
    """No connection within the time allowed, or the client is closed."""


class Rejected(DeviceError):
    """The platform refused a request: `code` and its words."""

    def __init__(self, code: int | str, message: str) -> None:
        super().__init__(f"refused ({code}): {message}")
        self.code = code


MessageHandler = Callable[[str, bytes], None]
ConnectHook = Callable[[], Any]


class MqttClient:
    """A reconnecting MQTT 3.1.1 client; `on_message(topic, payload)` gets every PUBLISH."""

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        username: str | None = None,
        password: str | Callable[[], str] | None = None,
        on_message: MessageHandler | None = None,
        keepalive: int = 60,
        ssl_context: ssl.SSLContext | None = None,
        backoff: tuple[float, float] = (0.5, 30.0),
        connect_timeout: float = 30.0,
    ) -> None:
        self.endpoint = Endpoint.parse(url)
        self.url = url
        self.client_id = client_id
        self.username = username
        self.password = password
        self.on_message = on_message
        self.keepalive = keepalive
        self.ssl_context = ssl_context
        if self.endpoint.secure and ssl_context is None:
            self.ssl_context = ssl.create_default_context()
        self.backoff = backoff
        self.connect_timeout = connect_timeout
        #: Called (sync or async) after every CONNACK and resubscription.
        self.on_connect: list[ConnectHook] = []
        self.on_disconnect: list[Callable[[], None]] = []
        self.subscriptions: dict[str, int] = {}
        self.connected = asyncio.Event()
        self.connects = 0  # how many times it connected
        self._link: Link | None = None
        self._ids = 0
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._unacked: dict[int, Publish] = {}  # QoS 1 out, sent again after a reconnect
        self._connack: asyncio.Future[Connack] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._first: asyncio.Future[None] | None = None
        self._ping: asyncio.TimerHandle | None = None
        self._ping_due = False

    # ---------------------------------------------------------------- life

    async def start(self) -> None:
        """Connect (retrying with backoff) and return once connected; raises
        `LoginRefused` when the server refuses the first login."""
        if self._task is None:
            self._closing = False
            self._first = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._run(), name=f"mqtt:{self.client_id}")
        assert self._first is not None
        await asyncio.shield(self._first)

    def run_in_background(self) -> None:
        """Start connecting without waiting (a fleet starts thousands this way)."""
        if self._task is None:
            self._closing = False
            self._first = asyncio.get_running_loop().create_future()
            self._first.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._task = asyncio.create_task(self._run(), name=f"mqtt:{self.client_id}")

    async def close(self) -> None:
        """Send DISCONNECT, close the connection, stop reconnecting."""
        self._closing = True
        link = self._link
        if link is not None:
            link.write(encode(Disconnect(), MQTT_3_1_1))
            link.close()
        if self._task is not None:
            task, self._task = self._task, None
            with contextlib.suppress(asyncio.CancelledError, DeviceError, OSError):
                await asyncio.wait_for(task, 5)
        self._fail_waiting(NotConnected("the client is closed"))

    def drop(self) -> None:
        """Cut the connection without DISCONNECT (as a network loss would); it reconnects."""
        if self._link is not None and self._link.transport is not None:
            self._link.transport.abort()
        elif self._link is not None:
            self._link.close()

    @property
    def closing(self) -> bool:
        """Whether `close` was called (or the first login refused): no more reconnects."""
        return self._closing

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                link = await self._open()
            except LoginRefused as exc:
                if self._first is not None and not self._first.done():
                    self._first.set_exception(exc)
                    self._closing = True
                    return
                log.info("device %s: %s; retrying", self.client_id, exc)
            except (TimeoutError, OSError, CodecError, DeviceError) as exc:
                log.debug("device %s: cannot connect: %r", self.client_id, exc)
            except Exception as exc:  # websockets' handshake errors, and the like
                log.debug("device %s: cannot connect: %r", self.client_id, exc)
            else:
                attempt = 0
                await link.lost
                self._lost()
            if self.closing:
                return
            first, longest = self.backoff
            delay = min(longest, first * 2**attempt) * random.uniform(0.5, 1.0)
            attempt = min(attempt + 1, 20)
            await asyncio.sleep(delay)

    async def _open(self) -> Link:
        loop = asyncio.get_running_loop()
        ep = self.endpoint
        link: Link
        if ep.scheme in ("ws", "wss"):
            link = WsLink(self)
            await link.open(self.url, self.ssl_context, self.connect_timeout)
        else:
            link = Link(self)
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: link,
                    ep.host,
                    ep.port,
                    ssl=self.ssl_context if ep.secure else None,
                ),
                self.connect_timeout,
            )
        try:
            await self._handshake(link)
        except BaseException:
            link.close()
            raise
        return link

    async def _handshake(self, link: Link) -> None:
        password = self.password() if callable(self.password) else self.password
        self._connack = asyncio.get_running_loop().create_future()
        link.write(
            encode(
                Connect(
                    self.client_id,
                    MQTT_3_1_1,
                    True,
                    self.keepalive,
                    self.username,
                    None if password is None else password.encode(),
                ),
                MQTT_3_1_1,
            )
        )
        waiters: list[asyncio.Future[Any]] = [self._connack, link.lost]
        done, _ = await asyncio.wait(
            waiters, timeout=self.connect_timeout, return_when="FIRST_COMPLETED"
        )
        if self._connack not in done:
            raise NotConnected("no CONNACK" if not done else "connection closed before CONNACK")
        connack = self._connack.result()
        if connack.reason_code:
            raise LoginRefused(connack.reason_code)
        self._link = link
        self.connects += 1
        self._ping_due = False
        self._arm_ping()
        for pid, message in list(self._unacked.items()):  # left unacknowledged by the last one
            message.dup = True
            link.write(encode(message, MQTT_3_1_1))
            del pid
        if self.subscriptions:
            await self._subscribe_now(dict(self.subscriptions))
        for hook in list(self.on_connect):
            result = hook()
            if asyncio.iscoroutine(result):
                await result
        self.connected.set()
        if self._first is not None and not self._first.done():
            self._first.set_result(None)

    def _lost(self) -> None:
        self._link = None
        self.connected.clear()
        if self._ping is not None:
            self._ping.cancel()
        for pid, fut in list(self._acks.items()):
            if pid not in self._unacked and not fut.done():  # SUBACKs: subscribed again later
                fut.set_exception(NotConnected("connection lost"))
                del self._acks[pid]
        for hook in self.on_disconnect:
            hook()

    def _fail_waiting(self, exc: DeviceError) -> None:
        for fut in self._acks.values():
            if not fut.done():
                fut.set_exception(exc)
        self._acks.clear()
        self._unacked.clear()

    # ---------------------------------------------------------------- keepalive

    def _arm_ping(self) -> None:
        if self.keepalive:
            loop = asyncio.get_running_loop()
            self._ping = loop.call_later(self.keepalive * 0.75, self._ping_tick)

    def _ping_tick(self) -> None:
        link = self._link
        if link is None:
            return
        if self._ping_due:  # the last PINGREQ went unanswered: the server is gone
            self._ping_due = False
            self.drop()
            return
        self._ping_due = True
        link.write(encode(PingReq(), MQTT_3_1_1))
        self._arm_ping()

    # ---------------------------------------------------------------- packets in

    def packet(self, link: Link, packet: Packet) -> None:
        """One packet from the server, in order."""
        if isinstance(packet, Publish):
            if packet.qos == 1 and packet.packet_id is not None:
                link.write(encode_ack(PacketType.PUBACK, packet.packet_id))
            elif packet.qos == 2 and packet.packet_id is not None:
                link.write(encode_ack(PacketType.PUBREC, packet.packet_id))
            if self.on_message is not None:
                try:
                    self.on_message(packet.topic, packet.payload)
                except Exception:
                    log.exception("device %s: handling %s failed", self.client_id, packet.topic)
        elif isinstance(packet, PubAck):
            if packet.type == PacketType.PUBREL:
                link.write(encode_ack(PacketType.PUBCOMP, packet.packet_id))
            else:
                self._unacked.pop(packet.packet_id, None)
                self._resolve(packet.packet_id, packet.reason_code)
        elif isinstance(packet, Suback):
            self._resolve(packet.packet_id, packet.reason_codes)
        elif isinstance(packet, Connack):
            if self._connack is not None and not self._connack.done():
                self._connack.set_result(packet)
        else:  # PINGRESP; nothing else is sent to a 3.1.1 client
            self._ping_due = False

    def _resolve(self, pid: int, value: Any) -> None:
        fut = self._acks.pop(pid, None)
        if fut is not None and not fut.done():
            fut.set_result(value)

    # ---------------------------------------------------------------- packets out

    def _next_id(self) -> int:
        for _ in range(65535):
            self._ids = self._ids % 65535 + 1
            if self._ids not in self._acks:
                return self._ids
        raise DeviceError("65,535 packets await their acknowledgement")

    async def wait_connected(self, timeout: float) -> Link:
        if self._closing:
            raise NotConnected("the client is closed")
        if self._link is None or not self.connected.is_set():
            try:
                await asyncio.wait_for(self.connected.wait(), timeout)
            except TimeoutError:
                raise NotConnected(f"not connected within {timeout:g} s") from None
        assert self._link is not None
        return self._link

    async def publish(
        self, topic: str, payload: bytes | str, qos: int = 0, timeout: float = 30.0
    ) -> None:
        """Send a message; at QoS 1 return once the server acknowledged it (which, on
        ThingsHub, means stored). Waits up to `timeout` for a connection."""
        data = payload.encode() if isinstance(payload, str) else payload
        link = await self.wait_connected(timeout)
        if qos == 0:
            link.write(encode_publish(topic.encode(), data, 0, False, False, None, MQTT_3_1_1))
            return
        pid = self._next_id()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # A caller cancelled while waiting (shielded) leaves `fut` to `close`, which fails
        # it: marked retrieved, so asyncio logs no "exception was never retrieved".
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._acks[pid] = fut
        message = Publish(topic, data, 1, packet_id=pid)
        self._unacked[pid] = message
        link.write(encode(message, MQTT_3_1_1))
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            self._acks.pop(pid, None)
            self._unacked.pop(pid, None)
            raise NotConnected(f"no acknowledgement within {timeout:g} s") from None

    async def subscribe(self, *filters: str, qos: int = 1, timeout: float = 30.0) -> list[int]:
        """Subscribe (and remember the filters, to subscribe again after a reconnect);
        the SUBACK's return codes, one per filter (0x80: refused)."""
        new = {f: qos for f in filters}
        self.subscriptions.update(new)
        if self._link is None:
            return []  # sent with the others at the next connect
        await self.wait_connected(timeout)
        return await asyncio.wait_for(self._subscribe_now(new), timeout)

    async def _subscribe_now(self, filters: dict[str, int]) -> list[int]:
        assert self._link is not None
        pid = self._next_id()
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._acks[pid] = fut
        requests = [SubscriptionRequest(f, q) for f, q in filters.items()]
        self._link.write(encode(Subscribe(pid, requests), MQTT_3_1_1))
        codes = await fut
        refused = [f for f, code in zip(filters, codes, strict=False) if code >= 0x80]
        if refused:
            log.warning("device %s: subscription refused: %s", self.client_id, ", ".join(refused))
        return codes
