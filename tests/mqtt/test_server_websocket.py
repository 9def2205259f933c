"""MQTT over WebSocket at the server's level (mqtt/server/websocket.py): an open broker
whose `/mqtt` endpoint uvicorn serves with the platform's WebSocket protocol, over
real sockets. A WebSocket client and a TCP client talk to each other; packets split
across frames and several in one frame; a text frame, a missing subprotocol, the
limits (connect timeout, packet size, connections) and a client that stops reading,
each as the MQTT spec's section 6 and the TCP listener's rules say."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from websockets.exceptions import InvalidStatus

from tests.conftest import RunningBroker, serve_in_thread
from tests.mqtt.clients import PahoClient, wait_until
from tests.mqtt.wsclient import WsRawClient
from thingshub.api.websocket import WebSocketProtocol
from thingshub.mqtt.codec import (
    Connack,
    Connect,
    Disconnect,
    PacketType,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    ReasonCode,
    Suback,
    Subscribe,
    SubscriptionRequest,
    Will,
    encode,
)
from thingshub.mqtt.server import Broker, BrokerConfig
from thingshub.mqtt.server.websocket import MqttWebSocket

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]


class WsBroker(RunningBroker):
    """A broker with its TCP listener (`port`) and `/mqtt` on uvicorn (`http_port`)."""

    def __init__(self, broker: Broker, loop: Any, port: int, http_port: int, endpoint: Any) -> None:
        super().__init__(broker, loop, port)
        self.http_port = http_port
        self.endpoint: MqttWebSocket = endpoint

    def connection(self, session: str) -> Any:
        return self.call(lambda: self.broker.sessions[session].connection)


@pytest.fixture
def ws_broker_factory() -> Iterator[Callable[..., WsBroker]]:
    started: list[tuple[WsBroker, Any]] = []

    def start(config: BrokerConfig | None = None, tls: dict[str, str] | None = None) -> WsBroker:
        """`tls`: uvicorn's `ssl_certfile` and `ssl_keyfile`, making it wss://."""
        broker = Broker(None, config)
        endpoint = MqttWebSocket(broker.connection)
        app = Starlette(routes=[WebSocketRoute("/mqtt", endpoint)])
        server = uvicorn.Server(
            uvicorn.Config(
                app, lifespan="off", log_level="warning", ws=WebSocketProtocol, **(tls or {})
            )
        )
        ports: list[int] = []
        serving: list[asyncio.Task[None]] = []

        async def boot() -> None:
            ports.append(await broker.start("127.0.0.1", 0))
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            sock.setblocking(False)
            ports.append(sock.getsockname()[1])
            serving.append(asyncio.get_running_loop().create_task(server.serve([sock])))
            while not server.started:
                if serving[0].done():
                    serving[0].result()  # it failed to start: say why
                await asyncio.sleep(0.01)

        async def stop() -> None:
            server.should_exit = True
            await broker.stop()
            if serving:
                await asyncio.wait_for(serving[0], 10)

        loop, thread = serve_in_thread("ws-broker", boot, stop)
        running = WsBroker(broker, loop, ports[0], ports[1], endpoint)
        started.append((running, thread))
        return running

    yield start
    for running, thread in started:
        running.loop.call_soon_threadsafe(running.loop.stop)
        thread.join(15)


@pytest.fixture
def wsb(ws_broker_factory: Callable[..., WsBroker]) -> WsBroker:
    return ws_broker_factory()


@pytest.mark.parametrize("version", VERSIONS)
def test_websocket_and_tcp_clients_talk_to_each_other(wsb: WsBroker, version: int) -> None:
    ws = PahoClient(wsb.http_port, "ws", version=version, websocket=True)
    tcp = PahoClient(wsb.port, "tcp", version=version)
    assert ws.subscribe("to-ws/#", qos=1) == [1]
    assert tcp.subscribe("to-tcp/#", qos=1) == [1]
    assert tcp.publish("to-ws/a", b"over tcp", qos=1) == 0
    assert ws.publish("to-tcp/b", b"over ws", qos=1) == 0
    assert [(m.topic, m.payload, m.qos) for m in ws.wait_messages(1)] == [
        ("to-ws/a", b"over tcp", 1)
    ]
    assert [(m.topic, m.payload, m.qos) for m in tcp.wait_messages(1)] == [
        ("to-tcp/b", b"over ws", 1)
    ]
    stats = wsb.endpoint.stats
    assert (stats.connections, stats.connections_total) == (1, 1)
    assert wsb.stats.connections == 2  # the server counts both
    ws.disconnect()
    wait_until(lambda: stats.connections == 0 and wsb.stats.connections == 1)


