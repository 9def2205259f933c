"""SUBSCRIBE and UNSUBSCRIBE: a session's subscriptions, in the router and in the session.

Rules:
- A filter that is no topic filter gets 0x8F (5.0) or 0x80 (3.1.1); a shared
  subscription with no-local is a protocol error [MQTT-3.8.3-4].
- The application authorizes each filter (`Hooks.authorize_subscribe`): False
  is 0x87, a code of 0x80 or above is that code; an exception in the hook is
  logged, counted and refuses the filter.
- Subscribing again to a filter replaces its options. Retained messages follow
  the SUBACK: never for a shared subscription or under retain handling 2, and
  under retain handling 1 only for a filter not subscribed before.
- `Hooks.on_subscribe` hears of the filters granted, after the SUBACK.
"""

from __future__ import annotations

from thingshub.mqtt.codec.packets import MQTT_5, Suback, Subscribe, Unsuback, Unsubscribe
from thingshub.mqtt.codec.reasons import SUBACK_FAILURE_V3, ReasonCode
from thingshub.mqtt.codec.writer import encode
from thingshub.mqtt.hooks import Hooks
from thingshub.mqtt.logs import logger
from thingshub.mqtt.server.connection import Connection
from thingshub.mqtt.server.delivery import BrokerStats, Delivery, plain_filter
from thingshub.mqtt.server.session import Subscription
from thingshub.mqtt.topics import split_shared, valid_topic_filter

log = logger("thingshub.mqtt")


class Subscriptions:
    __slots__ = ("delivery", "hooks", "stats")

    def __init__(self, hooks: Hooks, stats: BrokerStats, delivery: Delivery) -> None:
        self.hooks = hooks
        self.stats = stats
        self.delivery = delivery

    def subscribe(self, conn: Connection, packet: Subscribe) -> None:
        session = conn.session
        client = conn.client
        assert session is not None and client is not None
        v5 = conn.version == MQTT_5
        sub_id = None
        if packet.properties.subscription_identifiers:
            sub_id = packet.properties.subscription_identifiers[0]
        codes: list[int] = []
        granted: list[tuple[str, int]] = []
        new_subs: list[tuple[Subscription, str, bool]] = []
        for req in packet.subscriptions:
            topic_filter = req.topic_filter
            try:
                group, plain = split_shared(topic_filter)
            except ValueError:
                group, plain = None, ""
            if not plain or not valid_topic_filter(plain):
                codes.append(ReasonCode.TOPIC_FILTER_INVALID if v5 else SUBACK_FAILURE_V3)
                continue
            if group is not None and req.no_local and v5:
                conn.protocol_error(ReasonCode.PROTOCOL_ERROR, "no-local on a shared subscription")
                return
            try:
                allowed = self.hooks.authorize_subscribe(client, topic_filter)
            except Exception:
                self.stats.hook_errors += 1
                log.exception("authorize_subscribe hook failed for %s", client.client_id)
                allowed = False
            if allowed is not True:
                self.stats.denied_subscribe += 1
                refusal = (
                    int(allowed)
                    if allowed is not False and allowed >= 0x80
                    else ReasonCode.NOT_AUTHORIZED
                )
                codes.append(refusal if v5 else SUBACK_FAILURE_V3)
                continue
            qos = req.qos
            existed = topic_filter in session.subscriptions
            sub = Subscription(
                session,
                topic_filter,
                qos,
                req.no_local,
                req.retain_as_published,
                req.retain_handling,
                sub_id,
                group,
            )
            session.subscribe(sub)
            self.delivery.router.add(plain, sub)
            codes.append(qos)
            granted.append((topic_filter, qos))
            new_subs.append((sub, plain, existed))
        conn.write(encode(Suback(packet.packet_id, codes), conn.version))
        for sub, plain, existed in new_subs:
            if sub.group is not None or sub.retain_handling == 2:
                continue
            if sub.retain_handling == 1 and existed:
                continue
            self.delivery.send_retained(session, sub, plain)
        if granted:
            try:
                self.hooks.on_subscribe(client, granted)
            except Exception:
                self.stats.hook_errors += 1
                log.exception("on_subscribe hook failed for %s", client.client_id)

    def unsubscribe(self, conn: Connection, packet: Unsubscribe) -> None:
        session = conn.session
        assert session is not None
        codes: list[int] = []
        for topic_filter in packet.topic_filters:
            sub = session.subscriptions.pop(topic_filter, None)
            if sub is None:
                codes.append(ReasonCode.NO_SUBSCRIPTION_EXISTED)
                continue
            self.delivery.router.remove(plain_filter(sub), session.client_id, sub.group)
            codes.append(ReasonCode.SUCCESS)
        reply = Unsuback(packet.packet_id, codes if conn.version == MQTT_5 else [])
        conn.write(encode(reply, conn.version))
