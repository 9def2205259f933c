"""Clients for the MQTT server tests.

- `PahoClient`: a real third-party client (paho-mqtt, callback API 2), for
  behaviour a conforming client sees. It records everything the server sends.
- `RawClient`: a socket speaking through our codec, for what paho will not
  send (malformed bytes, unacknowledged messages, topic aliases) and for
  byte-exact checks of what the server answers.

Nothing here waits by sleeping: every wait is on a condition with a timeout,
and a timeout fails the test with what was seen instead. To show that
something did *not* arrive, a test first makes a round trip that the server
answers after anything it sent earlier (`PahoClient.fence`, `RawClient.ping`):
the server handles a connection's packets in order, so once the answer is
back, anything that was coming has come.

Every client made here is closed by the `tests/mqtt/conftest.py` fixture after
each test, so a failing test leaves no threads or sockets behind.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar, cast

from paho.mqtt.client import (
    Client,
    ConnectFlags,
    DisconnectFlags,
    MQTTMessage,
    MQTTMessageInfo,
    MQTTv5,
    MQTTv311,
)
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.reasoncodes import ReasonCode as PahoReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from thingshub.mqtt.codec import (
    EMPTY,
    Connack,
    Connect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    Reader,
    Suback,
    Subscribe,
    SubscriptionRequest,
    Will,
    encode,
)
from thingshub.mqtt.codec.properties import Properties

#: Seconds any single wait may take before the test fails. Generous: it is
#: only reached when something is broken.
TIMEOUT = 5.0

HOST = "127.0.0.1"

P = TypeVar("P")

_live: list[Any] = []  # PahoClient, RawClient, tests/mqtt/wsclient.py's WsRawClient
_live_lock = threading.Lock()


def wait_until(predicate: Callable[[], object], timeout: float = TIMEOUT, what: str = "") -> None:
    """Poll `predicate` until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.002)


