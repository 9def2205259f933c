"""ThingsPanel direct-device MQTT: topics and login.

Rules (protocols.md sections 1 and 4):
- Login with the user name and password issued at device creation.
- Device-to-platform topics carry no device id (the connection says who
  it is); platform-to-device topics carry the device number, and a device
  subscribes only to filters whose every match carries its own number.
- No filter that can match a device-to-platform topic is ever granted: with
  the device number `response`, `devices/command/{dn}/+` would otherwise be
  `devices/command/response/+`, every device's command answers.
"""

from __future__ import annotations

from thingshub.core.jsontext import dumps
from thingshub.core.messages import (
    AttributesGet,
    AttributesReport,
    CallAnswer,
    Control,
    DeviceCall,
    DeviceRef,
    EventReport,
    Inbound,
    OtaInform,
    OtaProgress,
    ReportReply,
    TelemetryReport,
)
from thingshub.core.topics import filter_within, filters_overlap, topic_matches

#: Topics a device publishes on (no device id: identity comes from the connection).
PUBLISH_PATTERNS = (
    "devices/telemetry",
    "devices/attributes/+",
    "devices/event/+",
    "ota/devices/progress",
    "devices/command/response/+",
    "devices/attributes/set/response/+",
)

#: Topics the platform publishes to a device, `{dn}` being its device number.
SUBSCRIBE_PATTERNS = (
    "devices/telemetry/control/{dn}",
    "devices/attributes/set/{dn}/+",
    "devices/attributes/get/{dn}",
    "devices/command/{dn}/+",
    "ota/devices/inform/{dn}",
    "devices/attributes/response/{dn}/+",
    "devices/event/response/{dn}/+",
)


def may_publish(device_number: str, topic: str) -> bool:
    if topic == "devices/telemetry":  # the hot path: one comparison
        return True
    return any(topic_matches(p, topic) for p in PUBLISH_PATTERNS)


def may_subscribe(device_number: str, topic_filter: str) -> bool:
    if any(filters_overlap(topic_filter, p) for p in PUBLISH_PATTERNS):
        return False
    return any(filter_within(topic_filter, p.format(dn=device_number)) for p in SUBSCRIBE_PATTERNS)


# ---------------------------------------------------------------- messages

_ANSWERS = {
    "devices/command/response/": "command",
    "devices/attributes/set/response/": "attributes_set",
}


def decode(ref: DeviceRef, topic: str, payload: bytes) -> Inbound | None:
    """The message a device sent on a ThingsPanel topic; None if not ours.

    Message ids are one topic level; a topic with more levels is not ours.
    """
    if topic == "devices/telemetry":
        return TelemetryReport(payload)
    if topic == "ota/devices/progress":
        return OtaProgress(payload)
    for prefix, kind in _ANSWERS.items():
        if topic.startswith(prefix):
            message_id = topic[len(prefix) :]
            return CallAnswer(kind, message_id, payload) if _one_level(message_id) else None
    if topic.startswith("devices/attributes/"):
        message_id = topic[len("devices/attributes/") :]
        return AttributesReport(message_id, payload) if _one_level(message_id) else None
    if topic.startswith("devices/event/"):
        message_id = topic[len("devices/event/") :]
        return EventReport(message_id, payload) if _one_level(message_id) else None
    return None


def _one_level(message_id: str) -> bool:
    return bool(message_id) and "/" not in message_id


def encode(ref: DeviceRef, message: object) -> tuple[str, bytes] | None:
    """The (topic, payload) carrying a message to a device; None if not ours."""
    dn = ref.device_number
    if isinstance(message, DeviceCall):
        if message.kind == "command":
            return f"devices/command/{dn}/{message.message_id}", dumps(message.body)
        return f"devices/attributes/set/{dn}/{message.message_id}", dumps(message.body)
    if isinstance(message, Control):
        return f"devices/telemetry/control/{dn}", dumps(message.values)
    if isinstance(message, AttributesGet):
        return f"devices/attributes/get/{dn}", dumps({"keys": message.keys})
    if isinstance(message, ReportReply):
        return f"devices/{message.kind}/response/{dn}/{message.message_id}", dumps(message.body)
    if isinstance(message, OtaInform):
        return f"ota/devices/inform/{dn}", dumps(message.body)
    return None
