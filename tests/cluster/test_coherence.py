"""What one node changes, every node knows within 1 s: a device deleted is
closed wherever it is connected, credentials replaced and API keys revoked
stop working everywhere, and the caches of devices, images and thing models
follow."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tests.cluster.fleet import login, register, state, within
from tests.conftest import Registered, RunningPlatform
from tests.mqtt.clients import PahoClient
from thingshub.dialects.onenet import token as onenet


def model(top: int) -> dict[str, Any]:
    """A thing model of one property, `temp`, at most `top`."""
    temp = {"type": "float", "specs": {"min": "-40", "max": str(top)}}
    return {"properties": [{"identifier": "temp", "accessMode": "rw", "dataType": temp}]}


def device_url(dev: Registered) -> str:
    return f"/api/v1/products/{dev.product_id}/devices/{dev.name}"


def test_a_device_deleted_on_one_node_is_closed_on_another(
    node_factory: Callable[..., RunningPlatform],
) -> None:
    n1, n2 = node_factory("n1"), node_factory("n2")
    dev = register(n2)
    client = login(n1.mqtt_port, dev)
    assert n2.http().delete(device_url(dev)).status_code == 204
    assert client.wait_disconnected(1.0) == 0x98  # administrative action
    assert n1.http().get(device_url(dev)).status_code == 404
    assert not n1.call(lambda: n1.platform.presence.is_connected(dev.product_id, dev.name))


def test_credentials_replaced_on_one_node_are_refused_on_another_within_1_s(
    node_factory: Callable[..., RunningPlatform],
) -> None:
    """A device's credentials change by deleting and registering it again: the
    old user name and password, cached by n2 since its last login, fail there."""
    n1, n2 = node_factory("n1"), node_factory("n2")
    old = register(n1)
    login(n2.mqtt_port, old).disconnect()  # n2 caches the device
    assert n1.http().delete(device_url(old)).status_code == 204
    new = register(n1)

    def refused() -> bool:
        client = login(n2.mqtt_port, old, connect=False)
        code = client.connect()
        client.close()
        return code != 0

    within(1.0, refused, "the old credentials refused on n2")
    client = login(n2.mqtt_port, new)
    assert state(n1, new) == "online" or state(n2, new) == "online"
    client.disconnect()


def test_api_keys_made_or_revoked_on_one_node_hold_on_another_within_1_s(
    node_factory: Callable[..., RunningPlatform],
) -> None:
    n1, n2 = node_factory("n1"), node_factory("n2")
    made = n1.http().post("/api/v1/keys", json={"name": "ops", "role": "reader"})
    assert made.status_code == 201, made.text
    key = made.json()
    reader = n2.http(key["key"])
    within(1.0, lambda: reader.get("/api/v1/products").status_code == 200, "the key on n2")
    assert n1.http().delete(f"/api/v1/keys/{key['id']}").status_code == 204
    within(1.0, lambda: reader.get("/api/v1/products").status_code == 401, "revoked on n2")


def test_devices_and_images_changed_on_one_node_read_the_same_on_another(
    node_factory: Callable[..., RunningPlatform],
) -> None:
    n1, n2 = node_factory("n1"), node_factory("n2")
    dev = register(n1)
    url, image = device_url(dev), device_url(dev) + "/image"
    assert n2.http().get(url).json()["tags"] == {}  # cached on n2
    assert n1.http().patch(image, json={"tags": {"floor": "3"}}).status_code == 200
    within(1.0, lambda: n2.http().get(url).json()["tags"] == {"floor": "3"}, "tags on n2")

    assert n1.http().patch(image, json={"desired": {"lamp": 1}}).status_code == 200

    def lamp() -> Any:
        return n2.http().get(image).json()["properties"]["state"]["desired"]["lamp"]

    assert lamp() == 1  # cached on n2
    assert n1.http().patch(image, json={"desired": {"lamp": 2}}).status_code == 200
    within(1.0, lambda: lamp() == 2, "the image on n2")


def test_a_thing_model_replaced_on_one_node_checks_posts_on_another(
    node_factory: Callable[..., RunningPlatform],
) -> None:
    n1, n2 = node_factory("n1"), node_factory("n2")
    dev = register(n1)
    models = f"/api/v1/products/{dev.product_id}/thing-model"
    assert n1.http().put(models, json=model(125)).status_code == 200
    token = onenet.make_token(dev.key, dev.product_id, dev.name, int(time.time()) + 3600)
    device = PahoClient(n2.mqtt_port, dev.name, username=dev.product_id, password=token)
    topic = f"$sys/{dev.product_id}/{dev.name}/thing/property/post"
    device.subscribe(topic + "/reply", qos=1)

    def post_code() -> int:
        before = len(device.messages)
        device.publish(topic, json.dumps({"id": "1", "params": {"temp": {"value": 130}}}).encode())
        code: int = json.loads(device.wait_messages(before + 1)[before].payload)["code"]
        return code

    assert post_code() == 302  # the model is cached on n2
    assert n1.http().put(models, json=model(150)).status_code == 200
    within(1.0, lambda: post_code() == 200, "the new model on n2")
    device.disconnect()


def test_a_product_key_rotated_on_one_node_is_refused_on_another_within_1_s(
    node_factory: Callable[..., RunningPlatform],
) -> None:
    """n2 has the product's access key in its login cache; rotated on n1, a token
    signed with the old key fails on n2 and one signed with the new key logs in."""
    n1, n2 = node_factory("n1"), node_factory("n2")
    api = n1.http()
    old_key = api.post("/api/v1/products", json={"id": "p1", "name": "P"}).json()["access_key"]
    assert api.post("/api/v1/products/p1/devices", json={"name": "d1"}).status_code == 201
    later = int(time.time()) + 3600

    def onenet_login(key: str) -> int:
        token = onenet.make_token(key, "p1", "d1", later)
        client = PahoClient(
            n2.mqtt_port, "d1", username="p1", password=token, connect=False, version=4
        )
        try:
            return client.connect()
        finally:
            client.close()

    assert onenet_login(old_key) == 0  # n2 caches the device with the old key
    new_key = api.post("/api/v1/products/p1/access-key").json()["access_key"]
    within(1.0, lambda: onenet_login(old_key) != 0, "the old product key refused on n2")
    assert onenet_login(new_key) == 0