async def until(predicate: Callable[[], object], what: str = "", timeout: float = 10.0) -> None:
    """`wait_until` for a test that runs an event loop (the device SDK's): it polls
    with `asyncio.sleep`, so the loop keeps serving what the predicate waits for."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.02)


def track(client: Any) -> None:
    """Have `close_all` close `client` too (anything with a `close()`)."""
    with _live_lock:
        _live.append(client)


def close_all() -> None:
    """Close every client made by this module (the conftest fixture calls it)."""
    with _live_lock:
        clients = list(_live)
        _live.clear()
    for client in clients:
        client.close()


def paho_props(packet_type: int, values: Mapping[str, Any] | None) -> PahoProperties | None:
    """paho `Properties` from attribute names, e.g. `{"SessionExpiryInterval": 10}`."""
    if not values:
        return None
    props = PahoProperties(packet_type)
    for name, value in values.items():
        setattr(props, name, value)
    return props


def brief(message: MQTTMessage) -> tuple[str, bytes, int, bool]:
    """What most assertions compare: topic, payload, QoS, retain flag."""
    return message.topic, bytes(message.payload), message.qos, bool(message.retain)


# ------------------------------------------------------------ paho


class PahoClient:
    """A paho-mqtt client on its own network thread that records what it gets.

    It never reconnects by itself (a reconnect would hide what the server did),
    and each method that sends something waits for the server's answer. With
    `websocket`, it speaks MQTT over WebSocket to `ws://127.0.0.1:{port}/mqtt`.
    """

    def __init__(
        self,
        port: int,
        client_id: str = "",
        *,
        version: int = 5,
        clean: bool = True,
        keepalive: int = 60,
        properties: Mapping[str, Any] | None = None,
        will: tuple[str, bytes, int, bool] | None = None,
        will_properties: Mapping[str, Any] | None = None,
        username: str | None = None,
        password: str | None = None,
        connect: bool = True,
        websocket: bool = False,
    ) -> None:
        self.port = port
        self.client_id = client_id
        self.version = version
        self.clean = clean
        self.keepalive = keepalive
        self.properties = properties
        self.client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=None if version == 5 else clean,
            protocol=MQTTv5 if version == 5 else MQTTv311,
            reconnect_on_failure=False,
            transport="websockets" if websocket else "tcp",
        )
        if websocket:  # MQTT over WebSocket: `port` is the HTTP port
            self.client.ws_set_options(path="/mqtt")
        if will is not None:
            topic, payload, qos, retain = will
            self.client.will_set(
                topic, payload, qos, retain, paho_props(PacketTypes.WILLMESSAGE, will_properties)
            )
        if username is not None:
            self.client.username_pw_set(username, password)
        self._cond = threading.Condition()
        self.messages: list[MQTTMessage] = []
        self.connack_code: int | None = None
        self.session_present: bool | None = None
        self.connack_properties: PahoProperties | None = None
        #: Reason code of the disconnect paho reported, once the connection ended.
        self.disconnect_code: int | None = None
        #: Whether that end came with a DISCONNECT from the server.
        self.disconnect_from_server = False
        self._acks: dict[int, Any] = {}
        self._started = False
        c = self.client
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_unsubscribe = self._on_unsubscribe
        c.on_publish = self._on_publish
        with _live_lock:
            _live.append(self)
        if connect:
            self.connect()

    # ---------------------------------------------------------------- callbacks (paho thread)

    def _on_connect(
        self,
        _c: Client,
        _u: object,
        flags: ConnectFlags,
        reason: PahoReasonCode,
        props: PahoProperties | None,
    ) -> None:
        with self._cond:
            self.connack_code = reason.value
            self.session_present = flags.session_present
            self.connack_properties = props
            self._cond.notify_all()

    def _on_connect_fail(self, _c: Client, _u: object) -> None:
        with self._cond:
            self.disconnect_code = -1
            self._cond.notify_all()

    def _on_disconnect(
        self,
        _c: Client,
        _u: object,
        flags: DisconnectFlags,
        reason: PahoReasonCode,
        _props: PahoProperties | None,
    ) -> None:
        with self._cond:
            self.disconnect_code = reason.value
            self.disconnect_from_server = flags.is_disconnect_packet_from_server
            self._cond.notify_all()

    def _on_message(self, _c: Client, _u: object, message: MQTTMessage) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def _on_subscribe(
        self,
        _c: Client,
        _u: object,
        mid: int,
        codes: list[PahoReasonCode],
        _props: PahoProperties | None,
    ) -> None:
        with self._cond:
            self._acks[mid] = [code.value for code in codes]
            self._cond.notify_all()

    _on_unsubscribe = _on_subscribe

    def _on_publish(
        self,
        _c: Client,
        _u: object,
        mid: int,
        reason: PahoReasonCode,
        _props: PahoProperties | None,
    ) -> None:
        with self._cond:
            self._acks[mid] = reason.value
            self._cond.notify_all()

    # ---------------------------------------------------------------- waiting

    def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                seen = [(m.topic, m.payload[:20], m.qos) for m in self.messages]
                raise AssertionError(
                    f"{self.client_id or 'client'}: timed out after {timeout}s waiting for "
                    f"{what}; {len(seen)} message(s) so far, the last ones: {seen[-5:]}"
                )

    def _ack(self, mid: int, timeout: float, what: str) -> Any:
        self._wait(lambda: mid in self._acks, timeout, what)
        with self._cond:
            return self._acks.pop(mid)

    # ---------------------------------------------------------------- actions

    def connect(self, timeout: float = TIMEOUT) -> int:
        """Connect and wait for CONNACK; returns its reason code (0: accepted)."""
        kwargs: dict[str, Any] = {}
        if self.version == 5:
            kwargs["clean_start"] = self.clean
            kwargs["properties"] = paho_props(PacketTypes.CONNECT, self.properties)
        self.client.connect(HOST, self.port, self.keepalive, **kwargs)
        self._started = True
        self.client.loop_start()
        self._wait(
            lambda: self.connack_code is not None or self.disconnect_code is not None,
            timeout,
            "CONNACK",
        )
        assert self.connack_code is not None, f"no CONNACK (disconnect {self.disconnect_code})"
        return self.connack_code

    @property
    def assigned_client_id(self) -> str | None:
        return getattr(self.connack_properties, "AssignedClientIdentifier", None)

    def subscribe(
        self,
        *filters: str,
        qos: int = 0,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        sub_id: int | None = None,
        timeout: float = TIMEOUT,
    ) -> list[int]:
        """One SUBSCRIBE for `filters` with the same options; the SUBACK's codes."""
        if self.version == 5:
            options = SubscribeOptions(qos, no_local, retain_as_published, retain_handling)
            props = paho_props(
                PacketTypes.SUBSCRIBE,
                {"SubscriptionIdentifier": sub_id} if sub_id is not None else None,
            )
            rc, mid = self.client.subscribe([(f, options) for f in filters], properties=props)
        else:
            rc, mid = self.client.subscribe([(f, qos) for f in filters])
        assert rc == 0 and mid is not None, f"subscribe failed locally: {rc}"
        codes: list[int] = self._ack(mid, timeout, f"SUBACK for {filters}")
        return codes

    def unsubscribe(self, *filters: str, timeout: float = TIMEOUT) -> list[int]:
        """One UNSUBSCRIBE; the UNSUBACK's codes (none for 3.1.1)."""
        rc, mid = self.client.unsubscribe(list(filters))
        assert rc == 0 and mid is not None, f"unsubscribe failed locally: {rc}"
        codes: list[int] = self._ack(mid, timeout, f"UNSUBACK for {filters}")
        return codes

    def publish(
        self,
        topic: str,
        payload: bytes = b"",
        qos: int = 0,
        retain: bool = False,
        properties: Mapping[str, Any] | None = None,
        timeout: float = TIMEOUT,
    ) -> int:
        """Publish and wait until paho is done with it (sent for QoS 0, PUBACK for
        QoS 1, PUBCOMP for QoS 2); returns the acknowledgement's reason code."""
        info: MQTTMessageInfo = self.client.publish(
            topic, payload, qos, retain, paho_props(PacketTypes.PUBLISH, properties)
        )
        assert info.rc == 0, f"publish failed locally: {info.rc}"
        code: int = self._ack(info.mid, timeout, f"acknowledgement of {topic!r}")
        return code

    def fence(self, timeout: float = TIMEOUT) -> None:
        """A round trip through the server (UNSUBSCRIBE of a filter we never had,
        which no hook sees): afterwards, everything the server had already sent
        to this client has been received. Not for QoS 2 deliveries: paho hands
        those over only at PUBREL, one more round trip later."""
        self.unsubscribe("$fence/never-subscribed", timeout=timeout)

    def wait_messages(self, count: int, timeout: float = TIMEOUT) -> list[MQTTMessage]:
        """Wait until `count` messages have arrived in all; returns all of them."""
        self._wait(lambda: len(self.messages) >= count, timeout, f"{count} message(s)")
        with self._cond:
            return list(self.messages)

    def wait_disconnected(self, timeout: float = TIMEOUT) -> int:
        """Wait until the connection has ended; the reason code paho reported."""
        self._wait(lambda: self.disconnect_code is not None, timeout, "the connection to end")
        assert self.disconnect_code is not None
        return self.disconnect_code

    def disconnect(
        self, reason_code: int | None = None, properties: Mapping[str, Any] | None = None
    ) -> None:
        """A normal DISCONNECT (with a 5.0 reason code and properties if given)."""
        rc = PahoReasonCode(PacketTypes.DISCONNECT, identifier=reason_code) if reason_code else None
        self.client.disconnect(rc, paho_props(PacketTypes.DISCONNECT, properties))
        self.wait_disconnected()
        self.client.loop_stop()

    def drop(self) -> None:
        """Lose the connection without DISCONNECT, as a network failure would."""
        sock = cast(socket.socket | None, self.client.socket())
        assert sock is not None, "not connected"
        sock.shutdown(socket.SHUT_RDWR)
        self.wait_disconnected()
        self.client.loop_stop()

    def close(self) -> None:
        if not self._started:
            return
        self._started = False
        if self.disconnect_code is None:
            self.client.disconnect()
        self.client.loop_stop()


