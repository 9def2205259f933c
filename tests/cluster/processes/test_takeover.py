"""One device, one connection, across nodes; deletions and credential changes reach
every node within 1 s (issue 17).

Each node keeps a cache of devices and keys for its logins and requests: these
tests warm the caches of the other nodes first, so a node that missed the
change would still accept what the change took away. The tests share one
cluster of three nodes (`three_nodes`), each with a product of its own.
"""

from __future__ import annotations

import time
from typing import Any

from tests.cluster.processes.harness import (
    Cluster,
    Node,
    create_device,
    create_product,
    wait_for,
)
from tests.mqtt.clients import PahoClient

#: How soon a change made on one node holds on the others (interfaces.md).
WITHIN = 1.0
#: MQTT 5 DISCONNECT reason of a connection taken over by a newer one.
SESSION_TAKEN_OVER = 0x8E


def login(node: Node, username: str, password: str | None, client_id: str = "") -> PahoClient:
    """A ThingsPanel login; connected or refused (see `connack_code`)."""
    return PahoClient(node.mqtt_port, client_id, username=username, password=password)


def accepted(node: Node, username: str, password: str | None) -> bool:
    client = login(node, username, password)
    ok = client.connack_code == 0
    client.close()
    return ok


def refused_everywhere(nodes: list[Node], username: str, password: str | None) -> bool:
    return not any(accepted(node, username, password) for node in nodes)


def test_the_newer_login_on_another_node_closes_the_older(three_nodes: Cluster) -> None:
    n1, n2, _ = three_nodes.all
    create_product(n1, "takeover")
    d = create_device(n1, "takeover", "d")
    older = login(n1, d["username"], d["password"], "same-id")
    assert older.connack_code == 0
    taken = time.monotonic()
    newer = login(n2, d["username"], d["password"], "same-id")
    assert newer.connack_code == 0
    assert older.wait_disconnected(timeout=WITHIN + 0.5) == SESSION_TAKEN_OVER
    assert older.disconnect_from_server
    assert time.monotonic() - taken < WITHIN + 0.5
    assert newer.publish("devices/telemetry", b'{"t": 1}', qos=1) == 0
    assert newer.disconnect_code is None  # the newer one is left alone
    wait_for(lambda: n1.presence("takeover", ["d"]) == {"d": "online"}, 5, "d online on n1")


def test_a_device_deleted_on_one_node_is_closed_and_refused_everywhere(
    three_nodes: Cluster,
) -> None:
    n1, n2, n3 = three_nodes.all
    create_product(n1, "deleted")
    d = create_device(n1, "deleted", "d")
    for node in (n2, n3):  # their caches know d
        assert accepted(node, d["username"], d["password"])
    client = login(n1, d["username"], d["password"], "d")
    assert client.connack_code == 0

    with n3.api() as api:
        assert api.delete("/api/v1/products/deleted/devices/d").status_code == 204
    deleted = time.monotonic()
    client.wait_disconnected(timeout=WITHIN + 0.5)
    assert time.monotonic() - deleted < WITHIN + 0.5
    wait_for(
        lambda: refused_everywhere([n1, n2, n3], d["username"], d["password"]),
        WITHIN,
        "the deleted device refused on every node",
    )


def test_changed_credentials_hold_on_every_node_within_a_second(three_nodes: Cluster) -> None:
    n1, n2, n3 = three_nodes.all
    create_product(n1, "creds")
    old = create_device(n1, "creds", "d", access_token="token-one")
    for node in (n2, n3):
        assert accepted(node, old["username"], old["password"])
        assert accepted(node, "token-one", None)

    # The device made again under the same name: new secrets, and the old access token
    # given to another device.
    with n1.api() as api:
        assert api.delete("/api/v1/products/creds/devices/d").status_code == 204
    new = create_device(n1, "creds", "d", access_token="token-two")
    other = create_device(n1, "creds", "other", access_token="token-one")
    changed = time.monotonic()
    wait_for(
        lambda: refused_everywhere([n2, n3], old["username"], old["password"]),
        WITHIN,
        "the old password refused",
    )
    wait_for(
        lambda: all(accepted(n, new["username"], new["password"]) for n in (n2, n3)),
        WITHIN,
        "the new password accepted",
    )
    assert time.monotonic() - changed < WITHIN + 0.5
    # The old token now logs in as the other device, on every node.
    client = login(n2, "token-one", None, "t1")
    assert client.connack_code == 0
    wait_for(
        lambda: n3.presence("creds", ["d", "other"]) == {"d": "offline", "other": "online"},
        5,
        "token-one online as 'other'",
    )
    assert other["access_token"] == "token-one"


def test_a_revoked_api_key_stops_working_on_every_node_within_a_second(
    three_nodes: Cluster,
) -> None:
    n1, n2, n3 = three_nodes.all
    with n1.api() as api:
        r = api.post("/api/v1/keys", json={"name": "app", "role": "reader"})
        assert r.status_code == 201, r.text
        key: dict[str, Any] = r.json()

    def status(node: Node) -> int:
        headers = {"Authorization": f"Bearer {key['key']}"}
        with node.api() as api:
            return api.get("/api/v1/products", headers=headers).status_code

    assert [status(n) for n in (n1, n2, n3)] == [200, 200, 200]  # cached everywhere
    with n1.api() as api:
        assert api.delete(f"/api/v1/keys/{key['id']}").status_code == 204
    wait_for(
        lambda: [status(n) for n in (n2, n3)] == [401, 401], WITHIN, "the key refused everywhere"
    )
