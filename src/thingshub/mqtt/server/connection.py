"""One client connection: bytes in, packets dispatched, bytes out.

Rules:
- The first packet must be CONNECT, within `connect_timeout`; anything else
  closes the connection. While the application authenticates, reading
  pauses; closing the connection meanwhile (the connect timeout) cancels
  its authentication.
- Output is coalesced: everything written during one turn of the event loop
  leaves in one `transport.write`, which is what makes small packets cheap.
- A malformed or forbidden packet closes only this connection: a 5.0 client
  first gets a DISCONNECT with the reason code, a 3.1.1 client just a close.
- Acknowledgements of QoS 1/2 PUBLISHes leave in arrival order, each only once
  the application has finished with its message (see hooks.py). While more
  than `receive_maximum` of them wait, reading from this client pauses; a 5.0
  client that exceeds the Receive Maximum it was given is disconnected (0x93).
  While more than `max_waiting_acks` wait across all clients, reading pauses
  for every client that adds one, until half of them are done.
- Messages to the client: QoS 0 ones are dropped when the socket already holds
  `max_outgoing_buffer` bytes; QoS 1/2 ones wait in the session. Packets larger
  than the client's Maximum Packet Size are dropped, as 5.0 requires.
- Teardown runs exactly once, however the connection ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from typing import TYPE_CHECKING

from thingshub.mqtt.codec.errors import CodecError, UnsupportedProtocolVersion
from thingshub.mqtt.codec.packets import (
    MQTT_5,
    Auth,
    Connack,
    Connect,
    Disconnect,
    PacketType,
    PingReq,
    PubAck,
    Publish,
    Subscribe,
    Unsubscribe,
)
from thingshub.mqtt.codec.parser import Reader
from thingshub.mqtt.codec.properties import EMPTY, Properties, encode_properties
from thingshub.mqtt.codec.reasons import ReasonCode, connack_code_v3
from thingshub.mqtt.codec.writer import PINGRESP_BYTES, encode, encode_ack, encode_publish
from thingshub.mqtt.hooks import ClientInfo, CloseReason, Message
from thingshub.mqtt.logs import logger
from thingshub.mqtt.topics import valid_topic_name

if TYPE_CHECKING:
    from thingshub.mqtt.server.broker import Broker
    from thingshub.mqtt.server.retained import RetainedMessage
    from thingshub.mqtt.server.session import OutMessage, Session

log = logger("thingshub.mqtt")

NEW, AUTHENTICATING, ACTIVE, CLOSED = range(4)

#: Seconds a connection stays half-closed after we sent DISCONNECT.
LINGER = 2.0

_PUBACK = PacketType.PUBACK
_PUBREC = PacketType.PUBREC
_PUBREL = PacketType.PUBREL
_PUBCOMP = PacketType.PUBCOMP


class Connection(asyncio.Protocol):
    __slots__ = (
        "_acks",
        "_address",
        "_aliases_in",
        "_aliases_out",
        "_blocked",
        "_held",
        "_paused",
        "_wbuf",
        "_wbytes",
        "alias_max_out",
        "authenticating",
        "broker",
        "client",
        "created",
        "enlisted",
        "keepalive",
        "last_rx",
        "max_packet_out",
        "reader",
        "seq",
        "session",
        "state",
        "stuck",
        "transport",
        "version",
        "will",
        "write_paused",
    )

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.transport: asyncio.Transport | None = None
        self.state = NEW
        self.version = 4
        self.reader = Reader(None, broker.config.max_packet_size)
        self.session: Session | None = None
        self.client: ClientInfo | None = None
        self.will: Connect | None = None
        self.keepalive = 0
        self.seq = 0  # numbers CONNECTs as they arrive (takeover.py)
        self.authenticating: asyncio.Task[None] | None = None
        self.enlisted = False  # in broker.active since the last activity() call
        self._address: str | None = None
        self.created = self.last_rx = 0.0
        self.max_packet_out = 0
        self.alias_max_out = 0
        # Containers below are made when first needed: 10,000 idle connections
        # should cost little memory.
        self._aliases_out: dict[str, int] | None = None
        self._aliases_in: dict[int, str] | None = None
        self._wbuf: list[bytes] = []
        self._wbytes = 0
        # [packet id, PUBACK or PUBREC, reason code or None while pending]
        self._acks: deque[list[int | None]] | None = None
        self._paused = False  # reading paused: acknowledgements wait, or authentication
        # Reading paused because a client we publish to cannot keep up: the timer
        # that gives up waiting for it after `max_hold`.
        self._held: asyncio.TimerHandle | None = None
        self.write_paused = False  # our socket buffer is above the high-water mark
        self.stuck = False  # we held a publisher up for `max_hold` and did not drain
        self._blocked: list[Connection] | None = None  # publishers held because of us

    # ------------------------------------------------------------------ I/O

    @property
    def address(self) -> str:
        """The peer's "host:port", looked up only when someone asks (a syscall)."""
        if self._address is None:
            peer = self.transport.get_extra_info("peername") if self.transport else None
            self._address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        return self._address

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        config = self.broker.config
        high = min(config.write_high_water, config.max_outgoing_buffer)
        transport.set_write_buffer_limits(high=high, low=high // 4)  # type: ignore[attr-defined]
        self.created = self.last_rx = self.broker.loop.time()
        if not self.broker._register(self):
            self.state = CLOSED
            self.transport.abort()  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if self.state == CLOSED:
            return  # lingering after a DISCONNECT: discard
        broker = self.broker
        self.last_rx = broker.loop.time()
        broker.stats.bytes_in += len(data)
        if broker.track_activity and not self.enlisted:
            self.enlisted = True
            broker.active.append(self)
        self.reader.feed(data)
        if self.state in (ACTIVE, NEW):
            self._process()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost does the rest

    def connection_lost(self, exc: Exception | None) -> None:
        if self.authenticating is not None:
            self.authenticating.cancel()  # nobody is left to answer
        self.teardown(CloseReason.CONNECTION_LOST)
        self.broker._unregister(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._caught_up()

    def queue_drained(self) -> None:
        """The session's queue emptied: the publishers it held may go on, unless
        the socket itself is still full."""
        if not self.write_paused:
            self._caught_up()

    def _caught_up(self) -> None:
        """We drained: release the publishers we held up, and hold them up again
        next time we fall behind."""
        self.stuck = False
        self._release_blocked()

    def _release_blocked(self) -> None:
        blocked = self._blocked
        self._blocked = None
        for publisher in blocked or ():
            publisher.release()

    def hold(self, slow: Connection) -> None:
        """Stop reading from this (publishing) client until `slow`, a client we
        deliver to, has drained its socket buffer or its queue of QoS 1/2
        messages: backpressure instead of buffering without bound. A `slow` that
        has not drained after `max_hold` seconds is `stuck`: it holds nobody up
        again until it drains."""
        if self._held is not None or self.transport is None or self.state != ACTIVE:
            return
        if slow._blocked is None:
            slow._blocked = []
        slow._blocked.append(self)
        if not self._paused:
            self.transport.pause_reading()
        self._held = self.broker.loop.call_later(
            self.broker.config.max_hold, self._hold_expired, slow
        )

    def _hold_expired(self, slow: Connection) -> None:
        # Only ever the timer of the current hold: a release cancels it.
        if slow._blocked is not None and self in slow._blocked:
            slow.stuck = True
            slow._blocked.remove(self)
        self.release()

    def release(self) -> None:
        if self._held is None:
            return
        self._held.cancel()
        self._held = None
        if not self._paused and self.transport is not None and self.state == ACTIVE:
            self.last_rx = self.broker.loop.time()  # its silence while held was ours
            self.transport.resume_reading()
            self._process_later()

    def write(self, data: bytes) -> None:
        if self.state == CLOSED:
            return
        if not self._wbuf:
            self.broker._dirty.append(self)
            if not self.broker._flush_scheduled:
                self.broker._flush_scheduled = True
                self.broker.loop.call_soon(self.broker._flush_all)
        self._wbuf.append(data)
        self._wbytes += len(data)

    def flush(self) -> None:
        buf = self._wbuf
        if not buf or self.transport is None:
            return
        data = buf[0] if len(buf) == 1 else b"".join(buf)
        buf.clear()
        self._wbytes = 0
        self.broker.stats.bytes_out += len(data)
        self.transport.write(data)

    def buffered_out(self) -> int:
        assert self.transport is not None
        return self.transport.get_write_buffer_size() + self._wbytes

    # ------------------------------------------------------------ closing

    def close(
        self, reason: CloseReason, code: int | None = None, *, send_will: bool = True
    ) -> None:
        """End the connection: a DISCONNECT with `code` first for a 5.0 client.

        After a DISCONNECT we only half-close and keep discarding input for
        `LINGER` seconds: a client still sending (acks in flight) would
        otherwise get a reset before it has read why it was disconnected.
        A shutdown waits for nobody: it also ends a lingering transport, and
        drops what a client that is not reading has left in its buffer.
        """
        if self.state == CLOSED:
            if reason is CloseReason.SHUTDOWN and self.transport is not None:
                self._shut(self.transport)
            return
        told = code is not None and self.version == MQTT_5 and self.state == ACTIVE
        if told:
            self.write(encode(Disconnect(code), MQTT_5))  # type: ignore[arg-type]
        self.flush()
        self.teardown(reason, send_will=send_will)
        transport = self.transport
        if transport is None:
            return
        if reason is CloseReason.SHUTDOWN:
            self._shut(transport)
        elif told and transport.can_write_eof():
            transport.write_eof()
            self.broker.loop.call_later(LINGER, transport.close)
        else:
            transport.close()

    @staticmethod
    def _shut(transport: asyncio.Transport) -> None:
        if transport.get_write_buffer_size():
            transport.abort()  # it would never drain: the client is not reading
        else:
            transport.close()

    def protocol_error(self, code: int, detail: str) -> None:
        self.broker.stats.protocol_errors += 1
        log.info("closing %s (%s): %s", self.client_id_for_log(), hex(code), detail)
        if self.state in (NEW, AUTHENTICATING):
            self.state = CLOSED
            if self.transport is not None:
                self.transport.abort()
            return
        self.close(CloseReason.PROTOCOL_ERROR, code)

    def teardown(self, reason: CloseReason, *, send_will: bool = True) -> None:
        if self.state == CLOSED:
            return
        was_active = self.state == ACTIVE
        self.state = CLOSED
        self._wbuf.clear()
        self._release_blocked()
        if was_active:
            self.broker._detach(self, reason, send_will=send_will)

    def client_id_for_log(self) -> str:
        return self.client.client_id if self.client else self.address

    # ------------------------------------------------------------ reading

    def _process(self) -> None:
        reader = self.reader
        try:
            while self.state in (ACTIVE, NEW):
                if self._paused or self._held is not None:
                    return  # what is already buffered waits too: resuming processes it
                packet = reader.next_packet()
                if packet is None:
                    return
                if self.state == ACTIVE:
                    if type(packet) is Publish:
                        self._on_publish(packet)
                    elif type(packet) is PubAck and packet.type == _PUBACK:
                        # The hot one after PUBLISH: every QoS 1 delivery ends with it.
                        assert self.session is not None
                        self.broker.delivery.acked(self.session, packet.packet_id, 1)
                    else:
                        self._dispatch(packet)
                elif type(packet) is Publish:
                    self.protocol_error(ReasonCode.PROTOCOL_ERROR, "PUBLISH before CONNECT")
                    return
                elif type(packet) is Connect:
                    self._on_connect(packet)
                else:
                    self.protocol_error(ReasonCode.PROTOCOL_ERROR, "first packet is not CONNECT")
                    return
        except UnsupportedProtocolVersion as exc:
            self._refuse_version(exc.level)
        except CodecError as exc:
            self.protocol_error(exc.reason_code, str(exc))

    def _dispatch(self, packet: object) -> None:
        kind = type(packet)
        if kind is PubAck:  # PUBREC, PUBREL, PUBCOMP: _process takes PUBACK itself
            assert isinstance(packet, PubAck) and self.session is not None
            ptype = packet.type
            if ptype == _PUBREC:
                self.broker._on_pubrec(self, packet.packet_id, packet.reason_code)
            elif ptype == _PUBREL:
                self._on_pubrel(packet.packet_id)
            else:
                self.broker.delivery.acked(self.session, packet.packet_id, 2)
        elif kind is PingReq:
            self.write(PINGRESP_BYTES)
        elif kind is Subscribe:
            assert isinstance(packet, Subscribe)
            self.broker._on_subscribe(self, packet)
        elif kind is Unsubscribe:
            assert isinstance(packet, Unsubscribe)
            self.broker._on_unsubscribe(self, packet)
        elif kind is Disconnect:
            assert isinstance(packet, Disconnect)
            self._on_disconnect(packet)
        elif kind is Connect:
            self.protocol_error(ReasonCode.PROTOCOL_ERROR, "second CONNECT")
        elif kind is Auth:
            self.protocol_error(ReasonCode.PROTOCOL_ERROR, "AUTH without an authentication method")
        else:
            self.protocol_error(ReasonCode.PROTOCOL_ERROR, f"{kind.__name__} from a client")

    def _refuse_version(self, level: int) -> None:
        self.broker.stats.protocol_errors += 1
        assert self.transport is not None
        if level == MQTT_5:
            self.transport.write(encode(Connack(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION), MQTT_5))
        else:
            self.transport.write(encode(Connack(1), 4))
        self.state = CLOSED
        self.transport.close()

    # ------------------------------------------------------------ CONNECT

    def _on_connect(self, packet: Connect) -> None:
        self.state = AUTHENTICATING
        self.version = packet.protocol_level
        self.seq = next(self.broker.takeover.seqs)
        self.broker._connect(self, packet)

    def wait_for_authentication(self) -> None:
        """The application is looking the client up: read nothing more until it answers."""
        assert self.transport is not None
        self._paused = True
        self.transport.pause_reading()

    def refuse(self, code: int, detail: str = "", *, connack: bool = True) -> None:
        """Answer CONNECT with a refusing CONNACK and close (without CONNACK if not `connack`)."""
        self.broker.stats.connects_refused += 1
        if detail:
            log.info("refused %s: %s", self.address, detail)
        if self.transport is None or self.state == CLOSED:
            return
        self.state = CLOSED
        if connack:
            v5 = self.version == MQTT_5
            reply = Connack(code if v5 else connack_code_v3(code))
            self.transport.write(encode(reply, self.version))
        self.transport.close()

    def activate(self) -> None:
        """CONNACK has been queued: start reading what the client sent after CONNECT."""
        self.state = ACTIVE
        assert self.transport is not None
        if self._paused:
            self._paused = False
            self.transport.resume_reading()
        if self.reader.buffered:
            self._process()

    # ------------------------------------------------------------ PUBLISH in

    def _on_publish(self, packet: Publish) -> None:
        broker = self.broker
        session = self.session
        client = self.client
        assert session is not None and client is not None
        broker.stats.messages_in += 1
        qos = packet.qos
        topic = packet.topic
        props = packet.properties
        if self.version == MQTT_5 and props is not EMPTY:
            if props.topic_alias is not None:
                alias = props.topic_alias
                if alias == 0 or alias > broker.config.topic_alias_maximum:
                    self.protocol_error(ReasonCode.TOPIC_ALIAS_INVALID, f"topic alias {alias}")
                    return
                if topic:
                    if self._aliases_in is None:
                        self._aliases_in = {}
                    self._aliases_in[alias] = topic
                else:
                    found = self._aliases_in.get(alias) if self._aliases_in else None
                    if found is None:
                        self.protocol_error(
                            ReasonCode.PROTOCOL_ERROR, f"unknown topic alias {alias}"
                        )
                        return
                    topic = found
                props = dataclasses.replace(props, topic_alias=None)
            if props.subscription_identifiers:
                self.protocol_error(ReasonCode.PROTOCOL_ERROR, "subscription identifier in PUBLISH")
                return
        if not valid_topic_name(topic):
            if not topic:  # 5.0: an empty topic without an alias is a protocol error
                self.protocol_error(ReasonCode.PROTOCOL_ERROR, "empty topic without an alias")
            else:
                self.protocol_error(ReasonCode.TOPIC_NAME_INVALID, f"invalid topic {topic!r}")
            return
        if qos:
            pid = packet.packet_id
            assert pid is not None
            if qos == 2 and session.qos2_received(pid):
                # A resent QoS 2 message we already have: acknowledge, deliver nothing.
                self._queue_ack(pid, _PUBREC, 0)
                return
            receive_maximum = broker.config.receive_maximum
            if self.version == MQTT_5:
                # Receive Maximum counts a QoS 2 message until its PUBCOMP.
                if self._pending_acks() + session.qos2_count() >= receive_maximum:
                    self.protocol_error(ReasonCode.RECEIVE_MAXIMUM_EXCEEDED, "receive maximum")
                    return
            elif self._pending_acks() >= receive_maximum:
                # Only acks waiting for the application: a QoS 2 message waiting
                # for its PUBREL waits for the client, which we must keep reading.
                self._pause()
        message = Message(topic, packet.payload, qos, packet.retain, props)
        if props is not EMPTY and props.message_expiry_interval is not None:
            message.expires_at = broker.loop.time() + props.message_expiry_interval
        delivery = broker.delivery
        delivery.current = self  # so a slow subscriber can hold up this publisher
        try:
            outcome = broker._incoming(client, message, session)
        finally:
            delivery.current = None
        if not qos:
            return
        pid = packet.packet_id
        assert pid is not None  # for mypy: qos > 0 here
        ack_type = _PUBACK if qos == 1 else _PUBREC
        if qos == 2:
            session.qos2_add(pid)
        if outcome is None or isinstance(outcome, int):
            self._queue_ack(pid, ack_type, outcome or 0)
        else:
            entry: list[int | None] = [pid, ack_type, None]
            if self._acks is None:
                self._acks = deque()
            self._acks.append(entry)
            outcome.add_done_callback(lambda fut: self._ack_done(entry, fut))
            broker.waiting_acks += 1
            if broker.waiting_acks > broker.config.max_waiting_acks:
                # The application is behind (its write queue is full): read no more
                # from anyone who adds to it until it catches up.
                self._pause()
                broker.starved.append(self)

    def _queue_ack(self, pid: int, ack_type: int, code: int) -> None:
        if not self._acks:
            self._send_ack(pid, ack_type, code)
        else:
            self._acks.append([pid, ack_type, code])

    def _pending_acks(self) -> int:
        return len(self._acks) if self._acks is not None else 0

    def _send_ack(self, pid: int, ack_type: int, code: int) -> None:
        if self.version == MQTT_5 and code:
            self.write(encode(PubAck(PacketType(ack_type), pid, code), MQTT_5))
            if ack_type == _PUBREC and code >= 0x80:
                assert self.session is not None
                self.session.qos2_release(pid)
        else:
            self.write(encode_ack(ack_type, pid))

    def _ack_done(self, entry: list[int | None], fut: asyncio.Future[int]) -> None:
        broker = self.broker
        broker.waiting_acks -= 1
        if broker.starved and broker.waiting_acks <= broker.config.max_waiting_acks // 2:
            starved = broker.starved
            broker.starved = []
            for conn in starved:
                conn._resume()
        if self.state == CLOSED:
            return
        if fut.cancelled() or fut.exception() is not None:
            if not fut.cancelled():
                log.error(
                    "handling a message from %s failed",
                    self.client_id_for_log(),
                    exc_info=fut.exception(),
                )
            if self.version != MQTT_5:
                # No way to say "failed" in 3.1.1: close unacknowledged, so the client resends.
                self.close(CloseReason.PROTOCOL_ERROR, send_will=True)
                return
            entry[2] = ReasonCode.UNSPECIFIED_ERROR
        else:
            entry[2] = fut.result() or 0
        acks = self._acks
        assert acks is not None
        while acks and acks[0][2] is not None:
            pid, ack_type, code = acks.popleft()
            self._send_ack(pid, ack_type, code)  # type: ignore[arg-type]
        remaining = len(acks)
        if not remaining:
            self._acks = None
        if self._paused and remaining <= self.broker.config.receive_maximum // 2:
            self._resume()

    def _process_later(self) -> None:
        if self.reader.buffered:
            self.broker.loop.call_soon(self._process)

    @property
    def paused(self) -> bool:
        """Whether we have stopped reading from this client (it is throttled)."""
        return self._paused or self._held is not None

    def _pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            if self._held is None:
                self.transport.pause_reading()

    def _resume(self) -> None:
        if self._paused and self.transport is not None and self.state == ACTIVE:
            self._paused = False
            self.last_rx = self.broker.loop.time()  # its silence while paused was ours
            if self._held is None:
                self.transport.resume_reading()
                self._process_later()

    def _on_pubrel(self, pid: int) -> None:
        session = self.session
        assert session is not None
        if session.qos2_release(pid):
            self.write(encode_ack(_PUBCOMP, pid))
        elif self.version == MQTT_5:
            self.write(
                encode(PubAck(_PUBCOMP, pid, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND), MQTT_5)
            )
        else:
            self.write(encode_ack(_PUBCOMP, pid))

    def _on_disconnect(self, packet: Disconnect) -> None:
        session = self.session
        assert session is not None
        if self.version == MQTT_5:
            expiry = packet.properties.session_expiry_interval
            if expiry is not None:
                if session.expiry_interval == 0 and expiry != 0:
                    self.protocol_error(
                        ReasonCode.PROTOCOL_ERROR, "session expiry set on DISCONNECT"
                    )
                    return
                session.expiry_interval = min(expiry, self.broker.config.max_session_expiry)
        send_will = self.version == MQTT_5 and packet.reason_code == ReasonCode.DISCONNECT_WITH_WILL
        self.teardown(CloseReason.CLIENT_DISCONNECT, send_will=send_will)
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------ PUBLISH out

    def send_publish(
        self,
        msg: Message | OutMessage | RetainedMessage,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        packet_id: int | None,
        dup: bool = False,
    ) -> bool:
        """Encode and queue one PUBLISH to this client; False if it had to be dropped."""
        topic = msg.topic
        topic_b = topic.encode()
        props_bytes = b""
        new_alias = 0
        if self.version == MQTT_5:
            props = msg.properties
            if sub_ids or msg.expires_at is not None:
                changed = self._outgoing_props(msg, props, sub_ids)
                if changed is None:
                    self.broker.stats.dropped_expired += 1
                    return False
                props = changed
            if self.alias_max_out:
                if self._aliases_out is None:
                    self._aliases_out = {}
                alias = self._aliases_out.get(topic)
                if alias is not None:
                    topic_b = b""
                elif len(self._aliases_out) < self.alias_max_out:
                    alias = new_alias = len(self._aliases_out) + 1
                if alias is not None:
                    props = dataclasses.replace(props, topic_alias=alias)
            props_bytes = encode_properties(props)
        data = encode_publish(
            topic_b, msg.payload, qos, retain, dup, packet_id, self.version, props_bytes
        )
        if self.max_packet_out and len(data) > self.max_packet_out:
            self.broker.stats.dropped_too_large += 1
            return False
        if new_alias:
            assert self._aliases_out is not None
            self._aliases_out[topic] = new_alias
        self.write(data)
        self.broker.stats.messages_out += 1
        return True

    def _outgoing_props(
        self,
        msg: Message | OutMessage | RetainedMessage,
        props: Properties,
        sub_ids: tuple[int, ...],
    ) -> Properties | None:
        """The publisher's properties plus this delivery's subscription ids and the
        remaining expiry; None when the message has expired."""
        expiry = props.message_expiry_interval
        if msg.expires_at is not None:
            remaining = msg.expires_at - self.broker.loop.time()
            if remaining <= 0:
                return None
            expiry = max(1, round(remaining))
        return dataclasses.replace(
            props,
            subscription_identifiers=sub_ids,
            message_expiry_interval=expiry,
        )

    def send_pubrel(self, packet_id: int) -> None:
        self.write(encode_ack(_PUBREL, packet_id))
