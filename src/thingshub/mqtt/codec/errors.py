"""Errors raised by the codec.

    CodecError                      every failure to parse; carries `reason_code`
    ├── MalformedPacket             0x81: the bytes break the packet grammar
    ├── ProtocolError               0x82: well-formed, but not allowed
    ├── PacketTooLarge              0x95: over the reader's maximum packet size
    └── UnsupportedProtocolVersion  0x84: CONNECT names a level we do not speak

The codec raises nothing else on any input; the server maps each error to a
DISCONNECT (5.0) or a close (3.1.1), or a refusing CONNACK for a bad CONNECT.
"""

from __future__ import annotations

from thingshub.mqtt.codec.reasons import ReasonCode


class CodecError(Exception):
    reason_code: int = ReasonCode.MALFORMED_PACKET


class MalformedPacket(CodecError):
    reason_code = ReasonCode.MALFORMED_PACKET


class ProtocolError(CodecError):
    reason_code = ReasonCode.PROTOCOL_ERROR


class PacketTooLarge(CodecError):
    reason_code = ReasonCode.PACKET_TOO_LARGE


class UnsupportedProtocolVersion(CodecError):
    """CONNECT with a protocol name or level this codec does not speak.

    `level` is the level the client asked for, so the server can answer with a
    CONNACK the client understands (0x01 for 3.x, 0x84 for 5).
    """

    reason_code = ReasonCode.UNSUPPORTED_PROTOCOL_VERSION

    def __init__(self, message: str, level: int) -> None:
        super().__init__(message)
        self.level = level
