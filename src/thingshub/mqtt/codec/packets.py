"""MQTT control packets as plain values.

Rules:
- One class per packet type, for both protocol versions. Fields that exist
  only in 5.0 (properties, reason codes) keep their defaults under 3.1.1, and
  the writer leaves them out there.
- Packets are mutable slotted dataclasses: the server builds and rewrites them
  on the hot path, where frozen dataclasses cost twice as much to create.
- `protocol_level` is the level byte of CONNECT: 3 (MQTT 3.1, name "MQIsdp"),
  4 (3.1.1) or 5 (5.0). The same number is the "version" argument of the reader
  and writer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar

from thingshub.mqtt.codec.properties import EMPTY, Properties

MQTT_3_1 = 3
MQTT_3_1_1 = 4
MQTT_5 = 5


class PacketType(IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


@dataclass(slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = EMPTY


@dataclass(slots=True)
class Connect:
    client_id: str
    protocol_level: int = MQTT_3_1_1
    clean_start: bool = True
    keepalive: int = 60
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = EMPTY
    type: ClassVar[PacketType] = PacketType.CONNECT


@dataclass(slots=True)
class Connack:
    reason_code: int = 0
    session_present: bool = False
    properties: Properties = EMPTY
    type: ClassVar[PacketType] = PacketType.CONNACK


@dataclass(slots=True)
class Message:
    """An application message (the server's hooks see these, `hooks.Message`).
    `expires_at` is on the server's monotonic clock (from the 5.0 Message
    Expiry Interval), None when it never expires."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = EMPTY
    expires_at: float | None = None


@dataclass(slots=True, init=False)
class Publish(Message):
    """A PUBLISH: an application message with its packet's DUP flag and id.

    It is a `Message` so that the server hands a client's PUBLISH to the
    application as it was parsed, not copied into a second object per message.
    Its arguments keep the order of the packet's fields (dup and packet id
    before the properties)."""

    dup: bool = False
    packet_id: int | None = None
    type: ClassVar[PacketType] = PacketType.PUBLISH

    def __init__(
        self,
        topic: str,
        payload: bytes = b"",
        qos: int = 0,
        retain: bool = False,
        dup: bool = False,
        packet_id: int | None = None,
        properties: Properties = EMPTY,
        expires_at: float | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.packet_id = packet_id
        self.properties = properties
        self.expires_at = expires_at


@dataclass(slots=True)
class PubAck:
    """PUBACK, PUBREC, PUBREL and PUBCOMP: a packet id and a reason code."""

    type: PacketType
    packet_id: int
    reason_code: int = 0
    properties: Properties = EMPTY


@dataclass(slots=True)
class SubscriptionRequest:
    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(slots=True)
class Subscribe:
    packet_id: int
    subscriptions: list[SubscriptionRequest]
    properties: Properties = EMPTY
    type: ClassVar[PacketType] = PacketType.SUBSCRIBE


@dataclass(slots=True)
class Suback:
    packet_id: int
    reason_codes: list[int]
    properties: Properties = EMPTY
    type: ClassVar[PacketType] = PacketType.SUBACK


@dataclass(slots=True)
class Unsubscribe:
    packet_id: int
    topic_filters: list[str]
    properties: Properties = EMPTY
    type: ClassVar[PacketType] = PacketType.UNSUBSCRIBE


@dataclass(slots=True)
class Unsuback:
    packet_id: int
    reason_codes: list[int] = field(default_factory=list)
    properties: Properties = EMPTY
    type: ClassVar[PacketType] = PacketType.UNSUBACK


@dataclass(slots=True)
class PingReq:
    type: ClassVar[PacketType] = PacketType.PINGREQ


@dataclass(slots=True)
class PingResp:
    type: ClassVar[PacketType] = PacketType.PINGRESP


@dataclass(slots=True)
class Disconnect:
    reason_code: int = 0
    properties: Properties = EMPTY
    type: ClassVar[PacketType] = PacketType.DISCONNECT


@dataclass(slots=True)
class Auth:
    reason_code: int = 0
    properties: Properties = EMPTY
    type: ClassVar[PacketType] = PacketType.AUTH


Packet = (
    Connect
    | Connack
    | Publish
    | PubAck
    | Subscribe
    | Suback
    | Unsubscribe
    | Unsuback
    | PingReq
    | PingResp
    | Disconnect
    | Auth
)
