"""The PUBLISHes a client receives: encoded for its version and written.

Rules:
- A 5.0 client gets its message's properties, with the Message Expiry Interval
  counted down (an expired message is dropped and counted), its subscription
  identifiers, and a topic alias when it allows them; a PUBLISH larger than its
  Maximum Packet Size is dropped and counted, as 5.0 requires.
- A 3.1.1 (or 3.1) client has none of these: its PUBLISH is the fixed header,
  the topic, the packet id and the payload, written out here without a call per
  message (every delivery to a 3.1.1 subscriber comes this way).
- The bytes go to the connection's coalesced output (`write`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from thingshub.mqtt.codec.packets import MQTT_5
from thingshub.mqtt.codec.properties import encode_properties
from thingshub.mqtt.codec.writer import (
    encode_publish,
    publish_packer,
    short_packers,
    wide_packers,
)
from thingshub.mqtt.protocol.machine import CLOSED

if TYPE_CHECKING:
    import asyncio

    from thingshub.mqtt.protocol.machine import Machine
    from thingshub.mqtt.server.inbound import InboundHost
    from thingshub.mqtt.server.ports import Outgoing


class Outbound:
    """The connection's PUBLISH and PUBREL to its client (a base of `Connection`,
    which has the attributes and I/O declared here)."""

    __slots__ = ()

    broker: InboundHost
    machine: Machine
    transport: asyncio.Transport | None
    #: Packets written since the last flush (None: none) and their bytes (output.py).
    _wbuf: list[bytes] | None
    _wbytes: int

    if TYPE_CHECKING:

        def write(self, data: bytes) -> None: ...

    def send_publish(
        self,
        msg: Outgoing,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        packet_id: int | None,
        dup: bool = False,
    ) -> bool:
        """Encode and queue one PUBLISH to this client; False if it had to be dropped."""
        machine = self.machine
        version = machine.version
        if version != MQTT_5:
            # encode_publish written out, for a PUBLISH without properties.
            topic_b = msg.topic.encode()
            payload = msg.payload
            tlen = len(topic_b)
            first = 0x30 | (qos << 1) | retain | (dup << 3)
            if packet_id is not None:
                n = 4 + tlen + len(payload)
                if n < 0x80:
                    pack = short_packers.get(tlen) or publish_packer(tlen, False)
                    data = pack(first, n, tlen, topic_b, packet_id) + payload
                elif n < 0x4000:
                    pack = wide_packers.get(tlen) or publish_packer(tlen, True)
                    data = pack(first, n & 0x7F | 0x80, n >> 7, tlen, topic_b, packet_id) + payload
                else:
                    data = encode_publish(topic_b, payload, qos, retain, dup, packet_id, version)
            else:
                data = encode_publish(topic_b, payload, qos, retain, dup, None, version)
            # Connection.write written out: every delivery to a 3.1.1 client.
            broker = self.broker
            if machine.state is not CLOSED:
                buf = self._wbuf
                if buf is None:
                    self._wbuf = [data]  # type: ignore[misc]  # a slot of Connection
                    output = broker.output
                    output.dirty.append(self)
                    if not output.scheduled:
                        output.scheduled = True
                        output.loop.call_soon(output.flush_all)
                else:
                    buf.append(data)
                self._wbytes += len(data)  # type: ignore[misc]  # a slot of Connection
            broker.stats.messages_out += 1
            return True
        topic = msg.topic
        topic_b = topic.encode()
        new_alias = 0
        props = msg.properties
        if sub_ids or msg.expires_at is not None:
            now = self.broker.loop.time()
            changed = machine.outgoing_properties(props, msg.expires_at, sub_ids, now)
            if changed is None:
                self.broker.stats.dropped_expired += 1
                return False
            props = changed
        extras = machine.extras
        if extras is not None and extras.alias_max_out:
            alias, new = machine.alias_out(topic)
            if alias:
                if new:
                    new_alias = alias
                else:
                    topic_b = b""
                props = dataclasses.replace(props, topic_alias=alias)
        data = encode_publish(
            topic_b, msg.payload, qos, retain, dup, packet_id, version, encode_properties(props)
        )
        if extras is not None and extras.max_packet_out and len(data) > extras.max_packet_out:
            self.broker.stats.dropped_too_large += 1
            return False
        if new_alias:
            machine.remember_alias(topic, new_alias)
        self.write(data)
        self.broker.stats.messages_out += 1
        return True

    def send_pubrel(self, packet_id: int) -> None:
        pubrel = self.machine.pubrel(packet_id)
        assert pubrel is not None
        self.write(pubrel)
