"""One client connection on asyncio: bytes in, packets to the server, bytes out.

Rules:
- The protocol state is the connection's `Machine` (mqtt/protocol): it judges
  each packet, orders the acknowledgements and tells when the client has
  timed out. This class reads the socket, feeds the codec and the machine,
  hands packets to the server (`Host`), writes what comes back and pauses or
  resumes reading.
- The first packet must be CONNECT, within `connect_timeout`; anything else
  closes the connection. Keepalive counts whole packets ([MQTT-3.1.2-24]: a
  Control Packet within 1.5x the keepalive), not bytes: a client trickling
  a packet byte by byte is silent until it completes, so it is dropped at
  its keepalive like a silent one (slowloris), and what it buffers meanwhile
  is bounded by `max_packet_size`. While the application authenticates, reading
  pauses; closing the connection meanwhile (the connect timeout) cancels
  its authentication.
- Output is coalesced: everything written during one turn of the event loop
  leaves in one `transport.write` (but the CONNACK, at once: `write_now`).
- A malformed or forbidden packet closes only this connection: a 5.0 client
  first gets a DISCONNECT with the reason code, a 3.1.1 client just a close.
- What a connected client publishes, and the order and timing of our
  acknowledgements, is inbound.py's; the PUBLISHes to it are outbound.py's;
  holding up publishers for slow subscribers is backpressure.py's. All are
  bases of `Connection`.
- Messages to the client: QoS 0 ones are dropped when the socket already holds
  `max_outgoing_buffer` bytes; QoS 1/2 ones wait in the session. Packets larger
  than the client's Maximum Packet Size are dropped, as 5.0 requires.
- Teardown runs exactly once, however the connection ends.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from thingshub.mqtt.codec.errors import CodecError, MalformedPacket, UnsupportedProtocolVersion
from thingshub.mqtt.codec.packets import (
    Auth,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PubAck,
    Publish,
    Subscribe,
    Unsubscribe,
)
from thingshub.mqtt.codec.parser import Reader
from thingshub.mqtt.codec.reasons import ReasonCode
from thingshub.mqtt.codec.writer import PINGRESP_BYTES
from thingshub.mqtt.hooks import ClientInfo, CloseReason
from thingshub.mqtt.logs import logger
from thingshub.mqtt.protocol.machine import (
    AUTHENTICATING,
    AWAITING_CONNECT,
    CLOSED,
    CONNECTED,
    Machine,
)
from thingshub.mqtt.server.backpressure import Backpressure
from thingshub.mqtt.server.inbound import Inbound, InboundHost
from thingshub.mqtt.server.outbound import Outbound

if TYPE_CHECKING:
    from thingshub.mqtt.server.session import Session

log = logger("thingshub.mqtt")

#: An object without its __init__ (`Connection.__init__` sets every slot).
_new = object.__new__

#: Seconds a connection stays half-closed after we sent DISCONNECT.
LINGER = 2.0

_PUBACK = PacketType.PUBACK
_PUBREC = PacketType.PUBREC
_PUBREL = PacketType.PUBREL


class Host(InboundHost, Protocol):
    """What a connection needs of the server (the `Broker`)."""

    @property
    def track_activity(self) -> bool: ...
    @property
    def active(self) -> list[Connection]: ...
    def register(self, conn: Connection) -> bool: ...
    def unregister(self, conn: Connection) -> None: ...
    def next_seq(self) -> int: ...
    def connect(self, conn: Connection, packet: Connect) -> None: ...
    def subscribe(self, conn: Connection, packet: Subscribe) -> None: ...
    def unsubscribe(self, conn: Connection, packet: Unsubscribe) -> None: ...
    def detach(self, conn: Connection, reason: CloseReason, *, send_will: bool) -> None: ...


class Connection(Inbound, Outbound, Backpressure, asyncio.Protocol):
    """One client's socket, from accept to close (an asyncio protocol)."""

    __slots__ = (
        "_address",
        "_paused",
        "_settling",
        "_wbuf",
        "_wbytes",
        "authenticating",
        "broker",
        "client",
        "enlisted",
        "machine",
        "reader",
        "seq",
        "session",
        "transport",
        "will",
    )

    broker: Host

    def __init__(self, broker: Host) -> None:
        # Backpressure.__init__ written out (the one base with state): no call per accept.
        self._held = None
        self._blocked = None
        self.write_paused = False
        self.stuck = False
        self.broker = broker
        self.transport: asyncio.Transport | None = None
        config = broker.config
        # Machine(config, 0.0) and Reader(None, max_packet_size) without their
        # __init__s (each a call through the type's slot, dearer than the stores).
        self.machine = machine = _new(Machine)
        machine.limits = config
        machine.state = AWAITING_CONNECT
        machine.version = 4
        machine.keepalive = 0
        machine.created = machine.last_rx = 0.0
        machine.extras = machine.acks = None
        self.reader = reader = _new(Reader)
        reader.buf = b""
        reader.pos = 0
        reader.version = None
        reader.max_packet_size = config.max_packet_size
        self.session: Session | None = None
        self.client: ClientInfo | None = None
        self.will: Connect | None = None
        self.seq = 0  # numbers CONNECTs as they arrive (takeover.py)
        self.authenticating: asyncio.Task[None] | None = None
        self.enlisted = False  # in broker.active since the last activity() call
        self._address: str | None = None
        # Packets written since the last flush; None when there are none, not
        # an empty list kept per connection (56 B of every idle one; lists
        # are made and freed from the interpreter's free list).
        self._wbuf: list[bytes] | None = None
        self._wbytes = 0
        self._settling = None  # no settlement waited for (inbound.py)
        self._paused = False  # reading paused: acknowledgements wait, or authentication

    @property
    def version(self) -> int:
        return self.machine.version

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
        machine = self.machine
        machine.created = machine.last_rx = self.broker.loop.time()
        if not self.broker.register(self):
            machine.close()
            self.transport.abort()  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        """Bytes from the socket, and the packets they complete handled at once
        (`_process` is this with b""): one Python call a read, with the reader's
        usual feed and the loop over the packets written out."""
        machine = self.machine
        state = machine.state
        if state is CLOSED:
            return  # lingering after a DISCONNECT: discard
        reader = self.reader
        if data:
            broker = self.broker
            broker.stats.bytes_in += len(data)
            if broker.track_activity and not self.enlisted:
                self.enlisted = True
                broker.active.append(self)
            if not reader.buf and type(data) is bytes:  # Reader.feed's usual case
                reader.buf = data
                reader.pos = 0
            else:
                reader.feed(data)
        if state is not CONNECTED and state is not AWAITING_CONNECT:
            return  # authenticating: what came waits in the reader
        heard = False
        packet: Packet | int | None
        acked: Session | None = None  # queue to pump once after a run of plain PUBACKs
        try:
            while True:
                if not reader.buf:  # all read: no call to be told so
                    break
                if self._paused or self._held is not None:
                    # What is buffered waits too (resuming handles it); held, more came:
                    # stop reading until the release (backpressure.py, `hold`).
                    if not self._paused and self.transport is not None:
                        self.transport.pause_reading()
                    break
                buf = reader.buf
                pos = reader.pos
                end = pos + 4
                # A plain PUBACK read in place, as next_item does: a QoS 1 subscriber's every
                # message (CONNECTED: max_packet_size is above 4 bytes, a CONNECT fit).
                if (
                    buf[pos] == 0x40
                    and end <= len(buf)
                    and buf[pos + 1] == 2
                    and state is CONNECTED
                ):
                    packet = (buf[pos + 2] << 8) | buf[pos + 3]
                    if not packet:
                        raise MalformedPacket("packet identifier 0")
                    if end == len(buf):
                        reader.buf = b""
                        reader.pos = 0
                    else:
                        reader.pos = end
                else:
                    packet = reader.next_item()
                    if packet is None:
                        break
                if not heard:  # a whole packet is what keeps a client alive, not a byte
                    heard = True
                    machine.last_rx = self.broker.loop.time()
                if state is CONNECTED:
                    if type(packet) is int:  # a plain PUBACK's id: ends a QoS 1 delivery
                        # Delivery.acked written out (a subscriber sends one per message).
                        session = self.session
                        assert session is not None
                        inflight = session.inflight
                        out = inflight.get(packet)
                        if out is not None and out.qos == 1:  # else unknown: nothing to do
                            del inflight[packet]
                            if session.queue:
                                acked = session
                        continue
                    if acked is not None:  # what the PUBACKs before it made room for
                        self.broker.delivery.pump(acked)
                        acked = None
                    if type(packet) is Publish:
                        self._on_publish(packet)
                    elif type(packet) is Disconnect:  # every client's last: no _dispatch
                        self._on_disconnect(packet)
                    else:
                        self._dispatch(packet)
                else:
                    connect = machine.receive_first(packet)
                    self.seq = self.broker.next_seq()
                    self.broker.connect(self, connect)
                state = machine.state
                if state is not CONNECTED:  # closed, or the CONNECT is being decided
                    break
        except UnsupportedProtocolVersion as exc:
            self._refuse_version(exc.level)
            return
        except CodecError as exc:
            if acked is not None:  # what those PUBACKs made room for goes before the close
                self.broker.delivery.pump(acked)
            self.protocol_error(exc.reason_code, str(exc))
            return
        if acked is not None:
            self.broker.delivery.pump(acked)

    def _process(self) -> None:
        """Handle what the reader holds (after a pause, a hold, an authentication)."""
        self.data_received(b"")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.authenticating is not None:
            self.authenticating.cancel()  # nobody is left to answer
        if self.machine.state is not CLOSED:  # else torn down already (a DISCONNECT)
            self.teardown(CloseReason.CONNECTION_LOST)
        self.broker.unregister(self)
        if self.client is not None:
            self.client.release_peer()

    def write(self, data: bytes) -> None:
        if self.machine.state is CLOSED:
            return
        buf = self._wbuf
        if buf is None:
            self._wbuf = [data]
            # Output.add written out: a window-1 publisher's every PUBACK comes this way.
            output = self.broker.output
            output.dirty.append(self)
            if not output.scheduled:
                output.scheduled = True
                output.loop.call_soon(output.flush_all)
        else:
            buf.append(data)
        self._wbytes += len(data)

    def write_now(self, data: bytes) -> None:
        """Write `data` at once, not at the loop's flush (a CONNACK: the client idles for it)."""
        if self._wbuf is not None:  # never before a CONNACK; if so, what waits goes first
            self.flush()
        if self.transport is not None and self.machine.state is not CLOSED:
            self.broker.stats.bytes_out += len(data)
            self.transport.write(data)

    def flush(self) -> None:
        buf = self._wbuf
        if buf is None or self.transport is None:
            return
        data = buf[0] if len(buf) == 1 else b"".join(buf)
        self._wbuf = None
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
        if self.machine.state is CLOSED:
            if reason is CloseReason.SHUTDOWN and self.transport is not None:
                self._shut(self.transport)
            return
        told = self.machine.disconnect(code) if code is not None else None
        if told is not None:
            self.write(told)
        self.flush()
        self.teardown(reason, send_will=send_will)
        transport = self.transport
        if transport is None:
            return
        if reason is CloseReason.SHUTDOWN:
            self._shut(transport)
        elif told is not None and transport.can_write_eof():
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
        state = self.machine.state
        if state is AWAITING_CONNECT or state is AUTHENTICATING:
            self.machine.close()
            if self.transport is not None:
                self.transport.abort()
            return
        self.close(CloseReason.PROTOCOL_ERROR, code)

    def check_timeout(self, now: float) -> None:
        """Close the connection if the machine says it has timed out at `now`."""
        code = self.machine.expired(now, reading=not self.paused)
        if code == ReasonCode.KEEP_ALIVE_TIMEOUT:
            log.info("keepalive expired for %s", self.client_id_for_log())
            self.close(CloseReason.KEEPALIVE_TIMEOUT, code)
        elif code is not None:
            self.protocol_error(code, "no CONNECT in time")

    def teardown(self, reason: CloseReason, *, send_will: bool = True) -> None:
        machine = self.machine
        state = machine.state
        if state is CLOSED:
            return
        machine.state = CLOSED  # Machine.close written out
        self._wbuf = None
        if self._blocked is not None:  # most connections hold nobody up: no call
            self._release_blocked()
        if state is CONNECTED:
            self.broker.detach(self, reason, send_will=send_will)

    def client_id_for_log(self) -> str:
        return self.client.client_id if self.client else self.address

    # ------------------------------------------------------------ reading

    def _dispatch(self, packet: object) -> None:
        kind = type(packet)
        if kind is PubAck:  # data_received takes a plain PUBACK itself
            assert isinstance(packet, PubAck) and self.session is not None
            ptype = packet.type
            if ptype == _PUBREC:
                self._on_pubrec(packet.packet_id, packet.reason_code)
            elif ptype == _PUBREL:
                self._on_pubrel(packet.packet_id)
            else:  # PUBCOMP, or a 5.0 PUBACK with a reason code or properties
                qos = 1 if ptype == _PUBACK else 2
                self.broker.delivery.acked(self.session, packet.packet_id, qos)
        elif kind is PingReq:
            self.write(PINGRESP_BYTES)
        elif kind is Subscribe:
            assert isinstance(packet, Subscribe)
            self.broker.subscribe(self, packet)
        elif kind is Unsubscribe:
            assert isinstance(packet, Unsubscribe)
            self.broker.unsubscribe(self, packet)
        elif kind is Connect:
            self.protocol_error(ReasonCode.PROTOCOL_ERROR, "second CONNECT")
        elif kind is Auth:
            self.protocol_error(ReasonCode.PROTOCOL_ERROR, "AUTH without an authentication method")
        else:
            self.protocol_error(ReasonCode.PROTOCOL_ERROR, f"{kind.__name__} from a client")

    def _refuse_version(self, level: int) -> None:
        self.broker.stats.protocol_errors += 1
        assert self.transport is not None
        self.machine.version = level
        self.transport.write(self.machine.refusal(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION))
        self.machine.close()
        self.transport.close()

    # ------------------------------------------------------------ CONNECT

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
        if self.transport is None or self.machine.state is CLOSED:
            return
        self.machine.close()
        if connack:
            self.transport.write(self.machine.refusal(code))
        self.transport.close()

    def activate(self) -> None:
        """CONNACK has been queued: start reading what the client sent after CONNECT."""
        self.machine.state = CONNECTED  # Machine.activate written out
        assert self.transport is not None
        if self._paused:
            self._paused = False
            self.transport.resume_reading()
        if self.reader.buf:
            self._process()

    # ------------------------------------------------------------ throttling

    @property
    def paused(self) -> bool:
        """Whether we have stopped reading from this client (it is throttled)."""
        return self._paused or self._held is not None

    def throttle(self) -> None:
        """Stop reading from this client until `unthrottle`: its acknowledgements wait."""
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()  # a held one's may not be paused yet (`hold`)

    def unthrottle(self) -> None:
        if self._paused and self.transport is not None and self.machine.state is CONNECTED:
            self._paused = False
            self.machine.last_rx = self.broker.loop.time()  # its silence while paused was ours
            if self._held is None:
                self.transport.resume_reading()
                if self.reader.buf:
                    self.broker.loop.call_soon(self._process)
