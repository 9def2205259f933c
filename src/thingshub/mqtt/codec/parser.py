"""Incremental parsing of MQTT packets from a byte stream.

Rules:
- `Reader.feed` takes whatever the socket gave; `Reader.next_packet` returns a
  whole packet, or None until one has arrived. Bytes are never lost between
  calls, however the stream is cut. `Reader.next_item` is the server's: the
  same, but a plain PUBACK (no reason code, no properties) is its packet id.
- The packet size (fixed header included) is checked against
  `max_packet_size` as soon as the remaining length is known, before the body
  is buffered, so a client cannot make us hold a huge packet.
- Every structural rule of the spec that the bytes alone can decide is checked
  here: reserved flag bits, QoS 3, DUP on QoS 0, the remaining length,
  lengths that run past the packet, trailing bytes, UTF-8, packet id 0,
  properties not allowed in the packet. Rules that need session state (topic
  aliases, receive maximum, the first packet being CONNECT) belong to the
  server.
- Until a CONNECT has been parsed (or a version is given), the version is
  unknown; parsing CONNECT sets it. Any packet other than CONNECT before that
  is read with 3.1.1 rules, and the server refuses it anyway.
- After a `CodecError` the stream is out of sync: the caller must close.
"""

from __future__ import annotations

from collections.abc import Callable

from thingshub.mqtt.codec.connect import read_connect
from thingshub.mqtt.codec.errors import (
    MalformedPacket,
    PacketTooLarge,
    ProtocolError,
)
from thingshub.mqtt.codec.packets import (
    MQTT_3_1_1,
    MQTT_5,
    Auth,
    Connack,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    Suback,
    Subscribe,
    SubscriptionRequest,
    Unsuback,
    Unsubscribe,
)
from thingshub.mqtt.codec.properties import (
    AUTH,
    CONNACK,
    DISCONNECT,
    EMPTY,
    PUBLISH,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    Properties,
    read_properties,
)
from thingshub.mqtt.codec.wire import (
    MAX_VARINT,
    read_str,
    read_u8,
    read_u16,
)

#: Largest packet the protocol can express: 1 type byte, 4 length bytes, body.
PROTOCOL_MAX_PACKET_SIZE = 1 + 4 + MAX_VARINT

_PACKET_TYPES = {t.value: t for t in PacketType}

#: A packet without its __init__ (a Python __init__ costs a call through the type's
#: slot, the dearest a message made): `_publish` (and connect.py's `read_connect`) set every slot.
_new = object.__new__

# Required low nibble of the first byte, per packet type (None: PUBLISH, checked apart).
_FLAGS = {1: 0, 2: 0, 4: 0, 5: 0, 6: 2, 7: 0, 8: 2, 9: 0, 10: 2, 11: 0, 12: 0, 13: 0, 14: 0, 15: 0}