def test_packets_split_across_frames_and_several_in_one_frame(wsb: WsBroker) -> None:
    c = WsRawClient(wsb.http_port)
    connect = encode(Connect("raw", 5, True, 0), 5)
    subscribe = encode(Subscribe(1, [SubscriptionRequest("big/#", 1)]), 5)
    # CONNECT cut in three frames, the last of which also holds SUBSCRIBE.
    c.frames(connect[:1], connect[1:4], connect[4:] + subscribe)
    assert c.expect(Connack).reason_code == 0
    assert c.expect(Suback).reason_codes == [1]
    # A packet of 300 kB in frames of 1, 2 and 4096 bytes, then the rest.
    payload = bytes(range(256)) * 1200
    publish = encode(Publish("big/1", payload, qos=1, packet_id=7), 5)
    c.frames(publish[:1], publish[1:3], publish[3:4099], publish[4099:])
    got = [c.recv(), c.recv()]
    ack = next(p for p in got if isinstance(p, PubAck))
    assert (ack.type, ack.packet_id) == (PacketType.PUBACK, 7)
    echoed = next(p for p in got if isinstance(p, Publish))
    assert (echoed.topic, echoed.payload, echoed.qos) == ("big/1", payload, 1)
    # Three packets in one frame: three answers.
    c.frames(encode(PingReq(), 5) * 3)
    assert [type(c.recv()) for _ in range(3)] == [PingResp] * 3


@pytest.mark.parametrize("version", VERSIONS)
def test_a_text_frame_closes_the_connection(wsb: WsBroker, version: int) -> None:
    others = PahoClient(wsb.http_port, "bystander", websocket=True)
    c = WsRawClient(wsb.http_port, version)
    assert c.connect("texter").reason_code == 0
    c.ws.send("PINGREQ, says the text")  # a str is sent as a text frame
    packets = c.wait_closed()
    if version == 5:  # a connected 5.0 client is told why, as for any protocol error
        assert packets == [Disconnect(ReasonCode.PROTOCOL_ERROR)]
    else:
        assert packets == []
    assert c.close_code == 1003
    # Before CONNECT too; nobody else is touched.
    early = WsRawClient(wsb.http_port, version)
    early.ws.send("hello")
    assert early.wait_closed() == [] and early.close_code == 1003
    assert wsb.endpoint.stats.text_frames == 2
    assert wsb.stats.protocol_errors == 2
    assert others.subscribe("still/here") == [0]


def test_the_subprotocol_mqtt_is_required(wsb: WsBroker) -> None:
    with pytest.raises(InvalidStatus) as refused:
        WsRawClient(wsb.http_port, subprotocols=[])
    assert refused.value.response.status_code == 400
    assert b'"mqtt"' in refused.value.response.body
    with pytest.raises(InvalidStatus):
        WsRawClient(wsb.http_port, subprotocols=["mqttv3.1"])
    assert wsb.endpoint.stats.refused_subprotocol == 2
    # Among others, it is the one chosen.
    c = WsRawClient(wsb.http_port, subprotocols=["mqttv3.1", "mqtt"])
    assert c.ws.subprotocol == "mqtt"
    assert c.connect().reason_code == 0


def test_the_limits_of_tcp_hold_over_websocket(ws_broker_factory: Callable[..., WsBroker]) -> None:
    b = ws_broker_factory(
        BrokerConfig(
            connect_timeout=0.3, sweep_interval=0.05, max_packet_size=1000, max_connections=3
        )
    )  # the keepalive, the connect timeout, the largest packet, the connections
    silent = WsRawClient(b.http_port)
    assert silent.wait_closed() == [] and silent.close_code == 1008  # no CONNECT in time
    big = WsRawClient(b.http_port)
    assert big.connect().reason_code == 0
    big.send(Publish("t", b"x" * 2000))
    assert big.wait_closed() == [Disconnect(ReasonCode.PACKET_TOO_LARGE)]
    assert big.close_code == 1000
    idle = WsRawClient(b.http_port)
    assert idle.connect("idle", keepalive=1).reason_code == 0  # silent past 1.5 s
    assert idle.wait_closed() == [Disconnect(ReasonCode.KEEP_ALIVE_TIMEOUT)]
    # Connections are counted with the TCP ones: one more than allowed is dropped.
    wait_until(lambda: b.stats.connections == 0)
    held = [PahoClient(b.port, "tcp"), PahoClient(b.http_port, "ws1", websocket=True)]
    third = WsRawClient(b.http_port)
    assert third.connect("ws2").reason_code == 0
    extra = WsRawClient(b.http_port)
    assert extra.wait_closed() == [] and extra.close_code == 1008
    assert all(c.disconnect_code is None for c in held)


def test_a_closed_websocket_is_a_lost_connection(wsb: WsBroker) -> None:
    """The client closing the WebSocket without DISCONNECT: its will goes out."""
    watcher = PahoClient(wsb.port, "watcher")
    assert watcher.subscribe("wills/#", qos=1) == [1]
    c = WsRawClient(wsb.http_port)
    c.send(Connect("leaver", 5, True, 0, will=Will("wills/leaver", b"gone", 1)))
    assert c.expect(Connack).reason_code == 0
    c.close()
    assert watcher.wait_messages(1)[0].payload == b"gone"
    wait_until(lambda: wsb.endpoint.stats.connections == 0 and wsb.stats.connections == 1)


