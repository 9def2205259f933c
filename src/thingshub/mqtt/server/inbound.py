"""What a connected client sends: PUBLISH and its acknowledgements, DISCONNECT.

Rules:
- A PUBLISH is checked by the connection's machine (topic alias, topic,
  Receive Maximum), then authorized, handed to the application and routed
  by the server (`InboundHost.incoming`).
- Acknowledgements of QoS 1/2 PUBLISHes leave in arrival order, each only once
  the application has finished with its message (see hooks.py); a failure
  there is 0x80 for 5.0, and for 3.1.1 (which cannot say it) a close without
  acknowledgement, so the client sends again.
- Messages the application decides together (a `Settling`, one storage
  commit) cost one waiter per connection and settlement: consecutive messages
  of a connection that join the same one are listed behind that waiter, and
  acknowledged together when it is called (those of other outcomes between
  them still keep their place: the machine orders every acknowledgement).
- While more than `receive_maximum` acknowledgements of one client wait,
  reading from it pauses; while more than `max_waiting_acks` wait across all
  clients (`AckBudget`), reading pauses for every client that adds one, until
  half of them are done.
- A QoS 2 message resent before its PUBREL is acknowledged, not delivered again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Protocol

from thingshub.mqtt.codec.packets import MQTT_5, Disconnect, PacketType, Publish
from thingshub.mqtt.codec.properties import EMPTY
from thingshub.mqtt.codec.reasons import ReasonCode
from thingshub.mqtt.codec.writer import pack_ack
from thingshub.mqtt.hooks import (
    ClientInfo,
    CloseReason,
    Hooks,
    Message,
    OpenHooks,
    PublishOutcome,
    Settling,
)
from thingshub.mqtt.logs import logger
from thingshub.mqtt.protocol.machine import CLOSED, Ack, Machine

if TYPE_CHECKING:
    from thingshub.mqtt.server.config import BrokerConfig
    from thingshub.mqtt.server.delivery import BrokerStats, Delivery
    from thingshub.mqtt.server.output import Output
    from thingshub.mqtt.server.session import Session

log = logger("thingshub.mqtt")

_PUBACK = PacketType.PUBACK
_PUBREC = PacketType.PUBREC


class AckBudget:
    """QoS 1/2 messages the application holds unacknowledged, across all clients."""

    __slots__ = ("limit", "starved", "waiting")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiting = 0
        #: Connections not read from until the application catches up.
        self.starved: list[Inbound] = []

    def starve(self, conn: Inbound) -> None:
        """`conn` added one past the limit (`_on_publish` counts them in place).
        The application is behind (its write queue is full): read no more from
        anyone who adds to it until it catches up."""
        conn.throttle()
        self.starved.append(conn)

    def done(self, count: int = 1) -> None:
        self.waiting -= count
        if self.starved and self.waiting <= self.limit // 2:
            starved = self.starved
            self.starved = []
            for conn in starved:
                conn.unthrottle()


#: A settlement waited for, its messages' ack entries, their member numbers.
Held = tuple[Settling, list[Ack], list[int]]


class InboundHost(Protocol):
    """What handling a client's messages needs of the server (the `Broker`)."""

    @property
    def config(self) -> BrokerConfig: ...
    @property
    def stats(self) -> BrokerStats: ...
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def delivery(self) -> Delivery: ...
    @property
    def acks(self) -> AckBudget: ...
    @property
    def hooks(self) -> Hooks: ...
    @property
    def output(self) -> Output: ...
    def incoming(
        self, client: ClientInfo, message: Message, session: Session | None
    ) -> PublishOutcome: ...


