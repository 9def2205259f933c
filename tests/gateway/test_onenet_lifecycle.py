"""OneNET's device lifecycle end to end (field-protocols §4, §5.1, §5.4, §6): product
access keys, dynamic registration, and OneNET's OTA (its HTTP API and the MQTT notice),
over real sockets: paho-mqtt devices and httpx against a platform on free ports."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import RunningPlatform
from tests.gateway.test_login import BAD_CREDENTIALS, refused
from tests.gateway.test_ota import firmware, task, wait_state
from tests.mqtt.clients import PahoClient, wait_until
from thingshub.core import onenet_ota as rules
from thingshub.dialects.onenet.token import make_token

TASKS = "/api/v1/products/p1/ota-tasks"
LATER = int(time.time()) + 3600


@pytest.fixture
def platform(
    platform_factory: Callable[..., RunningPlatform], database_url: str | None
) -> RunningPlatform:
    return platform_factory(database_url=database_url, ota_tick=0.05)


def product(api: httpx.Client, pid: str = "p1", **flags: object) -> dict[str, Any]:
    r = api.post("/api/v1/products", json={"id": pid, "name": pid, **flags})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def device(api: httpx.Client, name: str, pid: str = "p1") -> dict[str, Any]:
    r = api.post(f"/api/v1/products/{pid}/devices", json={"name": name})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def logs_in(platform: RunningPlatform, name: str, token: str, pid: str = "p1") -> int:
    client = PahoClient(
        platform.mqtt_port, name, username=pid, password=token, connect=False, version=4
    )
    try:
        return client.connect()
    finally:
        client.close()


# ---------------------------------------------------------------- keys and registration


def test_a_device_registers_itself_and_logs_in_with_either_key(platform: RunningPlatform) -> None:
    api = platform.http()
    access_key = product(api, dynamic_registration=True)["access_key"]
    product_token = make_token(access_key, "p1", None, LATER)
    http = httpx.Client(base_url=platform.base_url, timeout=10)
    platform.clients.append(http)

    r = http.post(
        "/mqtt/v1/devices/reg", json={"name": "r1"}, headers={"Authorization": product_token}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["code_no"] == "000000" and body["message"] == "success" and body["request_id"]
    data = body["data"]
    assert data["name"] == "r1" and data["pid"] == "p1" and data["device_id"]
    own_key = data["key"]
    # Registering again returns the same device, as OneNET does.
    again = http.post(
        "/mqtt/v1/devices/reg", json={"name": "r1"}, headers={"Authorization": product_token}
    )
    assert again.status_code == 200 and again.json()["data"]["key"] == own_key
    # A key the device chose.
    chosen = "a2V5LW9mLXIy"
    r2 = http.post(
        "/mqtt/v1/devices/reg",
        json={"name": "r2", "desc": "second", "key": chosen},
        headers={"Authorization": make_token(access_key, "p1", None, LATER, version="2022-05-01")},
    )
    assert r2.status_code == 200 and r2.json()["data"]["key"] == chosen

    # Logins: its own key, the product key at device level, the product-level token.
    assert logs_in(platform, "r1", make_token(own_key, "p1", "r1", LATER)) == 0
    assert logs_in(platform, "r1", make_token(access_key, "p1", "r1", LATER)) == 0
    assert logs_in(platform, "r1", product_token) == 0
    assert logs_in(platform, "r2", make_token(chosen, "p1", "r2", LATER, "md5")) == 0
    # The device's own key does not sign for the product.
    bad = BAD_CREDENTIALS[4]
    assert refused(platform.mqtt_port, 4, "r1", "p1", make_token(own_key, "p1", None, LATER)) == bad

    # Rotation: the old product key stops working at once; the device key stays good.
    rotated = api.post("/api/v1/products/p1/access-key")
    assert rotated.status_code == 200, rotated.text
    new_key = rotated.json()["access_key"]
    assert new_key != access_key
    port = platform.mqtt_port
    assert refused(port, 4, "r1", "p1", product_token) == bad
    assert refused(port, 4, "r1", "p1", make_token(access_key, "p1", "r1", LATER)) == bad
    assert logs_in(platform, "r1", make_token(new_key, "p1", None, LATER)) == 0
    assert logs_in(platform, "r1", make_token(own_key, "p1", "r1", LATER)) == 0
    old = http.post(
        "/mqtt/v1/devices/reg", json={"name": "r3"}, headers={"Authorization": product_token}
    )
    assert old.status_code == 401 and old.json()["code_no"] == "000002"
    # The key is never shown again.
    shown = api.get("/api/v1/products/p1").json()
    assert "access_key" not in shown and shown["dynamic_registration"] is True
    assert "product_key" not in api.get("/api/v1/products/p1/devices/r1").text


def test_registration_refusals_in_onenet_envelope(platform: RunningPlatform) -> None:
    api = platform.http()
    key = product(api)["access_key"]  # dynamic registration off
    http = httpx.Client(base_url=platform.base_url, timeout=10)
    platform.clients.append(http)
    token = make_token(key, "p1", None, LATER)

    def reg(body: object, auth: str | None = token) -> tuple[int, str]:
        headers = {"Authorization": auth} if auth is not None else {}
        r = http.post("/mqtt/v1/devices/reg", content=json.dumps(body), headers=headers)
        return r.status_code, r.json()["code_no"]

    assert reg({"name": "x"}) == (403, "000002")
    assert api.patch("/api/v1/products/p1", json={"dynamic_registration": True}).status_code == 200
    assert reg({"name": "x"}, None) == (401, "000001")
    assert reg({"name": "x"}, "version=2018-10-31&res=products%2Fp1") == (401, "000002")
    assert reg({"name": "x"}, make_token(key, "p1", "x", LATER)) == (401, "000002")
    assert reg({"name": "x"}, make_token(key, "nope", None, LATER)) == (401, "000002")
    assert reg({"name": "x"}, make_token(key, "p1", None, int(time.time()) - 5)) == (401, "000002")
    assert reg({"name": "bad/name"}) == (400, "000007")
    assert reg({"name": "x", "key": "not base64!"}) == (400, "000007")
    assert reg({"name": "x", "desc": 5}) == (400, "000007")
    assert reg(["x"]) == (400, "000007")
    assert api.get("/api/v1/products/p1/devices/x").status_code == 404  # nothing written
    assert reg({"name": "x"}) == (200, "000000")


# ---------------------------------------------------------------- OTA over HTTP


class OneNetOtaClient:
    """A OneNET device speaking the OTA HTTP API, as the C SDK does."""

    def __init__(
        self, platform: RunningPlatform, name: str, key: str, prefix: str = "/ota"
    ) -> None:
        self.name = name
        self.http = httpx.Client(
            base_url=f"{platform.base_url}{prefix}/p1/{name}",
            headers={"Authorization": make_token(key, "p1", name, LATER, "sha1")},
            timeout=10,
        )
        platform.clients.append(self.http)

    def json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        r = self.http.request(method, path, **kw)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        assert body["errno"] == body["code"] and body["error"] == body["msg"], body
        assert r.headers["Ota-Errno"] == str(body["errno"])
        return body

    def errno(self, method: str, path: str, **kw: Any) -> int:
        return int(self.json(method, path, **kw)["errno"])

    def check(self, version: str, kind: int = 1) -> dict[str, Any]:
        body = self.json("GET", "/check", params={"type": kind, "version": version})
        assert body["errno"] == 0, body
        data: dict[str, Any] = body["data"]
        return data

    def status(self, tid: int) -> int:
        body = self.json("GET", f"/{tid}/check")
        assert body["errno"] == 0, body
        return int(body["data"]["status"])

    def step(self, tid: int, step: object) -> int:
        return self.errno("POST", f"/{tid}/status", json={"step": step})


def entry(api: httpx.Client, task_id: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(d for d in task(api, task_id)["devices"] if d["name"] == name)
    return found


FAILURE_STEPS = sorted(rules.STEP_FAILURES)


def test_a_onenet_device_upgrades_through_the_http_api(platform: RunningPlatform) -> None:
    api = platform.http()
    product(api)
    keys = {n: device(api, n)["key"] for n in ["o1", "o2", "o3", *(f"f{s}" for s in FAILURE_STEPS)]}
    fw, data = firmware(api, size=10_000, version="2.0.0", module="fota")
    created = api.post(TASKS, json={"firmware_id": fw["id"], "devices": list(keys)})
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    o1 = OneNetOtaClient(platform, "o1", keys["o1"])

    # Versions: reported, read back, shown on the device.
    assert o1.errno("POST", "/version", json={"f_version": "1.0.0", "s_version": "app-1"}) == 0
    assert o1.json("GET", "/version")["data"] == {"f_version": "1.0.0", "s_version": "app-1"}
    assert o1.errno("POST", "/version", json={"f_version": "1 0"}) == rules.BAD_VERSION
    assert o1.errno("POST", "/version", content=b"{") == rules.BAD_PARAMS
    shown = api.get("/api/v1/products/p1/devices/o1").json()
    assert shown["versions"] == {"f_version": "1.0.0", "s_version": "app-1"}

    # Check: the task of type 1 (a FOTA package); none of type 2.
    assert o1.errno("GET", "/check", params={"type": 2, "version": "app-1"}) == rules.NO_TASK
    assert o1.errno("GET", "/check", params={"type": 3, "version": "1"}) == rules.BAD_PARAMS
    assert o1.errno("GET", "/check", params={"type": 1, "version": "x" * 21}) == rules.BAD_VERSION
    found = o1.check("1.0.0")
    assert found["target"] == "2.0.0" and found["size"] == len(data) and found["type"] == 1
    assert found["md5"] == hashlib.md5(data).hexdigest() and found["status"] == 1
    tid = found["tid"]
    assert isinstance(tid, int) and tid > 0
    assert o1.status(tid) == 1
    assert entry(api, task_id, "o1")["state"] == "INFORMED"

    # Download in two ranges as the SDK asks (no `bytes=`), the second resumed.
    first = o1.http.get(f"/{tid}/download/", headers={"Range": "0-4095"})
    assert first.status_code == 206, first.text
    assert first.headers["Content-Range"] == f"bytes 0-4095/{len(data)}"
    assert first.headers["Content-Length"] == "4096" and first.headers["Ota-Errno"] == "0"
    assert "filename=" in first.headers["Content-Disposition"]
    rest = o1.http.get(f"/{tid}/download", headers={"Range": "bytes=4096-"})
    assert rest.status_code == 206 and first.content + rest.content == data
    whole = o1.http.get(f"/{tid}/download")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["Content-Length"] == str(len(data))
    assert o1.http.get(f"/{tid}/download", headers={"Range": "-100"}).content == data[-100:]
    clamped = o1.http.get(f"/{tid}/download", headers={"Range": "9000-99999"})
    assert clamped.headers["Content-Range"] == f"bytes 9000-9999/{len(data)}"
    assert entry(api, task_id, "o1")["state"] == "IN_PROGRESS"
    assert o1.status(tid) == 2

    # Steps: progress, downloaded (upgrading), refusals, success.
    for step in (0, 40):
        assert o1.step(tid, step) == 0
    assert o1.status(tid) == 2 and entry(api, task_id, "o1")["step"] == 40
    assert o1.step(tid, 100) == 0 and o1.status(tid) == 3
    assert o1.step(tid, 101) == rules.BAD_OPERATION
    assert o1.step(tid, 50) == rules.BAD_STATE
    assert o1.step(tid, 150) == rules.UNKNOWN_STEP
    assert o1.step(tid, "201") == rules.BAD_PARAMS
    assert o1.step(tid, 201) == 0
    assert o1.status(tid) == 4
    done = entry(api, task_id, "o1")
    assert done["state"] == "SUCCEEDED" and done["step"] == 201
    assert done["protocol"] == "onenet" and done["tid"] == tid
    assert o1.json("GET", "/version")["data"]["f_version"] == "2.0.0"
    assert o1.step(tid, 201) == rules.FINISHED
    gone = o1.http.get(f"/{tid}/download")
    assert gone.status_code == 404 and gone.headers["Ota-Errno"] == str(rules.FINISHED)

    # o2 under the current OneNET prefix: 101 straight after downloading, then 205.
    o2 = OneNetOtaClient(platform, "o2", keys["o2"], "/fuse-ota")
    tid2 = o2.check("1.0.0")["tid"]
    assert o2.step(tid2, 101) == 0 and o2.status(tid2) == 3
    assert o2.step(tid2, 205) == 0 and o2.status(tid2) == 5
    failed = entry(api, task_id, "o2")
    assert failed["state"] == "FAILED" and "MD5" in failed["desc"]
    # Someone else's tid, a bad token, an unknown tid.
    assert o2.errno("GET", f"/{tid}/check") == rules.OTHER_DEVICE
    forged = httpx.get(
        f"{platform.base_url}/ota/p1/o2/{tid2}/check",
        headers={"Authorization": make_token(keys["o1"], "p1", "o2", LATER)},
    )
    assert forged.json()["errno"] == rules.AUTH
    user_token = forged.request.headers["Authorization"].replace("products", "userid", 1)
    assert (
        httpx.get(
            f"{platform.base_url}/ota/p1/o2/version", headers={"Authorization": user_token}
        ).json()["errno"]
        == rules.AUTH
    )
    denied = httpx.get(f"{platform.base_url}/ota/p1/o2/{tid2}/download")
    assert denied.status_code == 403 and denied.headers["Ota-Errno"] == str(rules.AUTH)
    assert o2.errno("GET", "/999999/check") == rules.NO_TASK
    assert o2.errno("GET", "/0/check") == rules.BAD_PARAMS

    # Every failure step code, each on a device of its own.
    for step in FAILURE_STEPS:
        client = OneNetOtaClient(platform, f"f{step}", keys[f"f{step}"])
        t = client.check("1.0.0")["tid"]
        assert client.step(t, 10) == 0
        assert client.step(t, step) == 0, step
        e = entry(api, task_id, f"f{step}")
        assert (e["state"], e["step"], e["desc"]) == ("FAILED", step, rules.STEP_FAILURES[step])

    # o3: its task is canceled under it.
    o3 = OneNetOtaClient(platform, "o3", keys["o3"])
    tid3 = o3.check("1.0.0")["tid"]
    assert o3.step(tid3, 30) == 0
    assert api.post(f"{TASKS}/{task_id}/cancel").status_code == 200
    assert o3.status(tid3) == 6
    assert o3.step(tid3, 40) == rules.CANCELED
    canceled = o3.http.get(f"/{tid3}/download")
    assert canceled.status_code == 404 and canceled.headers["Ota-Errno"] == str(rules.CANCELED)
    assert o3.errno("GET", "/check", params={"type": 1, "version": "1.0.0"}) == rules.NO_TASK


def test_a_reported_target_version_completes_the_task(platform: RunningPlatform) -> None:
    api = platform.http()
    product(api)
    key = device(api, "v1")["key"]
    fw, _ = firmware(api, size=100, version="9.9", module="app")
    task_id = api.post(TASKS, json={"firmware_id": fw["id"], "devices": ["v1"]}).json()["id"]
    v1 = OneNetOtaClient(platform, "v1", key)
    assert v1.check("9.8", kind=2)["status"] == 1
    assert v1.errno("POST", "/version", json={"s_version": "9.9"}) == 0
    wait_until(lambda: task(api, task_id)["status"] == "COMPLETED", 5, "the task to complete")
    assert entry(api, task_id, "v1")["state"] == "SUCCEEDED"
    assert v1.errno("GET", "/check", params={"type": 2, "version": "9.9"}) == rules.NO_TASK


# ---------------------------------------------------------------- the MQTT notice and a mixed task


def test_one_task_upgrades_onenet_and_thingspanel_devices(platform: RunningPlatform) -> None:
    api = platform.http()
    product(api)
    one = device(api, "n1")
    tp = device(api, "t1")
    fw, data = firmware(api, size=5000, version="3.0", module="MCU")

    onenet_client = PahoClient(
        platform.mqtt_port, "n1", username="p1", password=make_token(one["key"], "p1", "n1", LATER)
    )
    assert onenet_client.subscribe("$sys/p1/n1/ota/inform") == [0]
    tp_client = PahoClient(
        platform.mqtt_port, "t1", username=tp["username"], password=tp["password"]
    )
    tp_topic = f"ota/devices/inform/{tp['device_number']}"
    assert tp_client.subscribe(tp_topic) == [0]

    created = api.post(TASKS, json={"firmware_id": fw["id"], "devices": ["n1", "t1"]})
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]

    notice = json.loads(onenet_client.wait_messages(1)[0].payload)
    params = notice["params"]
    assert notice["version"] == "1.0" and notice["id"] == str(params["tid"])
    assert (params["type"], params["target"], params["size"]) == (2, "3.0", len(data))
    assert params["md5"] == hashlib.md5(data).hexdigest()
    assert httpx.get(params["url"]).content == data
    onenet_client.publish(
        "$sys/p1/n1/ota/inform_reply",
        json.dumps({"id": notice["id"], "code": 200, "msg": "success"}).encode(),
        qos=1,
    )
    # The answer is noted in the device's entry (field-protocols §4.1).
    noted = "inform_reply code 200: success"
    wait_until(
        lambda: {d["name"]: d for d in task(api, task_id)["devices"]}["n1"]["desc"] == noted,
        5,
        "the answer noted",
    )
    ignored = platform.platform.ota.ignored
    onenet_client.publish("$sys/p1/n1/ota/inform_reply", b'{"id":"999999"}', qos=1)
    onenet_client.publish("$sys/p1/n1/ota/inform_reply", b"not json", qos=1)
    wait_until(lambda: ignored["inform_reply_without_task"] == 2, 5, "two answers counted")
    inform = json.loads(tp_client.wait_messages(1)[0].payload)
    assert httpx.get(inform["params"]["url"]).content == data

    n1 = OneNetOtaClient(platform, "n1", one["key"])
    tid = params["tid"]
    assert n1.status(tid) == 1
    assert n1.http.get(f"/{tid}/download").content == data
    assert n1.step(tid, 100) == 0 and n1.step(tid, 201) == 0
    tp_client.publish(
        "ota/devices/progress", json.dumps({"step": "100", "module": "MCU"}).encode(), qos=1
    )
    wait_state(api, task_id, "t1", "SUCCEEDED")
    wait_until(lambda: task(api, task_id)["status"] == "COMPLETED", 5, "the task to complete")
    entries = {d["name"]: d for d in task(api, task_id)["devices"]}
    assert entries["n1"]["protocol"] == "onenet" and entries["t1"]["protocol"] == "thingspanel"
    assert entries["n1"]["tid"] != entries["t1"]["tid"]
    assert {d["state"] for d in entries.values()} == {"SUCCEEDED"}
    onenet_client.close()
    tp_client.close()


def test_range_rules() -> None:
    """OneNET's Range rules, at their edges (core/onenet_ota.py)."""
    size = 1000
    cases = {
        None: None,
        "bytes=0-99": (0, 99),
        "0-99": (0, 99),
        "00010-0020": (10, 20),
        "500-": (500, 999),
        "-100": (900, 999),
        "-2000": None,
        "2000-3000": (0, 999),
        "10-5000": (10, 999),
        "50-10": (0, 10),
        "abc": None,
        "-": None,
        "0-1,5-6": None,
    }
    for header, expected in cases.items():
        assert rules.byte_range(header, size) == expected, header
    assert rules.byte_range("0-1", 0) is None
    assert os.environ.get("THINGSHUB_NO_SUCH") is None  # the test reads no settings
