"""The platform over TLS (interfaces.md, "Transport security"), with real clients on
real sockets: devices log in and publish over MQTT over TLS verifying the CA that
`thingshub cert create` made, the API answers over HTTPS, clients that expect
another name or trust another CA refuse the server, the plain listener can be
off, and a client that stalls in its handshake is dropped without delaying anyone.

The certificates come from our own certs.py (what operators run), made once for
the module: a CA and a server certificate for `localhost` and `127.0.0.1`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api import rawhttp
from tests.conftest import RunningPlatform
from tests.mqtt.clients import PahoClient, wait_until
from thingshub.certs import create
from thingshub.dialects.onenet import token as onenet


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    create(out, ["localhost", "127.0.0.1"])
    return out


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another CA with a certificate for the same names: trusting it proves nothing."""
    out = tmp_path_factory.mktemp("other")
    create(out, ["localhost", "127.0.0.1"])
    return out / "ca.pem"


def trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def tls_settings(certs: Path, **more: Any) -> dict[str, Any]:
    return {
        "tls_cert": certs / "server.pem",
        "tls_key": certs / "server-key.pem",
        "mqtts_port": 0,
        **more,
    }


@pytest.fixture
def served(platform_factory: Callable[..., RunningPlatform], certs: Path) -> RunningPlatform:
    return platform_factory(**tls_settings(certs))


@pytest.fixture
def https(served: RunningPlatform, certs: Path) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"https://127.0.0.1:{served.http_port}",
        headers={"Authorization": f"Bearer {served.api_key}"},
        verify=trusting(certs / "ca.pem"),
        timeout=10,
    ) as client:
        yield client


def mqtts_port(p: RunningPlatform) -> int:
    port = p.platform.mqtts_port
    assert isinstance(port, int)
    return port


def tls_client(port: int, client_id: str, ca: Path, **kw: Any) -> PahoClient:
    """A paho client over TLS that verifies the server against `ca` (not yet connected),
    set up as the README shows."""
    client = PahoClient(port, client_id, connect=False, **kw)
    client.client.tls_set(ca_certs=str(ca))
    return client


def add_device(api: httpx.Client, pid: str = "p1", name: str = "d1") -> dict[str, Any]:
    api.post("/api/v1/products", json={"id": pid, "name": pid})
    r = api.post(f"/api/v1/products/{pid}/devices", json={"name": name})
    assert r.status_code == 201, r.text
    made: dict[str, Any] = r.json()
    return made


def test_onenet_token_login_and_qos1_publish_over_tls(
    served: RunningPlatform, https: httpx.Client, certs: Path
) -> None:
    dev = add_device(https)
    token = onenet.make_token(dev["key"], "p1", "d1", int(time.time()) + 3600, "sha256")
    client = tls_client(mqtts_port(served), "d1", certs / "ca.pem", username="p1", password=token)
    assert client.connect() == 0
    client.subscribe("$sys/p1/d1/dp/post/json/+", qos=1)
    body = {"id": 7, "dp": {"temperature": [{"v": 30, "t": 1_700_000_000}]}}
    assert client.publish("$sys/p1/d1/dp/post/json", json.dumps(body).encode(), qos=1) == 0
    wait_until(lambda: client.messages, what="the answer")
    assert client.messages[0].topic == "$sys/p1/d1/dp/post/json/accepted"
    latest = https.get("/api/v1/products/p1/devices/d1/telemetry/latest").json()
    assert latest["temperature"] == {"ts": 1_700_000_000_000, "value": 30}


@pytest.mark.parametrize("version", [4, 5])
def test_thingspanel_login_and_qos1_telemetry_over_tls(
    served: RunningPlatform, https: httpx.Client, certs: Path, version: int
) -> None:
    dev = add_device(https)
    client = tls_client(
        mqtts_port(served),
        "tp",
        certs / "ca.pem",
        version=version,
        username=dev["username"],
        password=dev["password"],
    )
    assert client.connect() == 0
    assert client.publish("devices/telemetry", b'{"temp": 21.5}', qos=1) == 0
    latest = https.get("/api/v1/products/p1/devices/d1/telemetry/latest").json()
    assert latest["temp"]["value"] == 21.5


def test_the_plain_listener_stays_beside_tls(served: RunningPlatform, https: httpx.Client) -> None:
    """Without `--mqtt-port off`, devices not yet moved to TLS still connect."""
    dev = add_device(https)
    client = PahoClient(served.mqtt_port, "tp", username=dev["username"], password=dev["password"])
    assert client.publish("devices/telemetry", b'{"t": 1}', qos=1) == 0
    ports = json.loads((served.data_dir / "ports.json").read_text())
    assert ports == {
        "mqtt": served.mqtt_port,
        "mqtts": mqtts_port(served),
        "http": served.http_port,
    }


