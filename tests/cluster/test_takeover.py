"""Takeover across nodes: a device logging in on one node while connected on
another has the older connection closed within 1 s (5.0: DISCONNECT 0x8E),
stays online throughout, and keeps one session, on the node it logged in to;
the newest login wins by its stamp, not by the order broadcasts arrive in."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from nats.aio.msg import Msg

from tests.cluster.fleet import login, register, state, within
from tests.conftest import Registered, RunningPlatform
from thingshub.bus import frames


def sessions(node: RunningPlatform, dev: Registered) -> list[str]:
    prefix = f"{dev.product_id}/{dev.name}/"
    broker = node.platform.broker
    return node.call(lambda: sorted(k for k in broker.sessions if k.startswith(prefix)))


def holder(node: RunningPlatform, dev: Registered) -> str | None:
    held: str | None = node.run(node.platform.storage.devices.holder(dev.product_id, dev.name))
    return held


@pytest.mark.parametrize("version", [5, 4], ids=["mqtt5", "mqtt311"])
def test_a_login_on_another_node_closes_the_older_connection(
    node_factory: Callable[..., RunningPlatform], version: int
) -> None:
    n1, n2 = node_factory("n1"), node_factory("n2")
    dev = register(n1)
    first = login(n1.mqtt_port, dev, "first", version=version, clean=False)
    within(3, lambda: holder(n2, dev) == "n1", "n1 recorded as holding the device")

    second = login(n2.mqtt_port, dev, "second", version=version, clean=False)
    started = time.monotonic()
    code = first.wait_disconnected()
    assert time.monotonic() - started < 1.0
    if version == 5:
        assert (code, first.disconnect_from_server) == (0x8E, True)
    # Its session on n1 ended with it: the device holds one, on n2.
    within(1, lambda: sessions(n1, dev) == [], "n1's session of the device ended")
    assert sessions(n2, dev) == [f"{dev.product_id}/{dev.name}/second"]
    second.fence()  # still connected

    # Online throughout, held by n2 once its write is in; n1 never said offline.
    assert state(n1, dev) == state(n2, dev) == "online"
    within(3, lambda: holder(n1, dev) == "n2", "n2 recorded as holding the device")
    assert not n1.call(lambda: n1.platform.presence.is_connected(dev.product_id, dev.name))
    assert state(n1, dev) == "online"

    # Back to n1 with the first client id: no session is left there (session present 0).
    again = login(n1.mqtt_port, dev, "first", version=version, clean=False)
    assert again.session_present is False
    second.wait_disconnected(1.0)
    again.disconnect()
    within(3, lambda: state(n2, dev) == "offline", "offline once its last connection closed")


def test_a_session_never_follows_a_client_to_another_node(
    node_factory: Callable[..., RunningPlatform],
) -> None:
    n1, n2 = node_factory("n1"), node_factory("n2")
    dev = register(n1)
    client = login(n1.mqtt_port, dev, "c1", clean=False)
    assert client.subscribe(f"devices/command/{dev.device_number}/+", qos=1) == [1]
    client.disconnect()
    assert sessions(n1, dev) == [f"{dev.product_id}/{dev.name}/c1"]

    elsewhere = login(n2.mqtt_port, dev, "c1", clean=False)
    assert elsewhere.session_present is False
    elsewhere.disconnect()
    # The persistent session n1 kept is gone too: one session per device.
    within(1, lambda: sessions(n1, dev) == [], "n1's session of the device ended")


def test_the_newest_login_wins_whatever_order_the_news_arrive_in(
    node_factory: Callable[..., RunningPlatform],
) -> None:
    """n1 tells n2 of logins there: those stamped before n2's connection of the
    device (as if their news came late) change nothing, a newer one wins."""
    n1, n2 = node_factory("n1"), node_factory("n2")
    dev, fence = register(n1), register(n1, name="fence")
    client, fenced = login(n2.mqtt_port, dev), login(n2.mqtt_port, fence, "c2")
    ms, node, _ = n2.call(lambda: n2.platform.gateway.logins._held[f"p1/{dev.name}"])
    assert node == "n2"

    def tell(who: Registered, stamp_ms: int) -> None:
        news = f"{who.product_id}/{who.name}\n{stamp_ms}\nn1\n1".encode()
        n1.call(lambda: n1.platform.nats.broadcast("login", news))

    tell(dev, ms - 1)
    tell(dev, ms - 1000)
    tell(fence, ms + 60_000)  # heard after the two above (one publisher: in order)
    assert fenced.wait_disconnected(1.0) == 0x8E
    client.fence()
    assert client.disconnect_code is None and state(n2, dev) == "online"
    tell(dev, ms + 1)
    assert client.wait_disconnected(1.0) == 0x8E
    assert not n2.call(lambda: n2.platform.presence.is_connected(dev.product_id, dev.name))


def test_a_batch_of_logins_closes_the_older_login_of_each_on_every_node(
    node_factory: Callable[..., RunningPlatform],
) -> None:
    """The logins told in one flush travel in one message (bus/frames.py); each
    is judged by its own stamp on every node: the newer ones close the older
    connections on n2 and on n3, the one stamped before its device's
    connection closes nothing."""
    n1, n2, n3 = node_factory("n1"), node_factory("n2"), node_factory("n3")
    devs = [register(n1, name=f"d{i}") for i in range(6)]
    nodes = [n2 if i % 2 else n3 for i in range(6)]
    clients = [
        login(node.mqtt_port, dev, f"c{i}")
        for i, (node, dev) in enumerate(zip(nodes, devs, strict=True))
    ]
    held = [
        node.call(lambda node=node, dev=dev: node.platform.gateway.logins._held[f"p1/{dev.name}"])
        for node, dev in zip(nodes, devs, strict=True)
    ]
    messages: list[bytes] = []

    async def listen() -> None:  # what n2 hears from n1 on the nodes' subject
        nats = n2.platform.nats
        assert nats.nc is not None

        async def heard(msg: Msg) -> None:
            messages.append(msg.data)

        await nats.nc.subscribe(f"{nats.prefix}.out", cb=heard)
        await nats.nc.flush()

    n2.run(listen())
    stale = 3

    def tell_all() -> None:  # one loop turn of n1: one flush
        for i, dev in enumerate(devs):
            ms = held[i][0] + (-1 if i == stale else 1)
            n1.platform.nats.broadcast("login", f"p1/{dev.name}\n{ms}\nn1\n{100 + i}".encode())

    n1.call(tell_all)
    for i, client in enumerate(clients):
        if i != stale:
            assert client.wait_disconnected(1.0) == 0x8E, f"d{i} on {nodes[i].platform}"
    clients[stale].fence()
    assert clients[stale].disconnect_code is None
    assert state(nodes[stale], devs[stale]) == "online"
    told = [
        [f for f in frames.unpack(m) if f[1] == "login" and b"\nn1\n" in f[2]] for m in messages
    ]
    assert [len(f) for f in told if f] == [6]  # n1's, in one message (n3's are its own)
