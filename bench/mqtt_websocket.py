"""What MQTT over WebSocket costs the server, against MQTT over TCP: a rough measure.

    python bench/mqtt_websocket.py [--messages 20000] [--payload 100] [--window 100]

One server process (the MQTT server with its TCP listener, and `/mqtt` served by
uvicorn with the platform's WebSocket protocol, on uvloop, as `thingshub serve`
runs them; an open broker, no storage) and one client process. The client
connects once over each transport, subscribes to a topic and publishes N QoS 1
messages to it with a window of in-flight messages, reading its own messages back
and the PUBACKs. Per transport it prints the rate and the server's CPU (user +
system, from /proc) per message, which is one PUBLISH in, one PUBLISH out and one
PUBACK out. Not a timed test: numbers depend on the machine; compare the rows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect as ws_connect
from websockets.typing import Subprotocol

from thingshub.mqtt.codec import (
    Connack,
    Connect,
    PubAck,
    Publish,
    Reader,
    Suback,
    Subscribe,
    SubscriptionRequest,
    encode,
)

SERVER = """
import asyncio, socket, sys
import uvicorn, uvloop
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from thingshub.api.websocket import WebSocketProtocol
from thingshub.mqtt.server import Broker
from thingshub.mqtt.server.websocket import MqttWebSocket

async def main():
    broker = Broker()
    port = await broker.start("127.0.0.1", 0)
    app = Starlette(routes=[WebSocketRoute("/mqtt", MqttWebSocket(broker.connection))])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(
        app, lifespan="off", log_level="warning", ws=WebSocketProtocol, loop="none"))
    print(port, sock.getsockname()[1], flush=True)
    await server.serve([sock])

uvloop.run(main())
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Tcp:
    async def open(self, port: int) -> None:
        self.r, self.w = await asyncio.open_connection("127.0.0.1", port)

    def send(self, data: bytes) -> None:
        self.w.write(data)

    async def recv(self) -> bytes:
        return await self.r.read(65536)

    async def close(self) -> None:
        self.w.close()


class Ws:
    async def open(self, port: int) -> None:
        self.ws = await ws_connect(
            f"ws://127.0.0.1:{port}/mqtt",
            subprotocols=[Subprotocol("mqtt")],
            compression=None,
            max_size=None,
        )
        self.pending: list[asyncio.Task[None]] = []

    def send(self, data: bytes) -> None:
        self.pending.append(asyncio.ensure_future(self.ws.send(data)))

    async def recv(self) -> bytes:
        data = await self.ws.recv()
        assert isinstance(data, bytes)
        return data

    async def close(self) -> None:
        await asyncio.gather(*self.pending)
        await self.ws.close()


async def run(link: Tcp | Ws, port: int, n: int, payload: bytes, window: int) -> float:
    await link.open(port)
    reader = Reader(5)

    async def next_packet() -> object:
        while (packet := reader.next_packet()) is None:
            reader.feed(await link.recv())
        return packet

    link.send(encode(Connect("bench", 5, True, 0), 5))
    assert isinstance(await next_packet(), Connack)
    link.send(encode(Subscribe(1, [SubscriptionRequest("bench/t", 0)]), 5))
    assert isinstance(await next_packet(), Suback)
    started = time.perf_counter()
    sent = acked = received = 0
    while acked < n or received < n:
        while sent < n and sent - acked < window:
            sent += 1
            link.send(encode(Publish("bench/t", payload, 1, packet_id=sent % 65535 + 1), 5))
        packet = await next_packet()
        if isinstance(packet, PubAck):
            acked += 1
        elif isinstance(packet, Publish):
            received += 1
    elapsed = time.perf_counter() - started
    await link.close()
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--payload", type=int, default=100)
    p.add_argument("--window", type=int, default=100)
    a = p.parse_args()
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        tcp_port, http_port = map(int, server.stdout.readline().split())
        payload = b"x" * a.payload
        print(f"{a.messages} QoS 1 messages of {a.payload} B, window {a.window}, read back")
        print(f"{'transport':<10}{'msg/s':>10}{'server CPU µs/msg':>20}")
        for name, link, port in (
            ("tcp", Tcp(), tcp_port),
            ("websocket", Ws(), http_port),
            ("tcp", Tcp(), tcp_port),
            ("websocket", Ws(), http_port),
        ):
            cpu = cpu_seconds(server.pid)
            elapsed = asyncio.run(run(link, port, a.messages, payload, a.window))
            used = cpu_seconds(server.pid) - cpu
            rate = a.messages / elapsed
            print(f"{name:<10}{rate:>10.0f}{used / a.messages * 1e6:>20.1f}")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
