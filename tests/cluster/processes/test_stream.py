"""The live stream of one node carries the events of devices on another (issue 17),
over a real WebSocket to a real process."""

from __future__ import annotations

import json

from websockets.sync.client import connect

from tests.api.test_stream import receive
from tests.cluster.processes.harness import Cluster, create_device, create_product
from tests.mqtt.clients import PahoClient


def test_the_stream_of_n1_carries_events_of_devices_on_n2(three_nodes: Cluster) -> None:
    n1, n2, _ = three_nodes.all
    create_product(n1, "stream")
    d = create_device(n1, "stream", "d")
    url = f"ws://127.0.0.1:{n1.http_port}/api/v1/stream?product=stream"
    headers = {"Authorization": f"Bearer {three_nodes.api_key}"}
    with connect(url, additional_headers=headers, open_timeout=5) as ws:
        # The other nodes learn within moments that n1 now wants these events: the
        # device publishes until the first one crosses, then every one must.
        client = PahoClient(n2.mqtt_port, "d", username=d["username"], password=d["password"])
        first = None
        for k in range(50):
            client.publish("devices/telemetry", json.dumps({"k": k}).encode(), qos=1)
            try:
                first = receive(ws, "telemetry", timeout=0.2)
                break
            except TimeoutError:
                continue
        assert first is not None, "no telemetry of n2's device reached n1's stream"
        assert first["device"] == "d" and first["product_id"] == "stream"
        for k in range(100, 110):
            client.publish("devices/telemetry", json.dumps({"k": k}).encode(), qos=1)
        got: list[int] = []
        while not got or got[-1] != 109:
            got.append(receive(ws, "telemetry")["data"]["values"]["k"])
        assert [k for k in got if k >= 100] == list(range(100, 110)), got
        client.disconnect()
        offline = receive(ws, "presence")
        assert offline["device"] == "d"
        assert offline["data"] == {"connectionState": "offline"}