def test_https_api_says_where_devices_connect(served: RunningPlatform, https: httpx.Client) -> None:
    info = https.get("/api/v1/server").json()
    assert info["mqtt_port"] == served.mqtt_port
    assert info["mqtts_port"] == mqtts_port(served)
    # The HTTP port speaks only TLS now: a plain request gets no HTTP answer.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{served.http_port}/healthz", timeout=5)


def test_a_client_expecting_another_name_refuses_the_server(
    served: RunningPlatform, certs: Path
) -> None:
    for port in (mqtts_port(served), served.http_port):
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
            pytest.raises(ssl.SSLCertVerificationError, match=r"[Hh]ostname mismatch"),
        ):
            trusting(certs / "ca.pem").wrap_socket(sock, server_hostname="iot.example.net")
    # The names it was made for are fine, by DNS name as by address.
    with socket.create_connection(("127.0.0.1", mqtts_port(served)), timeout=5) as sock:
        ctx = trusting(certs / "ca.pem")
        with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_a_client_trusting_another_ca_refuses_the_server(
    served: RunningPlatform, other_ca: Path
) -> None:
    with (
        socket.create_connection(("127.0.0.1", mqtts_port(served)), timeout=5) as sock,
        pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"),
    ):
        trusting(other_ca).wrap_socket(sock, server_hostname="localhost")
    with (
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
        httpx.Client(verify=trusting(other_ca)) as api,
    ):
        api.get(f"https://127.0.0.1:{served.http_port}/healthz")


def test_plain_mqtt_off(platform_factory: Callable[..., RunningPlatform], certs: Path) -> None:
    p = platform_factory(**tls_settings(certs, mqtt_port=None))
    assert p.platform.mqtt_port is None
    ports = json.loads((p.data_dir / "ports.json").read_text())
    assert ports == {"mqtts": mqtts_port(p), "http": p.http_port}  # no "mqtt": nothing there
    with httpx.Client(verify=trusting(certs / "ca.pem")) as api:
        info = api.get(
            f"https://127.0.0.1:{p.http_port}/api/v1/server",
            headers={"Authorization": f"Bearer {p.api_key}"},
        ).json()
    assert info["mqtt_port"] is None and info["mqtts_port"] == mqtts_port(p)


def _still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""  # unreachable in practice: the server sends nothing
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def _closed_after(sock: socket.socket, limit: float) -> float:
    """Seconds until the server closes `sock` (it never sends anything first)."""
    start = time.monotonic()
    sock.settimeout(limit)
    with contextlib.suppress(ConnectionResetError):
        assert sock.recv(1) == b""
    return time.monotonic() - start


# A TLS record header announcing a ClientHello whose rest never comes.
PARTIAL_HELLO = b"\x16\x03\x01\x02\x00\x01"


@pytest.mark.parametrize("sent", [b"", PARTIAL_HELLO], ids=["silent", "partial-hello"])
def test_a_stalled_mqtt_handshake_delays_nobody_and_is_dropped(
    platform_factory: Callable[..., RunningPlatform], certs: Path, sent: bytes
) -> None:
    timeout = 2.0
    p = platform_factory(**tls_settings(certs, connect_timeout=timeout, mqtt_port=None))
    with httpx.Client(
        verify=trusting(certs / "ca.pem"), headers={"Authorization": f"Bearer {p.api_key}"}
    ) as api:
        api.base_url = httpx.URL(f"https://127.0.0.1:{p.http_port}")
        dev = add_device(api)
    with socket.create_connection(("127.0.0.1", mqtts_port(p)), timeout=5) as stalled:
        stalled.sendall(sent)
        opened = time.monotonic()
        client = tls_client(
            mqtts_port(p),
            "tp",
            certs / "ca.pem",
            username=dev["username"],
            password=dev["password"],
        )
        assert client.connect() == 0
        assert client.publish("devices/telemetry", b'{"t": 1}', qos=1) == 0
        # All that while the stalled handshake was pending: it held nobody up.
        assert _still_open(stalled)
        waited = time.monotonic() - opened + _closed_after(stalled, 10)
    assert timeout * 0.9 <= waited < timeout + 5


