"""A device registered on one node is in every other node's login cache
within a broadcast's time (services/device_news.py), and news older than a
change heard since never put back what the change removed."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from tests.cluster.fleet import login, register, within
from tests.conftest import Registered, RunningPlatform
from thingshub.core.model import Device
from thingshub.services import device_news

_fences = itertools.count()


def cached(node: RunningPlatform, dev: Registered) -> Device | None:
    """The device in the node's login cache, as a ThingsPanel login names it."""
    found: Device | None = node.call(lambda: node.platform.devices.cached(("u", dev.username)))
    return found


def by_name(node: RunningPlatform, dev: Registered) -> Device | None:
    key = ("d", dev.product_id, dev.name)
    found: Device | None = node.call(lambda: node.platform.devices.cached(key))
    return found


def tell(node: RunningPlatform, device: Device) -> None:
    """`node` tells the others the news of `device` (again, as if late)."""
    news = device_news.encode(device)
    node.call(lambda: node.platform.nats.broadcast(device_news.TOPIC, news))


def fence(n1: RunningPlatform, n2: RunningPlatform) -> None:
    """Everything n1 told before is heard on n2 (one publisher: in order); in a
    product of its own (news of a product whose key changed are ignored a while)."""
    dev = register(n1, product_id="fences", name=f"f{next(_fences)}")
    within(1, lambda: cached(n2, dev) is not None, "n2 heard the fence")


def test_a_device_registered_on_one_node_is_cached_on_the_others(
    node_factory: Callable[..., RunningPlatform],
) -> None:
    n1, n2, n3 = node_factory("n1"), node_factory("n2"), node_factory("n3")
    dev = register(n1)
    here = by_name(n1, dev)
    assert here is not None and here.product_key is not None
    for node in (n2, n3):
        within(1, lambda node=node: cached(node, dev) == here, f"{node} cached the device")
        assert by_name(node, dev) == here
    assert n2.call(lambda: n2.platform.devices.news.filled) == 1
    login(n2.mqtt_port, dev).disconnect()  # and logs in there


def test_news_older_than_a_change_heard_since_are_ignored(
    node_factory: Callable[..., RunningPlatform],
) -> None:
    n1, n2 = node_factory("n1"), node_factory("n2")
    dev = register(n1)
    within(1, lambda: cached(n2, dev) is not None, "n2 cached the device")
    old = by_name(n1, dev)
    assert old is not None

    # Deleted: its news told again (late) put nothing back on n2.
    assert n1.http().delete(f"/api/v1/products/p1/devices/{dev.name}").status_code == 204
    within(1, lambda: cached(n2, dev) is None, "n2 dropped the deleted device")
    tell(n1, old)
    fence(n1, n2)
    assert cached(n2, dev) is None and by_name(n2, dev) is None
    refused = login(n2.mqtt_port, dev, connect=False)
    assert refused.connect() != 0
    refused.close()

    # Registered again under the same name: a new user name, whose news are heard.
    again = register(n1)
    within(1, lambda: cached(n2, again) is not None, "n2 cached the device made again")
    ignored = n2.call(lambda: n2.platform.devices.news.ignored)
    assert ignored == 1

    # Changed on n1 (any change: the cache message), then old news: ignored.
    current = by_name(n1, again)
    assert current is not None
    n1.call(lambda: n1.platform.devices.sync.changed("p1", again.name))
    within(1, lambda: by_name(n2, again) is None, "n2 dropped the changed device")
    tell(n1, current)
    fence(n1, n2)
    assert by_name(n2, again) is None

    # The product's access key replaced on n1: news carrying the old key are ignored.
    other = register(n1, name="d2")
    within(1, lambda: cached(n2, other) is not None, "n2 cached d2")
    before = by_name(n1, other)
    assert before is not None
    assert n1.http().post("/api/v1/products/p1/access-key").status_code == 200
    within(1, lambda: cached(n2, other) is None, "n2 dropped the product's devices")
    tell(n1, before)
    fence(n1, n2)
    assert cached(n2, other) is None
    assert n2.call(lambda: n2.platform.devices.news.ignored) == ignored + 2


def test_news_that_are_not_a_device_are_ignored(
    node_factory: Callable[..., RunningPlatform],
) -> None:
    n1, n2 = node_factory("n1"), node_factory("n2")
    for bad in (
        b"{",
        b"[1, 2]",
        b'["p1", "d1", 3, "k", "u", "h", 0, {}, "enabled", null, null, null, null]',
    ):
        n1.call(lambda bad=bad: n1.platform.nats.broadcast(device_news.TOPIC, bad))
    fence(n1, n2)
    assert n2.call(lambda: n2.platform.devices.news.filled) == 1  # the fence alone
