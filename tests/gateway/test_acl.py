"""Topic rights over real MQTT (docs/protocols.md section 1): a device reaches only its own
topics, with the refusal codes of 3.1.1 and 5.0."""

from __future__ import annotations

import pytest

from tests.conftest import Registered, RunningPlatform
from tests.mqtt.clients import PahoClient

OWN_SUBSCRIPTIONS = [
    "$sys/p1/d1/#",
    "$sys/p1/d1/image/update/accepted",
    "$sys/p1/d1/image/update/delta",
    "$sys/p1/d1/image/get/+",
    "$sys/p1/d1/cmd/request/+",
    "$sys/p1/d1/cmd/response/+/+",
    "devices/telemetry/control/{dn}",
    "devices/attributes/set/{dn}/+",
    "devices/attributes/get/{dn}",
    "devices/command/{dn}/+",
    "ota/devices/inform/{dn}",
    "devices/attributes/response/{dn}/+",
    "devices/event/response/{dn}/+",
]
FOREIGN_SUBSCRIPTIONS = [
    "#",
    "+/#",
    "$sys/#",
    "$sys/+/+/image/update/delta",
    "$sys/p1/+/cmd/request/+",
    "$sys/p1/d2/#",
    "$sys/p2/d1/#",
    "devices/#",
    "devices/command/+/+",
    "devices/command/{other}/+",
    "devices/telemetry",
    "ota/devices/inform/+",
    "$share/g/$sys/p1/d1/#",
    "other/topic",
]


def device(platform: RunningPlatform, dev: Registered, version: int) -> PahoClient:
    return PahoClient(
        platform.mqtt_port,
        f"c{version}",
        version=version,
        username=dev.username,
        password=dev.password,
    )


@pytest.mark.parametrize("version", [4, 5])
def test_subscriptions(platform: RunningPlatform, register, version: int) -> None:
    dev = register("p1", "d1")
    other = register("p1", "d2")
    client = device(platform, dev, version)
    own = [f.format(dn=dev.device_number) for f in OWN_SUBSCRIPTIONS]
    assert client.subscribe(*own, qos=1) == [1] * len(own)
    refusal = 0x87 if version == 5 else 0x80
    foreign = [f.format(other=other.device_number) for f in FOREIGN_SUBSCRIPTIONS]
    assert client.subscribe(*foreign, qos=1) == [refusal] * len(foreign)


@pytest.mark.parametrize("version", [4, 5])
def test_publishing_to_a_foreign_topic_is_refused_and_not_delivered(
    platform: RunningPlatform, register, version: int
) -> None:
    dev = register("p1", "d1")
    victim = register("p1", "d2")
    listener = device(platform, victim, 5)
    listener.subscribe(f"devices/command/{victim.device_number}/+", "$sys/p1/d2/#", qos=1)
    client = device(platform, dev, version)
    expected = 0x87 if version == 5 else 0  # 3.1.1: PUBACK as Mosquitto does, dropped
    for topic in (
        f"devices/command/{victim.device_number}/1",
        "$sys/p1/d2/cmd/request/1",
        "$sys/p1/d1/image/update/accepted",
        "anything/else",
    ):
        assert client.publish(topic, b"{}", qos=1) == expected, topic
    listener.fence()
    assert listener.messages == []
    before = platform.call(lambda: platform.platform.broker.stats.denied_publish)
    assert before >= 4


@pytest.mark.parametrize("version", [4, 5])
def test_own_device_topics_are_accepted(platform: RunningPlatform, register, version: int) -> None:
    dev = register("p1", "d1")
    client = device(platform, dev, version)
    for topic in (
        "devices/telemetry",
        "devices/attributes/123",
        "devices/event/9",
        "ota/devices/progress",
        "devices/command/response/5",
        "devices/attributes/set/response/5",
        "$sys/p1/d1/image/get",
        "$sys/p1/d1/image/update",
        "$sys/p1/d1/cmd/response/abc",
    ):
        code = client.publish(topic, b"{}", qos=1)
        assert code in (0, 0x10), (topic, code)  # 0x10: no subscriber, still accepted