# ------------------------------------------------------------ raw sockets


class ConnectionClosed(Exception):
    """The server closed the connection (EOF or reset)."""


async def stream_packets(stream: asyncio.StreamReader, version: int = 4) -> AsyncIterator[Packet]:
    """The packets on an asyncio stream, read through our codec as `RawClient.recv`
    reads a socket: for the server's side of a scripted connection. Ends when the
    peer closes."""
    reader = Reader(version)
    while data := await stream.read(65536):
        reader.feed(data)
        while (packet := reader.next_packet()) is not None:
            yield packet


class RawClient:
    """A TCP connection to the server that sends and reads packets through our codec.

    `version` is the protocol level the replies are parsed with; `connect`
    sends a CONNECT at that level. `source` is the local address to connect
    from (another loopback address, e.g. 127.0.0.2, is another client host).
    """

    def __init__(
        self, port: int, version: int = 5, *, rcvbuf: int | None = None, source: str | None = None
    ) -> None:
        self.version = version
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source is not None:
            sock.bind((source, 0))
        sock.settimeout(TIMEOUT)
        sock.connect((HOST, port))
        self.sock = sock
        self.reader = Reader(version)
        self.closed = False
        with _live_lock:
            _live.append(self)

    # ---------------------------------------------------------------- sending

    def send(self, *packets: Packet) -> None:
        self.send_bytes(b"".join(encode(p, self.version) for p in packets))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def connect(
        self,
        client_id: str = "raw",
        *,
        clean: bool = True,
        keepalive: int = 0,
        will: Will | None = None,
        properties: Properties = EMPTY,
        username: str | None = None,
        password: bytes | None = None,
    ) -> Connack:
        """Send CONNECT and return the CONNACK (whatever its code)."""
        self.send(
            Connect(
                client_id,
                self.version,
                clean,
                keepalive,
                username,
                password,
                will,
                properties if self.version == 5 else EMPTY,
            )
        )
        return self.expect(Connack)

    def subscribe(
        self, *filters: str, qos: int = 0, packet_id: int = 1, properties: Properties = EMPTY
    ) -> list[int]:
        """SUBSCRIBE and return the SUBACK's codes; fails on any other packet first."""
        reqs = [SubscriptionRequest(f, qos) for f in filters]
        self.send(Subscribe(packet_id, reqs, properties))
        suback = self.expect(Suback)
        assert suback.packet_id == packet_id
        return suback.reason_codes

    def ack(self, publish: Publish) -> None:
        """PUBACK or PUBREC a received QoS 1/2 PUBLISH."""
        assert publish.packet_id is not None
        kind = PacketType.PUBACK if publish.qos == 1 else PacketType.PUBREC
        self.send(PubAck(kind, publish.packet_id))

    # ---------------------------------------------------------------- reading

    def recv(self, timeout: float = TIMEOUT) -> Packet:
        """The next packet from the server; TimeoutError or ConnectionClosed otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            packet = self.reader.next_packet()
            if packet is not None:
                return packet
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no packet from the server within {timeout}s")
            try:
                data = self.read(remaining)
            except TimeoutError:
                continue
            self.reader.feed(data)

    def read(self, timeout: float) -> bytes:
        """Some bytes from the server; TimeoutError, or ConnectionClosed at its end."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError as exc:
            raise ConnectionClosed("connection reset") from exc
        if not data:
            raise ConnectionClosed("the server closed the connection")
        return data

    def expect(self, kind: type[P], timeout: float = TIMEOUT) -> P:
        """The next packet, which must be a `kind`."""
        packet = self.recv(timeout)
        assert isinstance(packet, kind), f"expected {kind.__name__}, got {packet!r}"
        return packet

    def ping(self, timeout: float = TIMEOUT) -> list[Packet]:
        """PINGREQ, and every packet that arrived before its PINGRESP: a fence that
        shows what the server had sent by then."""
        self.send(PingReq())
        before: list[Packet] = []
        while True:
            packet = self.recv(timeout)
            if isinstance(packet, PingResp):
                return before
            before.append(packet)

    def wait_closed(self, timeout: float = TIMEOUT) -> list[Packet]:
        """Read until the server closes the connection; the packets it sent first.
        Fails if the connection is still open after `timeout` seconds."""
        packets: list[Packet] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                packets.append(self.recv(max(deadline - time.monotonic(), 0.001)))
            except ConnectionClosed:
                return packets
            except TimeoutError as exc:
                raise AssertionError(
                    f"connection still open after {timeout}s; received {packets!r}"
                ) from exc

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()
