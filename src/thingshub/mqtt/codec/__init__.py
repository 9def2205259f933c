"""Sans-io MQTT 3.1.1 and 5.0 codec.

`Reader` turns bytes into packets; `encode` turns packets into bytes.
"""

from thingshub.mqtt.codec.errors import (
    CodecError,
    MalformedPacket,
    PacketTooLarge,
    ProtocolError,
    UnsupportedProtocolVersion,
)
from thingshub.mqtt.codec.packets import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Message,
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
    Will,
)
from thingshub.mqtt.codec.parser import PROTOCOL_MAX_PACKET_SIZE, Reader, decode_packet
from thingshub.mqtt.codec.properties import EMPTY, Properties, encode_properties
from thingshub.mqtt.codec.reasons import ConnackCodeV3, ReasonCode, connack_code_v3
from thingshub.mqtt.codec.writer import encode, encode_ack, encode_publish

__all__ = [
    "EMPTY",
    "MQTT_3_1",
    "MQTT_3_1_1",
    "MQTT_5",
    "PROTOCOL_MAX_PACKET_SIZE",
    "Auth",
    "CodecError",
    "Connack",
    "ConnackCodeV3",
    "Connect",
    "Disconnect",
    "MalformedPacket",
    "Message",
    "Packet",
    "PacketTooLarge",
    "PacketType",
    "PingReq",
    "PingResp",
    "ProtocolError",
    "Properties",
    "PubAck",
    "Publish",
    "ReasonCode",
    "Reader",
    "Suback",
    "Subscribe",
    "SubscriptionRequest",
    "Unsuback",
    "Unsubscribe",
    "UnsupportedProtocolVersion",
    "Will",
    "connack_code_v3",
    "decode_packet",
    "encode",
    "encode_ack",
    "encode_properties",
    "encode_publish",
]
