"""The protocol state of one client connection, without I/O: packets and times
in, decisions and packet bytes out.

Rules:
- Pure: no sockets, no event loop, no clock. Every time is `now`, passed in
  by the caller (seconds on its monotonic clock); the machine reports the
  deadline it cares about and whether it has passed, the caller arms timers.
- States: AWAITING_CONNECT -> AUTHENTICATING (CONNECT received, the
  application decides) -> CONNECTED (CONNACK sent) -> CLOSED; any state may
  go to CLOSED, nothing leaves it. The first packet must be CONNECT; a second
  CONNECT is a protocol error.
- A rule broken raises `Violation` (a `CodecError`, carrying the reason code):
  the caller closes the connection as for a malformed packet.
- Keepalive: a CONNECTED client silent for 1.5x its keepalive has timed out,
  unless we were not reading from it (its silence was ours); a connection
  without CONNECT has timed out `connect_timeout` seconds after it opened.
  A 5.0 client gets at most `max_keepalive`, and that much if it asked for none.
- A topic name, and a 5.0 Response Topic, has no wildcard and is not empty.
- Topic aliases from a 5.0 client: 1..`topic_alias_maximum`, a topic with an
  alias sets it, an empty topic uses it; to the client, at most its Topic
  Alias Maximum, assigned in order and never changed.
- Acknowledgements of QoS 1/2 PUBLISHes leave in arrival order: one whose
  message is still with the application holds back those behind it.
- Receive Maximum: a 5.0 client with `receive_maximum` QoS 1/2 messages
  unacknowledged (QoS 2 until PUBREL) has broken the limit; a 3.1.1 one only
  has reading paused, since it was never told.
- Every packet's bytes come from the codec.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from enum import Enum
from typing import Protocol

from thingshub.mqtt.codec.errors import CodecError
from thingshub.mqtt.codec.packets import (
    MQTT_5,
    Connack,
    Connect,
    Disconnect,
    PacketType,
    PubAck,
    Publish,
)
from thingshub.mqtt.codec.properties import EMPTY, Properties
from thingshub.mqtt.codec.reasons import ReasonCode, connack_code_v3
from thingshub.mqtt.codec.writer import encode, encode_ack, pack_ack
from thingshub.mqtt.topics import valid_response_topic


class State(Enum):
    AWAITING_CONNECT = "awaiting CONNECT"
    AUTHENTICATING = "authenticating"
    CONNECTED = "connected"
    CLOSED = "closed"


# Module constants: the hot path compares against them, and a lookup on the
# Enum class costs more than a global.
AWAITING_CONNECT = State.AWAITING_CONNECT
AUTHENTICATING = State.AUTHENTICATING
CONNECTED = State.CONNECTED
CLOSED = State.CLOSED

_PUBREC = PacketType.PUBREC


class Violation(CodecError):
    """The client broke a rule of the protocol that needs the connection's state."""

    def __init__(self, reason_code: int, detail: str) -> None:
        super().__init__(detail)
        self.reason_code = reason_code


class Limits(Protocol):
    """The server's limits a connection obeys (the server's configuration has them)."""

    @property
    def connect_timeout(self) -> float: ...
    @property
    def receive_maximum(self) -> int: ...
    @property
    def topic_alias_maximum(self) -> int: ...
    @property
    def max_keepalive(self) -> int: ...


#: An acknowledgement waiting to leave: [packet id, PUBACK or PUBREC, reason code
#: or None while the application has the message].
Ack = list[int | None]


class Extras:
    """What only some 5.0 clients need (topic aliases, a packet size limit):
    made the first time one of them needs it. Most connections never do, and
    four slots fewer in every Machine are 32 bytes less per idle connection."""

    __slots__ = ("alias_max_out", "aliases_in", "aliases_out", "max_packet_out")

    def __init__(self) -> None:
        #: The client's Topic Alias Maximum and Maximum Packet Size (0: none).
        self.alias_max_out = 0
        self.max_packet_out = 0
        self.aliases_in: dict[int, str] | None = None
        self.aliases_out: dict[str, int] | None = None


