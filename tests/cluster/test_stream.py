"""The live stream of one node carries the events of devices on another."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from websockets.sync.client import connect

from tests.api.test_stream import receive
from tests.conftest import RunningPlatform
from tests.mqtt.clients import PahoClient
from thingshub.core.events import TelemetryReceived


def test_a_stream_on_one_node_carries_another_nodes_telemetry(
    node_factory: Callable[..., RunningPlatform],
) -> None:
    a, b = node_factory("a"), node_factory("b")
    api = a.http()
    api.post("/api/v1/products", json={"id": "p1", "name": "p1"})
    dev = api.post("/api/v1/products/p1/devices", json={"name": "d1"}).json()
    assert not a.call(lambda: a.platform.bus.wants(TelemetryReceived))  # nobody listens yet
    url = f"ws://127.0.0.1:{b.http_port}/api/v1/stream?product=p1"
    headers = {"Authorization": f"Bearer {b.api_key}"}
    with connect(url, additional_headers=headers, open_timeout=5) as ws:
        # b says it wants telemetry now; a relays it from then on.
        deadline = time.monotonic() + 10
        while not a.call(lambda: a.platform.bus.wants(TelemetryReceived)):
            assert time.monotonic() < deadline, "node a never heard that b wants telemetry"
            time.sleep(0.05)
        client = PahoClient(a.mqtt_port, "tp", username=dev["username"], password=dev["password"])
        assert receive(ws, "presence")["data"] == {"connectionState": "online"}
        client.publish("devices/telemetry", json.dumps({"t": 21.5}).encode(), qos=1)
        message = receive(ws, "telemetry")
        assert message["device"] == "d1" and message["data"]["values"] == {"t": 21.5}
        client.disconnect()
        assert receive(ws, "presence")["data"] == {"connectionState": "offline"}


def test_metrics_say_whether_nats_is_reachable_and_what_was_relayed(
    node_factory: Callable[..., RunningPlatform],
) -> None:
    a = node_factory("a")
    text = a.http().get("/metrics").text
    assert "thingshub_cluster_nats_connected 1.0" in text
    assert 'thingshub_cluster_relayed_total{result="dropped"} 0.0' in text
    assert 'thingshub_cluster_forwarded_total{kind="call"} 0.0' in text
