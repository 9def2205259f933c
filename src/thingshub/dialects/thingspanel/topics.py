"""ThingsPanel's topics (direct devices and gateways) and who may use them.

Rules:
- Device-to-platform topics carry no device id (the connection says who
  it is); platform-to-device topics carry the device number, and a device
  subscribes only to filters whose every match carries its own number.
- `ota/devices/infrom/{dn}` (sic) is ThingsPanel's default configuration's
  spelling of the OTA inform topic; both spellings may be subscribed to.
- `devices/status/{dn}` carries the device's presence ("1" online, "0"
  offline, published by the platform); the device may publish there too,
  which is accepted and ignored.
- Gateway uplinks (`gateway/...`) and `devices/register` carry no id either
  and are open to every device; the platform's answers and requests carry
  the (top) gateway's device number.
- No filter that can match a device-to-platform topic is ever granted: with
  the device number `response`, `devices/command/{dn}/+` would otherwise be
  `devices/command/response/+`, every device's command answers.
"""

from __future__ import annotations

from thingshub.core.topics import filter_within, filters_overlap, topic_matches

#: The first levels of every ThingsPanel topic.
ROOTS = ("devices/", "ota/devices/", "gateway/")

#: Topics a device publishes on (no device id: identity comes from the connection).
PUBLISH_PATTERNS = (
    "devices/telemetry",
    "devices/attributes/+",
    "devices/event/+",
    "ota/devices/progress",
    "devices/command/response/+",
    "devices/attributes/set/response/+",
    "devices/register",
    "gateway/telemetry",
    "gateway/attributes/+",
    "gateway/event/+",
    "gateway/command/response/+",
    "gateway/attributes/set/response/+",
)

#: The publish topics without a wildcard: every device may publish there.
OPEN = frozenset(p for p in PUBLISH_PATTERNS if "+" not in p)

#: Topics the platform publishes to a device, `{dn}` being its device number.
SUBSCRIBE_PATTERNS = (
    "devices/telemetry/control/{dn}",
    "devices/attributes/set/{dn}/+",
    "devices/attributes/get/{dn}",
    "devices/command/{dn}/+",
    "ota/devices/inform/{dn}",
    "ota/devices/infrom/{dn}",  # the spelling of ThingsPanel's default configuration
    "devices/attributes/response/{dn}/+",
    "devices/event/response/{dn}/+",
    "devices/status/{dn}",
    "devices/register/response/{dn}",
    "gateway/telemetry/control/{dn}",
    "gateway/attributes/set/{dn}/+",
    "gateway/attributes/get/{dn}",
    "gateway/command/{dn}/+",
    "gateway/attributes/response/{dn}/+",
    "gateway/event/response/{dn}/+",
)

#: A device may also publish on its own status topic (accepted and ignored: its
#: presence comes from its connection).
STATUS = "devices/status/"


def may_publish(device_number: str, topic: str) -> bool:
    if topic == "devices/telemetry":  # the hot path: one comparison
        return True
    if topic == STATUS + device_number:
        return True
    return any(topic_matches(p, topic) for p in PUBLISH_PATTERNS)


def may_subscribe(device_number: str, topic_filter: str) -> bool:
    if any(filters_overlap(topic_filter, p) for p in PUBLISH_PATTERNS):
        return False
    return any(filter_within(topic_filter, p.format(dn=device_number)) for p in SUBSCRIBE_PATTERNS)