def test_a_stalled_https_handshake_is_dropped_after_the_head_timeout(
    platform_factory: Callable[..., RunningPlatform], certs: Path
) -> None:
    timeout = 2.0
    p = platform_factory(**tls_settings(certs, http_head_timeout=timeout))
    with socket.create_connection(("127.0.0.1", p.http_port), timeout=5) as stalled:
        opened = time.monotonic()
        with httpx.Client(verify=trusting(certs / "ca.pem")) as api:
            assert api.get(f"https://127.0.0.1:{p.http_port}/healthz").json() == {"status": "ok"}
        assert _still_open(stalled)
        waited = time.monotonic() - opened + _closed_after(stalled, 10)
    assert timeout * 0.9 <= waited < timeout + 5


def test_after_the_handshake_connect_is_still_due_within_the_connect_timeout(
    platform_factory: Callable[..., RunningPlatform], certs: Path
) -> None:
    """The handshake's deadline does not replace CONNECT's: a client that completes
    its handshake and then says nothing is closed once `connect_timeout` has passed."""
    timeout = 1.0
    p = platform_factory(**tls_settings(certs, connect_timeout=timeout, mqtt_port=None))
    with (
        socket.create_connection(("127.0.0.1", mqtts_port(p)), timeout=5) as sock,
        trusting(certs / "ca.pem").wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        done = time.monotonic()
        tls.settimeout(timeout + 5)
        # Closed without a CONNACK: an end of file, a reset, or (aborted, without the
        # TLS close_notify) an unexpected end of file; never data.
        with contextlib.suppress(ConnectionResetError, ssl.SSLEOFError):
            assert tls.recv(1) == b""
        assert timeout * 0.9 <= time.monotonic() - done < timeout + 5


def test_an_unwanted_body_over_https_still_gets_its_answer(
    served: RunningPlatform, certs: Path
) -> None:
    """A 401 given before the body was read closes the connection; TLS has no
    half-close, so the server still reads and drops what comes for a while rather
    than close at once: a close with unread bytes resets the connection, and a reset
    can destroy the answer before the client reads it (api/connections.py)."""
    head = (
        b"POST /api/v1/products HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (100 << 20)
    )
    for _ in range(20):  # a reset loses the answer only some of the time
        raw = socket.create_connection(("127.0.0.1", served.http_port), timeout=5)
        with trusting(certs / "ca.pem").wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(head + b'{"id": "s", "name": "' + b"x" * 65536)
            answer = rawhttp.read_response(tls)
            assert answer.status == 401 and answer.headers["connection"] == "close"
            tls.sendall(b"x" * 65536)  # the client goes on sending: no reset meanwhile


@pytest.mark.parametrize("version", [4, 5])
def test_both_logins_over_mqtt_over_secure_websocket(
    served: RunningPlatform, https: httpx.Client, certs: Path, version: int
) -> None:
    """`wss://host:http-port/mqtt`: the HTTPS listener carries MQTT over WebSocket,
    verified against the CA as a device does, with a OneNET token and with a
    ThingsPanel user name and password, and QoS 1 data is stored before its PUBACK."""
    tp_dev = add_device(https, name="tp1")
    on_dev = add_device(https, name="on1")
    tp = tls_client(
        served.http_port,
        "tp1",
        certs / "ca.pem",
        version=version,
        websocket=True,
        username=tp_dev["username"],
        password=tp_dev["password"],
    )
    token = onenet.make_token(on_dev["key"], "p1", "on1", int(time.time()) + 3600, "sha256")
    on = tls_client(
        served.http_port,
        "on1",
        certs / "ca.pem",
        version=version,
        websocket=True,
        username="p1",
        password=token,
    )
    assert tp.connect() == 0 and on.connect() == 0
    assert tp.publish("devices/telemetry", b'{"temp": 19.5}', qos=1) == 0
    body = {"id": 1, "dp": {"humidity": [{"v": 40, "t": 1_700_000_000}]}}
    assert on.publish("$sys/p1/on1/dp/post/json", json.dumps(body).encode(), qos=1) == 0
    tp_latest = https.get("/api/v1/products/p1/devices/tp1/telemetry/latest").json()
    on_latest = https.get("/api/v1/products/p1/devices/on1/telemetry/latest").json()
    assert tp_latest["temp"]["value"] == 19.5
    assert on_latest["humidity"] == {"ts": 1_700_000_000_000, "value": 40}
    metrics = https.get("/metrics").text
    assert "thingshub_mqtt_websocket_connections 2.0" in metrics
    tp.disconnect()
    on.disconnect()
