"""Topic rights of docs/protocols.md section 1, table by table.

A device reaches only the topics that carry its own ids (plus the id-less
ThingsPanel uplink topics it publishes on). Anything else is refused, and a
wildcard subscription is granted only when every topic it can match is the
device's own. The properties at the end check the tables' promise against
*other* devices' topics, since a leak is a topic two devices can both reach.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thingshub.core.topics import filters_overlap
from thingshub.dialects.onenet import topics as onenet
from thingshub.dialects.thingspanel import topics as thingspanel

PID = "p"
NAME = "d"
DN = "dev-42"

# ---------------------------------------------------------------- OneNET publish

ONENET_PUBLISH_OK = [
    "$sys/p/d/image/update",
    "$sys/p/d/image/get",
    "$sys/p/d/cmd/response/1",
    "$sys/p/d/cmd/response/0f3c9a1b2c",
    "$sys/p/d/cmd/response/a.b-c_D",
]

ONENET_PUBLISH_REFUSED = [
    # another device or product
    "$sys/p/d2/image/update",
    "$sys/p/dd/image/update",
    "$sys/p2/d/image/update",
    "$sys/P/d/image/update",
    "$sys/p/D/cmd/response/1",
    # platform → device topics of its own
    "$sys/p/d/image/update/accepted",
    "$sys/p/d/image/update/rejected",
    "$sys/p/d/image/update/delta",
    "$sys/p/d/image/get/accepted",
    "$sys/p/d/image/get/rejected",
    "$sys/p/d/cmd/request/x",
    "$sys/p/d/cmd/response/1/accepted",
    "$sys/p/d/cmd/response/1/rejected",
    # wildcard-looking (a topic name never holds a wildcard)
    "$sys/p/d/cmd/response/+",
    "$sys/p/d/cmd/response/#",
    "$sys/p/d/image/+",
    "$sys/p/d/#",
    "$sys/+/d/image/update",
    "$sys/p/+/image/update",
    "#",
    # malformed
    "",
    "$sys/p/d",
    "$sys/p/d/",
    "$sys/p/d/image",
    "$sys/p/d/image/update/",
    "$sys/p/d//image/update",
    "$sys/p/d/image//update",
    "$sys//p/d/image/update",
    "/$sys/p/d/image/update",
    "$SYS/p/d/image/update",
    "sys/p/d/image/update",
    "$sys/p/d/Image/update",
    "$sys/p/d/cmd/response",
    "$sys/p/d/cmd/response/1/2",
    "$sys/p/d/cmd/request",
    # the other family's topics are not OneNET's
    "devices/telemetry",
]


@pytest.mark.parametrize("topic", ONENET_PUBLISH_OK)
def test_onenet_device_publishes_its_uplink(topic: str) -> None:
    """image/update, image/get and cmd/response/{id} of its own pid/name are allowed."""
    assert onenet.may_publish(PID, NAME, topic)


@pytest.mark.parametrize("topic", ONENET_PUBLISH_REFUSED)
def test_onenet_device_publishes_nothing_else(topic: str) -> None:
    """Everything else is refused: it would forge platform messages or reach another device.

    (Bug fixed: `cmd/response/+` and `cmd/response/#` were allowed, the
    wildcard being read as a message id.)
    """
    assert not onenet.may_publish(PID, NAME, topic)


# ---------------------------------------------------------------- OneNET subscribe

ONENET_SUBSCRIBE_OK = [
    "$sys/p/d/#",
    "$sys/p/d/+/#",
    "$sys/p/d/cmd/#",
    "$sys/p/d/cmd/request/+",
    "$sys/p/d/cmd/request/42",
    "$sys/p/d/cmd/response/+/+",
    "$sys/p/d/cmd/response/+/accepted",
    "$sys/p/d/image/update/accepted",
    "$sys/p/d/image/update/rejected",
    "$sys/p/d/image/update/delta",
    "$sys/p/d/image/get/+",
]

ONENET_SUBSCRIBE_REFUSED = [
    "$sys/+/+/#",
    "$sys/+/+/cmd/request/+",
    "$sys/+/d/#",
    "$sys/p/+/#",
    "$sys/p/+/cmd/request/+",
    "$sys/#",
    "$sys/p/#",
    "#",
    "+/#",
    "+/p/d/#",
    "+/+/+/#",
    "$sys/p/other/#",
    "$sys/other/d/#",
    "$sys/p/dd/#",
    "$sys/p/d2/cmd/request/+",
    "$sys/P/d/#",
    "$share/g/$sys/p/d/#",
    "$share/g/$sys/p/d/cmd/request/+",
    "devices/#",
    "devices/command/d/+",
]


@pytest.mark.parametrize("topic_filter", ONENET_SUBSCRIBE_OK)
def test_onenet_device_subscribes_under_its_prefix(topic_filter: str) -> None:
    """Any filter whose every match lies under `$sys/{pid}/{name}/` is granted."""
    assert onenet.may_subscribe(PID, NAME, topic_filter)


@pytest.mark.parametrize("topic_filter", ONENET_SUBSCRIBE_REFUSED)
def test_onenet_device_subscribes_to_nothing_wider(topic_filter: str) -> None:
    """A filter that can match one topic of another device, or any other topic, is refused."""
    assert not onenet.may_subscribe(PID, NAME, topic_filter)


# ---------------------------------------------------------------- ThingsPanel publish

MESSAGE_IDS = ["1", "1234567", "a-b_c.D", "x" * 64]

THINGSPANEL_PUBLISH_OK = ["devices/telemetry", "ota/devices/progress"] + [
    topic
    for mid in MESSAGE_IDS
    for topic in (
        f"devices/attributes/{mid}",
        f"devices/event/{mid}",
        f"devices/command/response/{mid}",
        f"devices/attributes/set/response/{mid}",
    )
]

THINGSPANEL_PUBLISH_REFUSED = [
    "devices/telemetry/x",
    "devices/telemetry/",
    "devices/command/dn/1",
    "devices/attributes",
    "devices/event",
    "devices/attributes/1/2",
    "devices/command/response",
    "devices/command/response/1/2",
    "ota/devices/progress/x",
    "Devices/telemetry",
    "/devices/telemetry",
    "devices//telemetry",
    # platform → device topics, its own included
    f"devices/telemetry/control/{DN}",
    f"devices/attributes/set/{DN}/1",
    f"devices/attributes/get/{DN}",
    f"devices/command/{DN}/1",
    f"ota/devices/inform/{DN}",
    f"devices/attributes/response/{DN}/1",
    f"devices/event/response/{DN}/1",
    # wildcard-looking
    "devices/attributes/+",
    "devices/event/#",
    "devices/command/response/+",
    "devices/#",
    "devices/+",
    # the other family
    "$sys/p/d/image/update",
]


@pytest.mark.parametrize("topic", THINGSPANEL_PUBLISH_OK)
def test_thingspanel_device_publishes_the_six_uplink_topics(topic: str) -> None:
    """The six device → platform topics, with any message id, carry no device id: allowed."""
    assert thingspanel.may_publish(DN, topic)


@pytest.mark.parametrize("topic", THINGSPANEL_PUBLISH_REFUSED)
def test_thingspanel_device_publishes_nothing_else(topic: str) -> None:
    """Downlink topics (even its own) and anything malformed or wildcarded are refused."""
    assert not thingspanel.may_publish(DN, topic)


# ---------------------------------------------------------------- ThingsPanel subscribe

SEVEN = [p.format(dn=DN) for p in thingspanel.SUBSCRIBE_PATTERNS]

THINGSPANEL_SUBSCRIBE_OK = [
    *SEVEN,
    f"devices/attributes/set/{DN}/7",
    f"devices/command/{DN}/1234567",
    f"devices/attributes/response/{DN}/x",
    f"devices/event/response/{DN}/x",
]

THINGSPANEL_SUBSCRIBE_REFUSED = [
    *(p.format(dn="dev-43") for p in thingspanel.SUBSCRIBE_PATTERNS),
    *(p.format(dn="dev-4") for p in thingspanel.SUBSCRIBE_PATTERNS),
    *(p.format(dn="+") for p in thingspanel.SUBSCRIBE_PATTERNS),
    *(p.format(dn="#") for p in thingspanel.SUBSCRIBE_PATTERNS),
    "devices/+/control/" + DN,
    f"devices/+/set/{DN}/+",
    f"devices/attributes/+/{DN}/+",
    f"+/devices/inform/{DN}",
    "devices/#",
    "devices/+/#",
    "#",
    "+/#",
    "ota/#",
    f"devices/command/{DN}/#",  # also matches devices/command/{DN} and deeper levels
    f"devices/command/{DN}",
    f"devices/telemetry/control/{DN}/#",
    f"devices/telemetry/control/{DN}/x",
    f"$share/g/devices/command/{DN}/+",
    # the uplink topics, of every device
    "devices/telemetry",
    "devices/attributes/+",
    "devices/command/response/+",
    "devices/attributes/set/response/+",
    "ota/devices/progress",
]


@pytest.mark.parametrize("topic_filter", THINGSPANEL_SUBSCRIBE_OK)
def test_thingspanel_device_subscribes_to_its_downlink(topic_filter: str) -> None:
    """The seven platform → device patterns with its own number, or narrower, are granted."""
    assert thingspanel.may_subscribe(DN, topic_filter)


@pytest.mark.parametrize("topic_filter", THINGSPANEL_SUBSCRIBE_REFUSED)
def test_thingspanel_device_subscribes_to_nothing_else(topic_filter: str) -> None:
    """Other numbers, wildcards across devices and the uplink topics are refused."""
    assert not thingspanel.may_subscribe(DN, topic_filter)


def test_device_number_response_cannot_read_every_devices_answers() -> None:
    """With number `response`, two own patterns coincide with everyone's uplink: refuse them.

    `devices/command/{dn}/+` becomes `devices/command/response/+`, which is
    where every ThingsPanel device publishes its command answers (and the
    broker routes device publishes to subscribers). (Bug fixed: granted.)
    Its other patterns stay granted; the gateway form has the same two.
    """
    leaking = {
        "devices/command/response/+",
        "devices/attributes/set/response/+",
        "gateway/command/response/+",
        "gateway/attributes/set/response/+",
    }
    for topic_filter in (p.format(dn="response") for p in thingspanel.SUBSCRIBE_PATTERNS):
        assert thingspanel.may_subscribe("response", topic_filter) is (topic_filter not in leaking)
    assert not thingspanel.may_subscribe("response", "devices/command/response/1")
    assert not thingspanel.may_subscribe("response", "devices/attributes/set/response/1")


# ---------------------------------------------------------------- properties

#: Device ids, with the fixed words of the topic tables over-represented.
identifiers = st.one_of(
    st.sampled_from(
        ["response", "set", "get", "control", "inform", "devices", "command", "image", "cmd"]
    ),
    st.from_regex(r"[A-Za-z0-9_.-]{1,8}", fullmatch=True),
)


def candidate_filters(topics: list[str]) -> list[str]:
    """Each topic, and each with one level made `+`, or the tail from one level made `#`."""
    out: list[str] = []
    for topic in topics:
        levels = topic.split("/")
        out.append(topic)
        for i in range(len(levels)):
            out.append("/".join([*levels[:i], "+", *levels[i + 1 :]]))
            out.append("/".join([*levels[:i], "#"]))
    return out


@given(own=identifiers, other=identifiers)
def test_thingspanel_grants_never_reach_another_device(own: str, other: str) -> None:
    """No granted filter can match another device's downlink or any device's uplink."""
    topics = [p.format(dn=own).replace("+", "m1") for p in thingspanel.SUBSCRIBE_PATTERNS]
    granted = [f for f in candidate_filters(topics) if thingspanel.may_subscribe(own, f)]
    assert granted
    for f in granted:
        assert not any(filters_overlap(f, p) for p in thingspanel.PUBLISH_PATTERNS)
        if other != own:
            theirs = [p.format(dn=other) for p in thingspanel.SUBSCRIBE_PATTERNS]
            assert not any(filters_overlap(f, p) for p in theirs), (f, other)


@given(pid=identifiers, name=identifiers, other_pid=identifiers, other_name=identifiers)
def test_onenet_grants_never_reach_another_device(
    pid: str, name: str, other_pid: str, other_name: str
) -> None:
    """No granted filter overlaps another device's `$sys/` prefix, whatever the ids."""
    topics = [
        f"$sys/{pid}/{name}/{t}"
        for t in ("image/update/accepted", "cmd/request/1", "cmd/response/1/accepted")
    ]
    granted = [f for f in candidate_filters(topics) if onenet.may_subscribe(pid, name, f)]
    assert f"$sys/{pid}/{name}/#" in granted
    for f in granted:
        if (other_pid, other_name) != (pid, name):
            assert not filters_overlap(f, f"$sys/{other_pid}/{other_name}/#"), f


UPLINK_WORDS = [
    "image",
    "update",
    "get",
    "cmd",
    "response",
    "request",
    "accepted",
    "x",
    "+",
    "#",
    "",
]


@given(
    pid=identifiers,
    name=identifiers,
    other=identifiers,
    own_prefix=st.booleans(),
    rest=st.lists(st.sampled_from(UPLINK_WORDS), max_size=4),
)
def test_onenet_publish_is_exactly_the_own_uplink(
    pid: str, name: str, other: str, own_prefix: bool, rest: list[str]
) -> None:
    """may_publish agrees with a direct reading of the table, for any assembled topic."""
    if rest == ["cmd", "response", ""]:
        return  # an empty cmd id level: legal MQTT, left undecided by the spec (allowed today)
    device = name if own_prefix else other
    topic = "/".join(["$sys", pid, device, *rest])
    expected = device == name and (
        rest in (["image", "update"], ["image", "get"])
        or (len(rest) == 3 and rest[:2] == ["cmd", "response"] and rest[2] not in ("+", "#"))
    )
    assert onenet.may_publish(pid, name, topic) is expected
