"""What one node changes, every node knows within 1 s: a device deleted is
closed wherever it is connected, credentials replaced and API keys revoked
stop working everywhere, and the caches of devices, images and thing models
follow."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.cluster.fleet import login, register, state, within
from tests.conftest import Registered, RunningPlatform
from tests.gateway.test_thing import MODEL, post
from tests.gateway.test_thing import connect as thing_login


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
    desired = lambda: n2.http().get(image).json()["properties"]["state"]["desired"]  # noqa: E731
    assert desired()["lamp"] == 1  # cached on n2
    assert n1.http().patch(image, json={"desired": {"lamp": 2}}).status_code == 200
    within(1.0, lambda: desired()["lamp"] == 2, "the image on n2")


def test_a_thing_model_replaced_on_one_node_checks_posts_on_another(
    node_factory: Callable[..., RunningPlatform],
) -> None:
    n1, n2 = node_factory("n1"), node_factory("n2")
    dev = register(n1)
    models = f"/api/v1/products/{dev.product_id}/thing-model"
    assert n1.http().put(models, json=MODEL).status_code == 200
    device = thing_login(n2, dev)
    device.subscribe(f"$sys/{dev.product_id}/{dev.name}/thing/#", qos=1)
    hot = {"id": "1", "params": {"temp": {"value": 130}}}
    assert post(device, "property/post", hot)["code"] == 302  # the model is cached on n2
    warmer = json.loads(json.dumps(MODEL))
    warmer["properties"][0]["dataType"]["specs"]["max"] = "150"
    assert n1.http().put(models, json=warmer).status_code == 200
    within(1.0, lambda: post(device, "property/post", hot)["code"] == 200, "the model on n2")
    device.disconnect()