class Inbound:
    """The connection's handling of PUBLISH, PUBREC and DISCONNECT (a base of
    `Connection`, which has the attributes and I/O declared here)."""

    __slots__ = ()

    broker: InboundHost
    machine: Machine
    session: Session | None
    client: ClientInfo | None
    _paused: bool
    transport: asyncio.Transport | None
    #: Packets written since the last flush (None: none) and their bytes (output.py).
    _wbuf: list[bytes] | None
    _wbytes: int
    #: The settlement this connection waits for last, with its messages' ack
    #: entries and member numbers in it, in arrival order; or None.
    _settling: Held | None

    if TYPE_CHECKING:

        def write(self, data: bytes) -> None: ...
        def close(
            self, reason: CloseReason, code: int | None = None, *, send_will: bool = True
        ) -> None: ...
        def teardown(self, reason: CloseReason, *, send_will: bool = True) -> None: ...
        def protocol_error(self, code: int, detail: str) -> None: ...
        def client_id_for_log(self) -> str: ...
        def throttle(self) -> None: ...
        def unthrottle(self) -> None: ...
        def send_pubrel(self, packet_id: int) -> None: ...

    def _on_publish(self, packet: Publish) -> None:
        broker = self.broker
        session = self.session
        client = self.client
        assert session is not None and client is not None
        broker.stats.messages_in += 1
        machine = self.machine
        props = packet.properties
        topic = packet.topic
        if props is not EMPTY or not topic or "+" in topic or "#" in topic:
            # Without properties check_publish checks only the topic: a valid one
            # (every message's) needs no call.
            machine.check_publish(packet)
            props = packet.properties  # without its topic alias, if it had one
        qos = packet.qos
        if qos:
            pid = packet.packet_id
            assert pid is not None
            if qos == 2 and session.qos2_received(pid):
                # A resent QoS 2 message we already have: acknowledge, deliver nothing.
                self._queue_ack(pid, _PUBREC, 0)
                return
            qos2 = session.inbound_qos2  # its size is session.qos2_count(), without the call
            acks = machine.acks
            if machine.version != MQTT_5:
                # admit's answer for 3.1.1, without its call: only acknowledgements
                # waiting for the application count, and reading pauses at the limit.
                if acks is not None and len(acks) >= machine.limits.receive_maximum:
                    self.throttle()
            elif acks is not None or qos2 is not None:
                # Else admit says "go on" (the Receive Maximum is at least 1): no call.
                machine.admit(len(qos2) if qos2 is not None else 0)  # False, or it raises
        if props is not EMPTY and props.message_expiry_interval is not None:
            packet.expires_at = broker.loop.time() + props.message_expiry_interval
        delivery = broker.delivery
        delivery.current = self  # type: ignore[assignment]  # a Connection: a Link
        try:
            if type(broker.hooks) is OpenHooks and not packet.retain:
                # incoming's path for an open server (no hook to ask, nothing to
                # retain), without its call: `thingshub broker`'s every message.
                outcome: PublishOutcome = None
                if not delivery.route(packet, client.session_key) and machine.version == MQTT_5:
                    outcome = ReasonCode.NO_MATCHING_SUBSCRIBERS
            else:
                # The packet is the application's Message (a Publish is one): not copied.
                outcome = broker.incoming(client, packet, session)
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
            # _queue_ack and _send_ack written out: this is every QoS 1/2 message's path.
            code = outcome or 0
            if machine.acks is None or machine.ack_now(pid, ack_type, code):
                # Nothing waits before it (ack_now's answer, without its call).
                if not code:  # machine.ack's own answer to a success, without its calls
                    # encode_ack and Connection.write written out: a PUBACK (PUBREC)
                    # of success, a window-1 publisher's every message.
                    if machine.state is not CLOSED:
                        data = pack_ack(0x40 if qos == 1 else 0x50, 2, pid)
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
                        self._wbytes += 4  # type: ignore[misc]  # a slot of Connection
                    return
                self.write(machine.ack(pid, ack_type, code))
                if machine.refuses_qos2(ack_type, code):
                    session.qos2_release(pid)
        else:
            # Machine.ack_later written out: every message the application settles later.
            entry: Ack = [pid, ack_type, None]
            acks = machine.acks
            if acks is None:
                acks = machine.acks = deque()
            acks.append(entry)
            if isinstance(outcome, asyncio.Future):
                # A partial, not a lambda: no Python frame of its own per message.
                outcome.add_done_callback(partial(self._ack_done, entry))
            else:
                # A settlement: one waiter per connection, its messages listed
                # after it as (ack entry, member) pairs.
                held = self._settling
                if held is None or held[0] is not outcome:
                    held = (outcome, [entry], [outcome.last])
                    self._settling = held  # type: ignore[misc]  # a slot of Connection
                    outcome.wait(partial(self._settled, held))
                else:
                    held[1].append(entry)
                    held[2].append(outcome.last)
            budget = broker.acks  # AckBudget.add written out
            budget.waiting += 1
            if budget.waiting > budget.limit:
                budget.starve(self)

    def _queue_ack(self, pid: int, ack_type: int, code: int) -> None:
        if self.machine.ack_now(pid, ack_type, code):
            self._send_ack(pid, ack_type, code)

    def _send_ack(self, pid: int, ack_type: int, code: int) -> None:
        machine = self.machine
        self.write(machine.ack(pid, ack_type, code))
        if code and machine.refuses_qos2(ack_type, code):
            assert self.session is not None
            self.session.qos2_release(pid)

    def _ack_done(self, entry: Ack, fut: asyncio.Future[int]) -> None:
        self.broker.acks.done()
        machine = self.machine
        if machine.state is CLOSED:
            return
        if fut.cancelled() or fut.exception() is not None:
            code = self._failed(None if fut.cancelled() else fut.exception())
            if code is None:
                return
            machine.settle(entry, code)
        else:
            machine.settle(entry, fut.result() or 0)
        self._send_ready()

    def _failed(self, exc: BaseException | None) -> int | None:
        """A message's handling failed (`exc`; None: cancelled): the code to
        acknowledge it with, or None once the connection is closed for it."""
        if exc is not None:
            log.error("handling a message from %s failed", self.client_id_for_log(), exc_info=exc)
        if self.machine.version != MQTT_5:
            # No way to say "failed" in 3.1.1: close unacknowledged, so the client resends.
            self.close(CloseReason.PROTOCOL_ERROR, send_will=True)
            return None
        return ReasonCode.UNSPECIFIED_ERROR

    def _settled(self, held: Held) -> None:
        """A settlement this connection waited for is decided: its messages'
        acknowledgements, all at once, in arrival order."""
        if self._settling is held:
            self._settling = None  # type: ignore[misc]  # a slot of Connection
        settlement, entries, members = held
        self.broker.acks.done(len(entries))
        machine = self.machine
        if machine.state is CLOSED:
            return
        if settlement.clean:  # no member failed: all 0 (the common case)
            machine.settle_all(entries, 0)
        else:
            for entry, member in zip(entries, members, strict=True):
                outcome = settlement.outcome(member)
                code = self._failed(outcome) if isinstance(outcome, BaseException) else outcome
                if code is None:
                    return
                machine.settle(entry, code)
        self._send_ready()

    def _send_ready(self) -> None:
        """Send the acknowledgements that may leave now, in one write; read again
        if it was paused for them and half have left."""
        machine = self.machine
        data, ended = machine.drain_acks()
        if data:
            self.write(data)
            if ended is not None:
                assert self.session is not None
                for pid in ended:
                    self.session.qos2_release(pid)
        if self._paused and machine.pending_acks() <= self.broker.config.receive_maximum // 2:
            self.unthrottle()

    def _on_pubrec(self, packet_id: int, reason_code: int) -> None:
        session = self.session
        assert session is not None
        if self.broker.delivery.received(session, packet_id, reason_code):
            self.send_pubrel(packet_id)
        elif packet_id not in session.inflight and reason_code < 0x80:
            answer = self.machine.pubrel(packet_id, known=False)
            if answer is not None:
                self.write(answer)

    def _on_pubrel(self, packet_id: int) -> None:
        assert self.session is not None
        known = self.session.qos2_release(packet_id)
        self.write(self.machine.pubcomp(packet_id, known))

    def _on_disconnect(self, packet: Disconnect) -> None:
        session = self.session
        assert session is not None
        v5 = self.machine.version == MQTT_5
        if v5:
            expiry = packet.properties.session_expiry_interval
            if expiry is not None:
                if session.expiry_interval == 0 and expiry != 0:
                    self.protocol_error(
                        ReasonCode.PROTOCOL_ERROR, "session expiry set on DISCONNECT"
                    )
                    return
                session.expiry_interval = min(expiry, self.broker.config.max_session_expiry)
        send_will = v5 and packet.reason_code == ReasonCode.DISCONNECT_WITH_WILL
        self.teardown(CloseReason.CLIENT_DISCONNECT, send_will=send_will)
        if self.transport is not None:  # Connection.end_transport written out
            self.transport.close()