class Reader:
    """Turns a stream of bytes into packets."""

    __slots__ = ("buf", "max_packet_size", "pos", "version")

    def __init__(
        self, version: int | None = None, max_packet_size: int = PROTOCOL_MAX_PACKET_SIZE
    ) -> None:
        #: The bytes last fed while they hold only whole packets; a bytearray
        #: collecting the pieces while a packet arrives cut. Empty (b"") exactly
        #: when nothing is buffered: the server reads `buf` and `pos` in place
        #: (a feed of the usual case, "anything left?") instead of a call a read.
        self.buf: bytes | bytearray = b""
        self.pos = 0
        self.version = version
        self.max_packet_size = max_packet_size

    def feed(self, data: bytes) -> None:
        buf = self.buf
        pos = self.pos
        if pos >= len(buf):
            # Nothing left over, the usual case: parse the caller's bytes in place.
            self.buf = data if type(data) is bytes else bytes(data)
            self.pos = 0
        elif type(buf) is bytearray:
            if pos:
                del buf[:pos]
                self.pos = 0
            buf += data
        else:
            rest = bytearray(memoryview(buf)[pos:])
            rest += data
            self.buf = rest
            self.pos = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as packets."""
        return len(self.buf) - self.pos

    def next_packet(self) -> Packet | None:
        """The next whole packet, or None until one has arrived."""
        packet = self.next_item()
        if isinstance(packet, int):
            return PubAck(PacketType.PUBACK, packet)
        return packet

    def next_item(self) -> Packet | int | None:
        """As `next_packet`, but a PUBACK of success without properties (in any
        version) comes as its packet id alone: a subscriber at QoS 1 sends one
        for every message, and the server needs nothing of it but the id."""
        buf = self.buf
        pos = self.pos
        size = len(buf)
        if size - pos < 2:
            return None
        first = buf[pos]
        length = buf[pos + 1]
        i = pos + 2
        if length & 0x80:  # a remaining length past 127: the loop, for its other bytes
            length &= 0x7F
            shift = 7
            while True:
                if i >= size:
                    return None
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    if byte == 0:
                        raise MalformedPacket("remaining length is not minimally encoded")
                    break
                shift += 7
                if shift == 28:
                    raise MalformedPacket("remaining length longer than four bytes")
        end = i + length
        if end - pos > self.max_packet_size:
            raise PacketTooLarge(f"packet of {end - pos} bytes exceeds {self.max_packet_size}")
        if end > size:
            return None
        if end == size:  # all read: an idle connection keeps no buffer alive
            self.buf = b""
            self.pos = 0
        else:
            self.pos = end
        if type(buf) is not bytes:  # a packet that arrived in pieces
            return decode_packet(first, bytes(buf[i:end]), self.version, self)
        # Whole packets in the bytes the socket gave: the hot ones are read in place.
        if first >> 4 == 3:
            # _publish written out (the same checks, the same packet): a call less a message.
            qos = (first >> 1) & 3
            if qos == 3:
                raise MalformedPacket("PUBLISH with QoS 3")
            dup = (first & 8) != 0
            if dup and not qos:
                raise MalformedPacket("PUBLISH with DUP set at QoS 0")
            if length < 2:
                raise MalformedPacket("PUBLISH too short for its topic")
            tstart = i + 2
            i = tstart + ((buf[i] << 8) | buf[i + 1])
            if i > end:
                raise MalformedPacket("topic length runs past the end of the packet")
            try:
                topic = buf[tstart:i].decode()
            except UnicodeDecodeError as exc:
                raise MalformedPacket("topic is not well-formed UTF-8") from exc
            if "\x00" in topic:
                raise MalformedPacket("topic contains U+0000")
            packet_id = None
            if qos:
                if i + 2 > end:
                    raise MalformedPacket("packet ends inside a two-byte integer")
                packet_id = (buf[i] << 8) | buf[i + 1]
                if not packet_id:
                    raise MalformedPacket("packet identifier 0")
                i += 2
            props = EMPTY
            if self.version == MQTT_5:
                if i < end and buf[i] == 0:
                    i += 1
                else:
                    props, i = read_properties(buf, i, end, PUBLISH)
            packet = _new(Publish)
            packet.topic = topic
            packet.payload = buf[i:end]
            packet.qos = qos
            packet.retain = (first & 1) == 1
            packet.dup = dup
            packet.packet_id = packet_id
            packet.properties = props
            packet.expires_at = None
            return packet
        if first == 0x10:  # CONNECT: decode_packet's path, without its call
            connect = read_connect(buf[i:end])
            if self.version is None:
                self.version = connect.protocol_level
            return connect
        if first == 0x40 and length == 2:
            pid = (buf[i] << 8) | buf[i + 1]
            if not pid:
                raise MalformedPacket("packet identifier 0")
            return pid
        if first == 0xE0 and not length:  # a plain DISCONNECT (any version): every client's last
            disconnect = _new(Disconnect)
            disconnect.reason_code = 0
            disconnect.properties = EMPTY
            return disconnect
        return decode_packet(first, buf[i:end], self.version, self)


def decode_packet(
    first: int, body: bytes, version: int | None, reader: Reader | None = None
) -> Packet:
    """Decode one packet from its first byte and its body (everything after the length)."""
    ptype = first >> 4
    flags = first & 0x0F
    if ptype == 3:
        return _publish(flags, body, 0, len(body), version or MQTT_3_1_1)
    if ptype == 0:
        raise MalformedPacket("packet type 0 is reserved")
    if _FLAGS[ptype] != flags:
        raise MalformedPacket(f"reserved flag bits of {PacketType(ptype).name} are wrong")
    if ptype == 1:
        connect = read_connect(body)
        if reader is not None and reader.version is None:
            reader.version = connect.protocol_level
        return connect
    v = version or MQTT_3_1_1
    if ptype == 15 and v != MQTT_5:
        raise MalformedPacket("AUTH exists only in MQTT 5")
    return _DECODERS[ptype](ptype, body, v)


def _require_end(pos: int, end: int) -> None:
    if pos != end:
        raise MalformedPacket("bytes left over after the packet's fields")


def _packet_id(body: bytes, pos: int, end: int) -> tuple[int, int]:
    pid, pos = read_u16(body, pos, end)
    if pid == 0:
        raise MalformedPacket("packet identifier 0")
    return pid, pos


def _publish(flags: int, data: bytes, pos: int, end: int, version: int) -> Publish:
    """PUBLISH from `data[pos:end]`, read in place: the payload is copied once."""
    qos = (flags >> 1) & 3
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3")
    dup = (flags & 8) != 0
    if dup and not qos:
        raise MalformedPacket("PUBLISH with DUP set at QoS 0")
    if end - pos < 2:
        raise MalformedPacket("PUBLISH too short for its topic")
    tstart = pos + 2
    pos = tstart + ((data[pos] << 8) | data[pos + 1])
    if pos > end:
        raise MalformedPacket("topic length runs past the end of the packet")
    try:
        topic = data[tstart:pos].decode()
    except UnicodeDecodeError as exc:
        raise MalformedPacket("topic is not well-formed UTF-8") from exc
    if "\x00" in topic:
        raise MalformedPacket("topic contains U+0000")
    packet_id = None
    if qos:  # _packet_id written out: every QoS 1/2 message comes this way
        if pos + 2 > end:
            raise MalformedPacket("packet ends inside a two-byte integer")
        packet_id = (data[pos] << 8) | data[pos + 1]
        if not packet_id:
            raise MalformedPacket("packet identifier 0")
        pos += 2
    props = EMPTY
    if version == MQTT_5:
        if pos < end and data[pos] == 0:
            pos += 1
        else:
            props, pos = read_properties(data, pos, end, PUBLISH)
    packet = _new(Publish)  # without its __init__ (see _new)
    packet.topic = topic
    packet.payload = data[pos:end]
    packet.qos = qos
    packet.retain = (flags & 1) == 1
    packet.dup = dup
    packet.packet_id = packet_id
    packet.properties = props
    packet.expires_at = None
    return packet


def _connack(_ptype: int, body: bytes, version: int) -> Connack:
    end = len(body)
    ack_flags, pos = read_u8(body, 0, end)
    if ack_flags & 0xFE:
        raise MalformedPacket("reserved CONNACK flag bits are set")
    code, pos = read_u8(body, pos, end)
    props = EMPTY
    if version == MQTT_5:
        props, pos = read_properties(body, pos, end, CONNACK)
    _require_end(pos, end)
    return Connack(code, bool(ack_flags & 1), props)


def _puback(ptype: int, body: bytes, version: int) -> PubAck:
    end = len(body)
    pid, pos = _packet_id(body, 0, end)
    code = 0
    props = EMPTY
    if version == MQTT_5:
        if pos < end:
            code, pos = read_u8(body, pos, end)
        if pos < end:
            props, pos = read_properties(body, pos, end, ptype)
    _require_end(pos, end)
    return PubAck(_PACKET_TYPES[ptype], pid, code, props)


def _read_props_v5(
    body: bytes, pos: int, end: int, kind: int, version: int
) -> tuple[Properties, int]:
    if version == MQTT_5:
        return read_properties(body, pos, end, kind)
    return EMPTY, pos


def _subscribe(_ptype: int, body: bytes, version: int) -> Subscribe:
    end = len(body)
    pid, pos = _packet_id(body, 0, end)
    props, pos = _read_props_v5(body, pos, end, SUBSCRIBE, version)
    subs: list[SubscriptionRequest] = []
    while pos < end:
        topic_filter, pos = read_str(body, pos, end)
        options, pos = read_u8(body, pos, end)
        qos = options & 3
        if version == MQTT_5:
            if qos == 3:  # 5.0 section 3.8.3.1: "It is a Protocol Error ..."
                raise ProtocolError("subscription with maximum QoS 3")
            if options & 0xC0:
                raise MalformedPacket("reserved subscription option bits are set")
            retain_handling = (options >> 4) & 3
            if retain_handling == 3:
                raise ProtocolError("retain handling 3")
            subs.append(
                SubscriptionRequest(
                    topic_filter, qos, bool(options & 4), bool(options & 8), retain_handling
                )
            )
        else:  # 3.1.1 [MQTT-3-8.3-4]: QoS 3 and reserved bits alike are malformed
            if options & 0xFC or qos == 3:
                raise MalformedPacket("subscription with QoS 3 or reserved option bits set")
            subs.append(SubscriptionRequest(topic_filter, qos))
    if not subs:
        raise ProtocolError("SUBSCRIBE without a topic filter")
    return Subscribe(pid, subs, props)


def _suback(_ptype: int, body: bytes, version: int) -> Suback:
    end = len(body)
    pid, pos = _packet_id(body, 0, end)
    props, pos = _read_props_v5(body, pos, end, SUBACK, version)
    codes = list(body[pos:])
    if not codes:
        raise ProtocolError("SUBACK without a reason code")
    return Suback(pid, codes, props)


def _unsubscribe(_ptype: int, body: bytes, version: int) -> Unsubscribe:
    end = len(body)
    pid, pos = _packet_id(body, 0, end)
    props, pos = _read_props_v5(body, pos, end, UNSUBSCRIBE, version)
    filters: list[str] = []
    while pos < end:
        topic_filter, pos = read_str(body, pos, end)
        filters.append(topic_filter)
    if not filters:
        raise ProtocolError("UNSUBSCRIBE without a topic filter")
    return Unsubscribe(pid, filters, props)


def _unsuback(_ptype: int, body: bytes, version: int) -> Unsuback:
    end = len(body)
    pid, pos = _packet_id(body, 0, end)
    if version != MQTT_5:
        _require_end(pos, end)
        return Unsuback(pid)
    props, pos = read_properties(body, pos, end, UNSUBACK)
    return Unsuback(pid, list(body[pos:]), props)


def _ping(ptype: int, body: bytes, _version: int) -> PingReq | PingResp:
    if body:
        raise MalformedPacket("PINGREQ/PINGRESP with a body")
    return PingReq() if ptype == 12 else PingResp()


def _code_and_props(ptype: int, body: bytes, kind: int) -> tuple[int, Properties]:
    end = len(body)
    if not end:
        return 0, EMPTY
    code, pos = read_u8(body, 0, end)
    props = EMPTY
    if pos < end:
        props, pos = read_properties(body, pos, end, kind)
    _require_end(pos, end)
    return code, props


def _disconnect(ptype: int, body: bytes, version: int) -> Disconnect:
    if version != MQTT_5:
        if body:
            raise MalformedPacket("3.1.1 DISCONNECT with a body")
        return Disconnect()
    code, props = _code_and_props(ptype, body, DISCONNECT)
    return Disconnect(code, props)


def _auth(ptype: int, body: bytes, _version: int) -> Auth:
    code, props = _code_and_props(ptype, body, AUTH)
    return Auth(code, props)


_DECODERS: dict[int, Callable[[int, bytes, int], Packet]] = {
    2: _connack,
    4: _puback,
    5: _puback,
    6: _puback,
    7: _puback,
    8: _subscribe,
    9: _suback,
    10: _unsubscribe,
    11: _unsuback,
    12: _ping,
    13: _ping,
    14: _disconnect,
    15: _auth,
}