class Machine:
    __slots__ = (
        "acks",
        "created",
        "extras",
        "keepalive",
        "last_rx",
        "limits",
        "state",
        "version",
    )

    def __init__(self, limits: Limits, now: float) -> None:
        self.limits = limits
        self.state = AWAITING_CONNECT
        self.version = 4
        self.keepalive = 0
        #: When the connection opened, and when the client last sent something.
        self.created = self.last_rx = now
        # Made when first needed: 10,000 idle connections should cost little memory.
        self.extras: Extras | None = None
        #: The acknowledgements decided late or queued behind one, in arrival order;
        #: None when none waits (never empty: the server reads it in place).
        self.acks: deque[Ack] | None = None

    def _extras(self) -> Extras:
        extras = self.extras
        if extras is None:
            extras = self.extras = Extras()
        return extras

    @property
    def alias_max_out(self) -> int:
        """The client's Topic Alias Maximum (0: none)."""
        return self.extras.alias_max_out if self.extras is not None else 0

    @property
    def max_packet_out(self) -> int:
        """The client's Maximum Packet Size (0: none)."""
        return self.extras.max_packet_out if self.extras is not None else 0

    # ------------------------------------------------------------ states

    def receive_first(self, packet: object) -> Connect:
        """The first packet of the connection, which must be CONNECT."""
        if type(packet) is not Connect:
            what = (
                "PUBLISH before CONNECT"
                if type(packet) is Publish
                else "first packet is not CONNECT"
            )
            raise Violation(ReasonCode.PROTOCOL_ERROR, what)
        self.state = AUTHENTICATING
        self.version = packet.protocol_level
        return packet

    def accept(self, packet: Connect) -> int | None:
        """The application accepted `packet`: take the client's limits and grant
        its keepalive; the Server Keep Alive to announce, if it differs."""
        keepalive = packet.keepalive
        server_keep_alive = None
        if packet.protocol_level == MQTT_5:
            props = packet.properties
            if props.maximum_packet_size or props.topic_alias_maximum:
                extras = self._extras()
                extras.max_packet_out = props.maximum_packet_size or 0
                extras.alias_max_out = props.topic_alias_maximum or 0
            most = self.limits.max_keepalive
            if most and (keepalive == 0 or keepalive > most):
                keepalive = server_keep_alive = most
        self.keepalive = keepalive
        return server_keep_alive

    def activate(self) -> None:
        """CONNACK has gone out: the client's other packets may be handled."""
        self.state = CONNECTED

    def close(self) -> bool:
        """The connection ends; whether it had been CONNECTED (False: already closed)."""
        was_connected = self.state is CONNECTED
        self.state = CLOSED
        return was_connected

    # ------------------------------------------------------------ time

    def deadline(self) -> float | None:
        """When the connection times out if the client stays silent (None: never)."""
        state = self.state
        if state is AWAITING_CONNECT or state is AUTHENTICATING:
            return self.created + self.limits.connect_timeout
        if state is CONNECTED and self.keepalive:
            return self.last_rx + self.keepalive * 1.5
        return None

    def expired(self, now: float, *, reading: bool = True) -> int | None:
        """The reason code to close with if the connection has timed out at `now`;
        `reading` False: we are not reading from the client, its silence is ours."""
        deadline = self.deadline()
        if deadline is None or now <= deadline:
            return None
        if self.state is CONNECTED:
            return ReasonCode.KEEP_ALIVE_TIMEOUT if reading else None
        return ReasonCode.MAXIMUM_CONNECT_TIME

    # ------------------------------------------------------------ PUBLISH in

    def check_publish(self, packet: Publish) -> None:
        """Resolve the topic alias of a PUBLISH from the client (the packet is
        rewritten with its topic and without the alias) and check its topic."""
        topic = packet.topic
        props = packet.properties
        if props is not EMPTY and self.version == MQTT_5:
            alias = props.topic_alias
            if alias is not None:
                if alias == 0 or alias > self.limits.topic_alias_maximum:
                    raise Violation(ReasonCode.TOPIC_ALIAS_INVALID, f"topic alias {alias}")
                extras = self._extras()
                if topic:
                    if extras.aliases_in is None:
                        extras.aliases_in = {}
                    extras.aliases_in[alias] = topic
                else:
                    found = extras.aliases_in.get(alias) if extras.aliases_in else None
                    if found is None:
                        raise Violation(ReasonCode.PROTOCOL_ERROR, f"unknown topic alias {alias}")
                    packet.topic = topic = found
                packet.properties = props = dataclasses.replace(props, topic_alias=None)
            if props.subscription_identifiers:
                raise Violation(ReasonCode.PROTOCOL_ERROR, "subscription identifier in PUBLISH")
            if not valid_response_topic(props.response_topic):
                # [MQTT-3.3.2-14]: forwarded, it would break the rule in our PUBLISH too.
                raise Violation(ReasonCode.PROTOCOL_ERROR, "invalid response topic")
        if not topic or "+" in topic or "#" in topic:  # not valid_topic_name(topic), inline
            if not topic:  # 5.0: an empty topic without an alias is a protocol error
                raise Violation(ReasonCode.PROTOCOL_ERROR, "empty topic without an alias")
            raise Violation(ReasonCode.TOPIC_NAME_INVALID, f"invalid topic {topic!r}")

    def admit(self, qos2_waiting: int) -> bool:
        """A new QoS 1/2 PUBLISH arrived, with `qos2_waiting` QoS 2 messages of
        the session awaiting their PUBREL: True when reading should pause."""
        pending = len(self.acks) if self.acks is not None else 0
        if self.version == MQTT_5:
            # Receive Maximum counts a QoS 2 message until its PUBCOMP.
            if pending + qos2_waiting >= self.limits.receive_maximum:
                raise Violation(ReasonCode.RECEIVE_MAXIMUM_EXCEEDED, "receive maximum")
            return False
        # Only acks waiting for the application: a QoS 2 message waiting for its
        # PUBREL waits for the client, which we must keep reading.
        return pending >= self.limits.receive_maximum

    # ------------------------------------------------------------ acknowledgements

    def ack_now(self, packet_id: int, ack_type: int, code: int) -> bool:
        """An acknowledgement is decided: True when it may leave now, False when it
        was queued behind ones still waiting (`ready` gives it back in turn)."""
        if not self.acks:
            return True
        self.acks.append([packet_id, ack_type, code])
        return False

    def ack_later(self, packet_id: int, ack_type: int) -> Ack:
        """The application has the message: its acknowledgement waits, holding
        back those behind it until `settle`."""
        entry: Ack = [packet_id, ack_type, None]
        if self.acks is None:
            self.acks = deque()
        self.acks.append(entry)
        return entry

    @staticmethod
    def settle(entry: Ack, code: int) -> None:
        entry[2] = code

    @staticmethod
    def settle_all(entries: list[Ack], code: int) -> None:
        """`settle` of each of `entries` with one code (a batch's messages)."""
        for entry in entries:
            entry[2] = code

    def ready(self) -> Ack | None:
        """The next acknowledgement that may leave, in arrival order, if any."""
        acks = self.acks
        if acks and acks[0][2] is not None:
            entry = acks.popleft()
            if not acks:
                self.acks = None
            return entry
        return None

    def drain_acks(self) -> tuple[bytes, list[int] | None]:
        """The bytes of every acknowledgement that may leave now, in arrival
        order (b"" for none), and the packet ids of the QoS 2 flows they end
        (`refuses_qos2`; None for none): what `ready` and `ack` give one by one."""
        acks = self.acks
        if not acks or acks[0][2] is None:
            return b"", None
        parts: list[bytes] = []
        ended: list[int] | None = None
        while acks and (code := acks[0][2]) is not None:
            entry = acks.popleft()
            pid: int = entry[0]  # type: ignore[assignment]  # set by ack_later / ack_now
            ack_type: int = entry[1]  # type: ignore[assignment]
            if code:
                parts.append(self.ack(pid, ack_type, code))
                if self.refuses_qos2(ack_type, code):
                    ended = [pid] if ended is None else [*ended, pid]
            else:  # encode_ack written out, for a PUBACK or PUBREC (the only kinds queued)
                parts.append(pack_ack(ack_type << 4, 2, pid))
        if not acks:
            self.acks = None
        return b"".join(parts), ended

    def pending_acks(self) -> int:
        return len(self.acks) if self.acks is not None else 0

    def ack(self, packet_id: int, ack_type: int, code: int) -> bytes:
        """The bytes of a PUBACK or PUBREC with `code` (0x00 for 3.1.1, which has none)."""
        if code and self.version == MQTT_5:
            return encode(PubAck(PacketType(ack_type), packet_id, code), MQTT_5)
        return encode_ack(ack_type, packet_id)

    def refuses_qos2(self, ack_type: int, code: int) -> bool:
        """Whether this acknowledgement ends a QoS 2 flow (a 5.0 PUBREC with a failure)."""
        return ack_type == _PUBREC and code >= 0x80 and self.version == MQTT_5

    def pubcomp(self, packet_id: int, known: bool) -> bytes:
        """The answer to a PUBREL; 5.0 says when the id was unknown."""
        if known or self.version != MQTT_5:
            return encode_ack(PacketType.PUBCOMP, packet_id)
        code = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
        return encode(PubAck(PacketType.PUBCOMP, packet_id, code), MQTT_5)

    def pubrel(self, packet_id: int, known: bool = True) -> bytes | None:
        """The PUBREL that follows a PUBREC of ours; for one of an unknown id, 5.0's
        answer (None: nothing to send)."""
        if known:
            return encode_ack(PacketType.PUBREL, packet_id)
        if self.version != MQTT_5:
            return None
        code = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
        return encode(PubAck(PacketType.PUBREL, packet_id, code), MQTT_5)

    # ------------------------------------------------------------ PUBLISH out

    def outgoing_properties(
        self, props: Properties, expires_at: float | None, sub_ids: tuple[int, ...], now: float
    ) -> Properties | None:
        """The publisher's properties plus this delivery's subscription ids and the
        remaining expiry; None when the message has expired."""
        expiry = props.message_expiry_interval
        if expires_at is not None:
            remaining = expires_at - now
            if remaining <= 0:
                return None
            expiry = max(1, round(remaining))
        return dataclasses.replace(
            props, subscription_identifiers=sub_ids, message_expiry_interval=expiry
        )

    def alias_out(self, topic: str) -> tuple[int, bool]:
        """The alias for `topic` to the client and whether it is new (the topic goes
        along once, `remember_alias` once sent); (0, False): none is left."""
        extras = self._extras()
        aliases = extras.aliases_out
        if aliases is None:
            aliases = extras.aliases_out = {}
        alias = aliases.get(topic)
        if alias is not None:
            return alias, False
        if len(aliases) < extras.alias_max_out:
            return len(aliases) + 1, True
        return 0, False

    def remember_alias(self, topic: str, alias: int) -> None:
        assert self.extras is not None and self.extras.aliases_out is not None
        self.extras.aliases_out[topic] = alias

    # ------------------------------------------------------------ answers

    def refusal(self, code: int) -> bytes:
        """A CONNACK refusing the CONNECT with a 5.0 reason code (3.1.1's equivalent)."""
        if self.version == MQTT_5:
            return encode(Connack(code), MQTT_5)
        return encode(Connack(connack_code_v3(code)), self.version)

    def disconnect(self, code: int) -> bytes | None:
        """The DISCONNECT telling a CONNECTED 5.0 client why it is closed (None:
        3.1.1 has none, or the client never had its CONNACK)."""
        if self.version != MQTT_5 or self.state is not CONNECTED:
            return None
        return encode(Disconnect(code), MQTT_5)