def slow_subscriber(wsb: WsBroker, count: int) -> WsRawClient:
    """A WebSocket subscriber that does not read, sent `count` messages of 16 kB (by a
    WebSocket publisher) until its connection's writing is paused."""
    slow = WsRawClient(wsb.http_port, max_queue=1, rcvbuf=4096)
    assert slow.connect("slow").reason_code == 0
    slow.send(Subscribe(1, [SubscriptionRequest("flood", 0)]))
    assert slow.expect(Suback).reason_codes == [0]
    publisher = WsRawClient(wsb.http_port)
    assert publisher.connect("publisher").reason_code == 0
    chunk = b"y" * 16_384
    for i in range(count):
        publisher.send(Publish("flood", i.to_bytes(4, "big") + chunk))
    conn = wsb.connection("slow")
    wait_until(lambda: wsb.call(lambda: conn.write_paused), what="writing paused")
    return slow


def test_a_subscriber_that_stops_reading_pauses_writing_then_catches_up(wsb: WsBroker) -> None:
    """Its publisher is held (reading from it pauses) and released; nothing is lost."""
    count = 400  # 6.5 MB: more than the socket buffers take from a client not reading
    slow = slow_subscriber(wsb, count)
    conn = wsb.connection("slow")
    seen = [int.from_bytes(slow.expect(Publish).payload[:4], "big") for _ in range(count)]
    assert seen == list(range(count))  # nothing dropped, in order
    wait_until(lambda: not wsb.call(lambda: conn.write_paused), what="writing resumed")
    assert wsb.stats.dropped_slow_consumer == 0


def test_wss_when_the_http_port_has_tls(
    ws_broker_factory: Callable[..., WsBroker], tmp_path: Path
) -> None:
    """Nothing of the endpoint's own: TLS is the HTTP server's (here uvicorn's options)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    pem = str(tmp_path / "server.pem")
    b = ws_broker_factory(tls={"ssl_certfile": pem, "ssl_keyfile": pem})
    secure = PahoClient(b.http_port, "wss", websocket=True, connect=False)
    secure.client.tls_set(ca_certs=str(tmp_path / "ca.pem"))
    assert secure.connect() == 0
    assert secure.subscribe("s/#", qos=1) == [1]
    assert PahoClient(b.port, "tcp").publish("s/1", b"sealed", qos=1) == 0
    assert secure.wait_messages(1)[0].payload == b"sealed"


def test_a_shutdown_tells_websocket_clients_why(wsb: WsBroker) -> None:
    c = WsRawClient(wsb.http_port)
    assert c.connect().reason_code == 0
    wsb.run(wsb.broker.stop())
    assert c.wait_closed() == [Disconnect(ReasonCode.SERVER_SHUTTING_DOWN)]
    assert c.close_code == 1000


def test_a_client_arriving_while_the_server_stops_is_turned_away(wsb: WsBroker) -> None:
    """The HTTP server goes on accepting for a moment after the broker stopped (its
    listener closes on its own schedule); a device reconnecting in that moment is
    closed at once, not served by a stopped broker that nobody will close (the HTTP
    server's shutdown then waited for it, and the device never saw it end)."""
    wsb.run(wsb.broker.stop())
    late = WsRawClient(wsb.http_port)
    assert late.wait_closed() == [] and late.close_code == 1008
    wait_until(lambda: wsb.endpoint.stats.connections == 0, what="the late one gone")
    assert wsb.stats.connections == 0


def test_the_address_is_the_websocket_clients(wsb: WsBroker) -> None:
    """What logins are throttled by: the client's address, as the HTTP server sees it."""
    c = WsRawClient(wsb.http_port)
    assert c.connect("direct").reason_code == 0
    port = c.ws.socket.getsockname()[1]
    direct = wsb.connection("direct")
    assert wsb.call(lambda: direct.address) == f"127.0.0.1:{port}"
    # Behind a proxy on this host, the address the proxy names (uvicorn's default trust).
    proxied = WsRawClient(wsb.http_port, headers={"X-Forwarded-For": "198.51.100.7"})
    assert proxied.connect("proxied").reason_code == 0
    conn = wsb.connection("proxied")
    address = wsb.call(lambda: conn.address)
    assert address.rsplit(":", 1)[0] == "198.51.100.7"


def test_a_shutdown_does_not_wait_for_a_client_that_does_not_read(wsb: WsBroker) -> None:
    slow_subscriber(wsb, 400)
    wsb.run(wsb.broker.stop())
    wait_until(lambda: wsb.endpoint.stats.connections == 0, what="both connections gone")


async def _no_response_extension() -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    endpoint = MqttWebSocket(lambda: None)  # type: ignore[arg-type,return-value]
    scope = {"type": "websocket", "subprotocols": [], "extensions": {}}
    await endpoint(scope, receive, send)
    return sent


def test_without_the_http_response_extension_a_refusal_is_a_close() -> None:
    """An ASGI server that cannot answer a handshake with a body refuses it (403)."""
    assert asyncio.run(_no_response_extension()) == [{"type": "websocket.close", "code": 1008}]
