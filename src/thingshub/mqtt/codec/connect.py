"""Reading CONNECT, the first packet of every connection (parser.py's, apart).

Rules:
- The usual protocol name ("MQTT", 3.1.1 or 5.0) and the client id are read in
  place, without a helper call; anything else goes through wire.py's readers.
- An unsupported level is `UnsupportedProtocolVersion` (the server answers it
  with a CONNACK the client understands); every other broken rule is a
  `MalformedPacket` or `ProtocolError`, as everywhere in the codec.
"""

from __future__ import annotations

from thingshub.mqtt.codec.errors import MalformedPacket, ProtocolError, UnsupportedProtocolVersion
from thingshub.mqtt.codec.packets import MQTT_3_1, MQTT_3_1_1, MQTT_5, Connect, Will
from thingshub.mqtt.codec.properties import CONNECT, EMPTY, WILL, read_properties
from thingshub.mqtt.codec.wire import read_binary, read_str, read_u8, read_u16

#: A packet without its __init__ (a Python __init__ costs a call through the
#: type's slot): `read_connect` sets every slot.
_new = object.__new__


def read_connect(body: bytes) -> Connect:
    """CONNECT from its body (everything after the remaining length)."""
    end = len(body)
    if end >= 10 and body[:6] == b"\x00\x04MQTT":
        # The usual name, compared without decoding it; level, flags and
        # keepalive read in place (they are there: the body is long enough).
        name = "MQTT"
        level = body[6]
        cflags = body[7]
        keepalive = (body[8] << 8) | body[9]
        pos = 10
    else:
        name, pos = read_str(body, 0, end)
        level, pos = read_u8(body, pos, end)
        cflags, pos = read_u8(body, pos, end)
        keepalive, pos = read_u16(body, pos, end)
    if name == "MQTT":
        if level not in (MQTT_3_1_1, MQTT_5):
            raise UnsupportedProtocolVersion(f"protocol level {level} is not supported", level)
    elif name == "MQIsdp":
        if level != MQTT_3_1:
            raise UnsupportedProtocolVersion(f"protocol level {level} is not supported", level)
    else:
        raise MalformedPacket(f"unknown protocol name {name!r}")
    if cflags & 0x01:
        raise MalformedPacket("reserved CONNECT flag is set")
    has_will = bool(cflags & 0x04)
    will_qos = (cflags >> 3) & 3
    will_retain = bool(cflags & 0x20)
    if will_qos == 3:
        raise MalformedPacket("will QoS 3")
    if not has_will and (will_qos or will_retain):
        raise MalformedPacket("will QoS or retain set without a will")
    has_user = bool(cflags & 0x80)
    has_pass = bool(cflags & 0x40)
    if has_pass and not has_user and level != MQTT_5:
        raise MalformedPacket("password flag without user name flag")
    props = EMPTY
    if level == MQTT_5:
        props, pos = read_properties(body, pos, end, CONNECT)
        if props.authentication_data is not None and props.authentication_method is None:
            raise ProtocolError("authentication data without an authentication method")
    # read_str written out for the client id, which every CONNECT has.
    if pos + 2 > end:
        raise MalformedPacket("packet ends inside a length prefix")
    start = pos + 2
    pos = start + ((body[pos] << 8) | body[pos + 1])
    if pos > end:
        raise MalformedPacket("length prefix runs past the end of the packet")
    try:
        client_id = body[start:pos].decode()
    except UnicodeDecodeError as exc:
        raise MalformedPacket("string is not well-formed UTF-8") from exc
    if "\x00" in client_id:
        raise MalformedPacket("string contains U+0000")
    will = None
    if has_will:
        will_props = EMPTY
        if level == MQTT_5:
            will_props, pos = read_properties(body, pos, end, WILL)
        will_topic, pos = read_str(body, pos, end)
        will_payload, pos = read_binary(body, pos, end)
        will = Will(will_topic, will_payload, will_qos, will_retain, will_props)
    username = None
    if has_user:
        username, pos = read_str(body, pos, end)
    password = None
    if has_pass:
        password, pos = read_binary(body, pos, end)
    if pos != end:
        raise MalformedPacket("bytes left over after the packet's fields")
    connect = _new(Connect)  # without its __init__ (see _new)
    connect.client_id = client_id
    connect.protocol_level = level
    connect.clean_start = (cflags & 0x02) != 0
    connect.keepalive = keepalive
    connect.username = username
    connect.password = password
    connect.will = will
    connect.properties = props
    return connect
