"""Device login over real MQTT: OneNET tokens and ThingsPanel user name/password,
the refusal codes of both protocol versions, the slow-down of repeated failures
(more in test_login_throttle.py), escaped log lines, and a malformed will."""

from __future__ import annotations

import logging
import time

import pytest

from tests.conftest import Registered, RunningPlatform
from tests.mqtt.clients import PahoClient, RawClient
from thingshub.dialects.onenet import token as onenet
from thingshub.mqtt.codec import Connack, Connect, Will

NOW = int(time.time())


def token_for(
    dev: Registered,
    *,
    et: int | None = None,
    method: str = "sha256",
    name: str | None = None,
    key: str | None = None,
) -> str:
    return onenet.make_token(
        key or dev.key,
        dev.product_id,
        name or dev.name,
        et if et is not None else NOW + 3600,
        method,
    )


@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize("method", ["md5", "sha1", "sha256"])
def test_onenet_token_login(platform: RunningPlatform, register, version: int, method: str) -> None:
    dev = register()
    client = PahoClient(
        platform.mqtt_port,
        dev.name,
        version=version,
        username=dev.product_id,
        password=token_for(dev, method=method),
        connect=False,
    )
    assert client.connect() == 0


@pytest.mark.parametrize("version", [4, 5])
def test_thingspanel_password_login(platform: RunningPlatform, register, version: int) -> None:
    dev = register()
    client = PahoClient(
        platform.mqtt_port,
        "any-client-id",
        version=version,
        username=dev.username,
        password=dev.password,
        connect=False,
    )
    assert client.connect() == 0


# 5.0 reason code and the 3.1.1 return code each refusal must produce.
BAD_CREDENTIALS = {5: 0x86, 4: 4}


def refused(
    port: int, version: int, client_id: str, username: str | None, password: str | None
) -> int:
    raw = RawClient(port, version)
    connack = raw.connect(
        client_id, username=username, password=password.encode() if password is not None else None
    )
    code = connack.reason_code
    raw.wait_closed()
    return code


@pytest.mark.parametrize("version", [4, 5])
def test_refusals(platform: RunningPlatform, register, version: int) -> None:
    dev = register()
    other = register("p1", "d2")
    port = platform.mqtt_port
    bad = BAD_CREDENTIALS[version]
    wrong_sig = token_for(dev, key=other.key)
    assert refused(port, version, dev.name, dev.product_id, wrong_sig) == bad
    expired = token_for(dev, et=NOW - 1)
    assert refused(port, version, dev.name, dev.product_id, expired) == bad
    # A valid token of another device cannot log in as this one ...
    assert refused(port, version, dev.name, dev.product_id, token_for(other)) == bad
    # ... nor the other way round (the token names d1, the client id d2).
    assert refused(port, version, other.name, dev.product_id, token_for(dev)) == bad
    assert refused(port, version, dev.name, "p-other", token_for(dev)) == bad
    assert refused(port, version, "c", dev.username, "wrong-password") == bad
    assert refused(port, version, "c", "nobody", dev.password) == bad
    assert refused(port, version, "c", other.username, dev.password) == bad
    assert refused(port, version, "c", dev.username, None) == bad
    assert refused(port, version, "c", None, None) == bad


def test_failures_are_counted(platform: RunningPlatform, register) -> None:
    dev = register()
    refused(platform.mqtt_port, 5, "c", dev.username, "wrong")
    PahoClient(platform.mqtt_port, "ok", username=dev.username, password=dev.password)
    import httpx

    text = httpx.get(f"{platform.base_url}/metrics").text
    assert 'thingshub_device_logins_total{result="ok"} 1.0' in text
    assert 'thingshub_device_logins_total{result="failed_Unauthorized"} 1.0' in text


def test_repeated_failures_from_one_address_are_slowed_down(
    platform: RunningPlatform, register
) -> None:
    dev = register()
    throttle = platform.platform.gateway.throttle
    durations = []
    for _ in range(throttle.free + 3):
        started = time.monotonic()
        refused(platform.mqtt_port, 5, "c", dev.username, "wrong")
        durations.append(time.monotonic() - started)
    assert max(durations[: throttle.free]) < throttle.base_delay
    assert durations[-1] >= throttle.base_delay * 4 * 0.9  # 2**2 after free + 2
    # Even a correct password waits while the address is being slowed down.
    started = time.monotonic()
    client = PahoClient(
        platform.mqtt_port, "ok", username=dev.username, password=dev.password, connect=False
    )
    assert client.connect() == 0
    assert time.monotonic() - started >= throttle.base_delay


@pytest.mark.parametrize("login", ["v5-token", "v3-password"])
def test_deleted_device_is_disconnected_and_cannot_log_in(
    platform: RunningPlatform, register, login: str
) -> None:
    # One login at a time: a device holds one connection (test_takeover.py).
    dev = register()
    if login == "v5-token":
        client = PahoClient(
            platform.mqtt_port, dev.name, username=dev.product_id, password=token_for(dev)
        )
    else:
        client = PahoClient(
            platform.mqtt_port, "tp", version=4, username=dev.username, password=dev.password
        )
    api = platform.http()
    assert api.delete(f"/api/v1/products/{dev.product_id}/devices/{dev.name}").status_code == 204
    code = client.wait_disconnected()
    if login == "v5-token":
        assert code == 0x98  # administrative action
    assert refused(platform.mqtt_port, 5, "tp", dev.username, dev.password) == 0x86
    assert refused(platform.mqtt_port, 5, dev.name, dev.product_id, token_for(dev)) == 0x86


def test_same_client_id_of_two_devices_do_not_take_each_other_over(
    platform: RunningPlatform, register
) -> None:
    a = register("p1", "a")
    b = register("p1", "b")
    ca = PahoClient(platform.mqtt_port, "shared-id", username=a.username, password=a.password)
    cb = PahoClient(platform.mqtt_port, "shared-id", username=b.username, password=b.password)
    ca.fence()
    cb.fence()
    assert ca.disconnect_code is None and cb.disconnect_code is None
    # The same device reconnecting with the same client id does take over.
    ca2 = PahoClient(platform.mqtt_port, "shared-id", username=a.username, password=a.password)
    assert ca.wait_disconnected() == 0x8E
    ca2.fence()


def test_a_client_id_cannot_forge_a_log_line(
    platform: RunningPlatform, register, caplog: pytest.LogCaptureFixture
) -> None:
    """The refusal is logged with the client id, escaped: no raw control character
    (a newline would start a forged line) reaches the log."""
    dev = register()
    caplog.set_level(logging.INFO, logger="thingshub")
    forged = "x\n2026-01-01 00:00:00,000 ERROR thingshub.gateway: forged\r\x1b[2K"
    assert refused(platform.mqtt_port, 4, forged, dev.username, "wrong") == 4
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("thingshub")]
    assert any("forged" in line for line in lines), lines
    assert all(line.isprintable() for line in lines), lines


@pytest.mark.parametrize("version", [4, 5])
def test_a_will_topic_with_a_wildcard_is_a_protocol_error(
    platform: RunningPlatform, register, version: int
) -> None:
    """Even with good credentials: 3.1.1 is closed without CONNACK (it has no code
    for a CONNECT that breaks the protocol), 5.0 gets CONNACK 0x82."""
    dev = register()
    raw = RawClient(platform.mqtt_port, version)
    raw.send(
        Connect("c", version, True, 0, dev.username, dev.password.encode(), Will("devices/#", b"x"))
    )
    assert raw.wait_closed() == ([Connack(0x82)] if version == 5 else [])
