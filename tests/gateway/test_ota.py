"""OTA end to end (docs/protocols.md section 4, the README): packages uploaded over HTTP,
tasks started through the API, paho-mqtt devices that are informed, download the file
over HTTP without the API key (Range included), check its digest and report progress."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from paho.mqtt.client import Client, MQTTMessage

from tests.conftest import Registered, RunningPlatform
from tests.mqtt.clients import PahoClient, wait_until
from thingshub.core import ota

FW = "/api/v1/products/p1/firmware"
TASKS = "/api/v1/products/p1/ota-tasks"
INFORM_KEYS = {"version", "size", "url", "signMethod", "sign", "module", "extData"}


@pytest.fixture
def platform(
    platform_factory: Callable[..., RunningPlatform], database_url: str | None
) -> RunningPlatform:
    """The platform, with a rollout loop quick enough for tests."""
    return platform_factory(database_url=database_url, ota_tick=0.05)


def upload(
    api: httpx.Client, data: bytes, version: str = "1.0.1", module: str = "MCU", **fields: str
) -> httpx.Response:
    return api.post(
        FW,
        files={"file": ("fw.bin", data, "application/octet-stream")},
        data={"version": version, "module": module, **fields},
    )


def firmware(api: httpx.Client, size: int = 150_000, **fields: str) -> tuple[dict[str, Any], bytes]:
    data = os.urandom(size)
    r = upload(api, data, **fields)
    assert r.status_code == 201, r.text
    return r.json(), data


def task(api: httpx.Client, task_id: str) -> dict[str, Any]:
    r = api.get(f"{TASKS}/{task_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def states(api: httpx.Client, task_id: str) -> dict[str, str]:
    return {d["name"]: d["state"] for d in task(api, task_id)["devices"]}


def wait_state(api: httpx.Client, task_id: str, name: str, state: str, timeout: float = 5) -> None:
    wait_until(
        lambda: states(api, task_id)[name] == state, timeout, f"{name} to be {state} in {task_id}"
    )


class Device:
    """A ThingsPanel device with an OTA client: subscribed to its inform topic, it
    remembers the informs; `run` makes it upgrade on each inform (on a thread of its
    own): download in two ranged halves, check the digest, report progress."""

    def __init__(self, platform: RunningPlatform, dev: Registered, *, connect: bool = True) -> None:
        self.platform = platform
        self.dev = dev
        self.topic = f"ota/devices/inform/{dev.device_number}"
        self.informs: list[dict[str, Any]] = []
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self.upgrade: Callable[[dict[str, Any]], None] | None = None
        self.client: PahoClient | None = None
        if connect:
            self.connect()

    def connect(self) -> None:
        self.client = PahoClient(
            self.platform.mqtt_port,
            f"ota-{self.dev.name}",
            username=self.dev.username,
            password=self.dev.password,
        )
        self.client.client.message_callback_add(self.topic, self._on_inform)
        assert self.client.subscribe(self.topic, qos=1) == [1]

    def _on_inform(self, _c: Client, _u: object, message: MQTTMessage) -> None:
        body = json.loads(message.payload)
        self.informs.append(body)
        if self.upgrade is not None:
            thread = threading.Thread(target=self._safely, args=(self.upgrade, body))
            self.threads.append(thread)
            thread.start()

    def _safely(self, work: Callable[[dict[str, Any]], None], body: dict[str, Any]) -> None:
        try:
            work(body)
        except BaseException as exc:  # surfaced by `join`
            self.errors.append(exc)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(10)
        assert not self.errors, self.errors

    def report(self, step: int | str, desc: str = "", module: str = "MCU") -> int:
        assert self.client is not None
        body = {"step": str(step), "desc": desc, "module": module}
        return self.client.publish("ota/devices/progress", json.dumps(body).encode(), qos=1)

    def download(self, url: str, size: int) -> bytes:
        """The file, fetched in two ranged halves as a device resuming would."""
        half = size // 2
        with httpx.Client(timeout=10) as http:  # no API key: the URL's token admits it
            first = http.get(url, headers={"Range": f"bytes=0-{half - 1}"})
            assert first.status_code == 206, first.text
            assert first.headers["content-range"] == f"bytes 0-{half - 1}/{size}"
            self.report(30, "downloading")
            rest = http.get(url, headers={"Range": f"bytes={half}-"})
            assert rest.status_code == 206, rest.text
            assert rest.headers["content-range"] == f"bytes {half}-{size - 1}/{size}"
        return first.content + rest.content

    def upgrade_to_end(self, final: int = 100, desc: str = "") -> None:
        def work(body: dict[str, Any]) -> None:
            params = body["params"]
            data = self.download(params["url"], params["size"])
            digest = hashlib.md5 if params["signMethod"] == "MD5" else hashlib.sha256
            assert digest(data).hexdigest() == params["sign"]
            assert len(data) == params["size"]
            self.report(60, "verified")
            self.report(final, desc)

        self.upgrade = work


def test_upgrade_three_devices_one_offline_until_later(
    platform: RunningPlatform, register: Callable[..., Registered]
) -> None:
    api = platform.http()
    devs = [register("p1", f"d{i}") for i in (1, 2, 3)]
    fw, data = firmware(api, ext_data='{"force": true}')
    assert fw["size"] == len(data)
    assert fw["md5"] == hashlib.md5(data).hexdigest()
    assert fw["sha256"] == hashlib.sha256(data).hexdigest()
    d1, d2 = Device(platform, devs[0]), Device(platform, devs[1])
    d3 = Device(platform, devs[2], connect=False)  # offline when the task starts
    d1.upgrade_to_end()
    d2.upgrade_to_end(-2, "connection reset")
    d3.upgrade_to_end()

    r = api.post(TASKS, json={"firmware_id": fw["id"], "devices": ["d1", "d2", "d3"]})
    assert r.status_code == 201, r.text
    created = r.json()
    task_id = created["id"]
    assert created["status"] == "RUNNING"
    wait_state(api, task_id, "d1", "SUCCEEDED")
    wait_state(api, task_id, "d2", "FAILED")
    assert states(api, task_id)["d3"] == "QUEUED"

    d3.connect()  # comes online later: informed right after it subscribes
    wait_state(api, task_id, "d3", "SUCCEEDED")
    for d in (d1, d2, d3):
        d.join()
        assert len(d.informs) == 1

    inform = d1.informs[0]
    assert set(inform) == {"id", "code", "params"}
    assert inform["id"] == task_id and inform["code"] == 200
    params = inform["params"]
    assert set(params) == INFORM_KEYS
    assert params["version"] == "1.0.1" and params["module"] == "MCU"
    assert params["size"] == len(data)
    assert params["signMethod"] == "SHA256" and params["sign"] == fw["sha256"]
    assert params["extData"] == {"force": True}
    assert params["url"].startswith(f"{platform.base_url}/ota/download/{task_id}/d1?token=")

    done = task(api, task_id)
    assert done["status"] == "COMPLETED" and done["finished_at"] is not None
    by_name = {d["name"]: d for d in done["devices"]}
    assert [d["name"] for d in done["devices"]] == ["d1", "d2", "d3"]
    assert by_name["d1"]["state"] == "SUCCEEDED" and by_name["d1"]["step"] == 100
    assert by_name["d3"]["state"] == "SUCCEEDED"
    assert by_name["d2"]["state"] == "FAILED" and by_name["d2"]["step"] == -2
    assert by_name["d2"]["desc"] == "download failed"
    assert by_name["d2"]["detail"] == "connection reset"
    assert done["counts"]["SUCCEEDED"] == 2 and done["counts"]["FAILED"] == 1
    listed = api.get(TASKS).json()["items"]
    assert [(t["id"], t["status"], t["counts"]["SUCCEEDED"]) for t in listed] == [
        (task_id, "COMPLETED", 2)
    ]
    # The link of a finished upgrade no longer works.
    assert httpx.get(params["url"]).status_code == 403


def test_range_downloads(platform: RunningPlatform, register: Callable[..., Registered]) -> None:
    api = platform.http()
    d = Device(platform, register("p1", "d1"))
    fw, data = firmware(api, size=1000)
    tid = api.post(TASKS, json={"firmware_id": fw["id"], "devices": ["d1"]}).json()["id"]
    wait_until(lambda: d.informs, what="the inform")
    url = d.informs[0]["params"]["url"]
    with httpx.Client() as http:
        whole = http.get(url)
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["accept-ranges"] == "bytes"
        assert whole.headers["content-type"] == "application/octet-stream"
        assert whole.headers["x-firmware-sha256"] == fw["sha256"]
        part = http.get(url, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == data[100:200]
        assert part.headers["content-range"] == "bytes 100-199/1000"
        assert part.headers["content-length"] == "100"
        tail = http.get(url, headers={"Range": "bytes=-50"})
        assert tail.status_code == 206 and tail.content == data[-50:]
        assert tail.headers["content-range"] == "bytes 950-999/1000"
        rest = http.get(url, headers={"Range": "bytes=900-"})
        assert rest.status_code == 206 and rest.content == data[900:]
        beyond = http.get(url, headers={"Range": "bytes=1000-"})
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == "bytes */1000"
        head = http.head(url)
        assert head.status_code == 200 and head.headers["content-length"] == "1000"
        assert head.content == b""
    assert states(api, tid)["d1"] == "INFORMED"


def test_forged_and_expired_tokens(
    platform: RunningPlatform, register: Callable[..., Registered]
) -> None:
    api = platform.http()
    d1, d2 = Device(platform, register("p1", "d1")), Device(platform, register("p1", "d2"))
    fw, _ = firmware(api, size=100)
    tid = api.post(TASKS, json={"firmware_id": fw["id"], "devices": ["d1", "d2"]}).json()["id"]
    wait_until(lambda: d1.informs and d2.informs, what="the informs")
    url1 = d1.informs[0]["params"]["url"]
    token = url1.split("token=", 1)[1]
    base = f"{platform.base_url}/ota/download/{tid}"
    expiry, mac = token.split(".")
    flipped = mac[:-1] + ("0" if mac[-1] != "0" else "1")
    secret = platform.call(lambda: platform.platform.ota.secret)
    expired = ota.sign_token(secret, tid, "d1", fw["id"], int(time.time()) - 5)
    with httpx.Client() as http:
        assert http.get(url1).status_code == 200
        for bad in (
            f"{base}/d1",  # no token
            f"{base}/d1?token=",
            f"{base}/d1?token={expiry}.{flipped}",  # forged signature
            f"{base}/d1?token={int(expiry) + 3600}.{mac}",  # a longer life, same signature
            f"{base}/d1?token=garbage",
            f"{base}/d2?token={token}",  # d1's token for d2's download
            f"{platform.base_url}/ota/download/nosuchtask/d1?token={token}",
            f"{base}/d1?token={expired}",  # well signed, but expired
        ):
            r = http.get(bad)
            assert r.status_code == 403, (bad, r.text)
            assert r.json()["error"]
        r = http.get(f"{base}/d1?token={expired}")
        assert "expired" in r.json()["error"]
    # A forged token never needs the API key to be refused, and the API key is no token.
    r = api.get(f"/ota/download/{tid}/d1")
    assert r.status_code == 403
    metrics = api.get("/metrics").text
    assert 'thingshub_ota_downloads_total{result="refused"} 10.0' in metrics


def test_upload_validation_and_listing(
    platform: RunningPlatform, register: Callable[..., Registered]
) -> None:
    register("p1", "d1")
    api = platform.http()
    fw, data = firmware(api, size=10, name="Main MCU image", ext_data='{"a": [1, 2]}')
    assert fw["name"] == "Main MCU image" and fw["ext_data"] == {"a": [1, 2]}
    other, _ = firmware(api, size=10, version="1.0.2")
    assert other["name"] == "fw.bin"  # the file's name by default
    assert upload(api, b"x", version="1.0.1").status_code == 409  # that version exists
    assert upload(api, b"x", version="1.0.1", module="WIFI").status_code == 201
    for fields, status in (
        ({"version": ""}, 400),
        ({"version": "has space"}, 400),
        ({"module": "a/b"}, 400),
        ({"ext_data": "[1]"}, 400),
        ({"ext_data": "{nope"}, 400),
        ({"ext_data": json.dumps({"x": "y" * 9000})}, 400),
    ):
        args = {"version": "2.0", "module": "MCU", **fields}
        r = upload(api, b"data", **args)
        assert r.status_code == status, (fields, r.text)
        assert r.json()["error"]
    assert upload(api, b"", version="3.0").status_code == 400  # empty file
    no_file = api.post(FW, files={"version": (None, "4.0"), "module": (None, "MCU")})
    assert no_file.status_code == 400 and "file" in no_file.json()["error"]
    unknown = api.post(
        FW, files={"file": ("f", b"x"), "version": (None, "4.0"), "module": (None, "M"), "x": "1"}
    )
    assert unknown.status_code == 400 and "unknown part" in unknown.json()["error"]
    assert api.post(FW, json={"version": "1"}).status_code == 400
    assert (
        api.post(
            FW, content=b"--x\r\nnope", headers={"content-type": "multipart/form-data; boundary=x"}
        ).status_code
        == 400
    )
    nowhere = api.post(
        "/api/v1/products/nope/firmware",
        files={"file": ("f", b"x")},
        data={"version": "1", "module": "M"},
    )
    assert nowhere.status_code == 404
    assert platform.http(authorized=False).get(FW).status_code == 401
    paths = api.get("/openapi.json").json()["paths"]
    assert {FW.replace("p1", "{pid}"), "/ota/download/{task_id}/{device}"} <= set(paths)

    items = api.get(FW).json()["items"]
    assert [f["version"] for f in items] == ["1.0.1", "1.0.2", "1.0.1"]
    assert api.get(f"{FW}/{fw['id']}").json() == fw
    page = api.get(FW, params={"limit": 2}).json()
    assert len(page["items"]) == 2 and page["next"]
    assert len(api.get(FW, params={"cursor": page["next"]}).json()["items"]) == 1
    assert api.delete(f"{FW}/{other['id']}").status_code == 204
    assert api.get(f"{FW}/{other['id']}").status_code == 404
    assert api.delete(f"{FW}/{other['id']}").status_code == 404
    files = sorted(p.name for p in (platform.data_dir / "firmware").iterdir())
    assert files == sorted(f"{f['id']}.bin" for f in api.get(FW).json()["items"])
    assert (platform.data_dir / "firmware" / f"{fw['id']}.bin").read_bytes() == data


def test_upload_size_limit(
    platform_factory: Callable[..., RunningPlatform], database_url: str | None
) -> None:
    p = platform_factory(database_url=database_url, firmware_max_size=1000)
    api = p.http()
    api.post("/api/v1/products", json={"id": "p1", "name": "p1"})
    assert api.get("/api/v1/server").json()["firmware_max_size"] == 1000
    assert upload(api, os.urandom(1000)).status_code == 201  # exactly the limit
    over = upload(api, os.urandom(1001), version="2")
    assert over.status_code == 413, over.text
    assert "1000 bytes" in over.json()["error"]
    # Declared far over the limit: refused before the body is read.
    big = upload(api, os.urandom(200_000), version="3")
    assert big.status_code == 413
    # Streamed (chunked, no length): refused once the bytes pass the limit.
    boundary = "b0undary"

    def body() -> Any:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="version"\r\n\r\n4\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="module"\r\n\r\nMCU\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        for _ in range(3):
            yield b"x" * 600
        yield f"\r\n--{boundary}--\r\n".encode()

    r = api.post(
        FW, content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert r.status_code == 413, r.text
    versions = [f["version"] for f in api.get(FW).json()["items"]]
    assert versions == ["1.0.1"]
    # Nothing of the refused uploads is left behind.
    assert len(list((p.data_dir / "firmware").iterdir())) == 1


def test_cancel(platform: RunningPlatform, register: Callable[..., Registered]) -> None:
    api = platform.http()
    d1, d2 = Device(platform, register("p1", "d1")), Device(platform, register("p1", "d2"))
    register("p1", "d3")  # never connects
    fw, _ = firmware(api, size=100)
    tid = api.post(TASKS, json={"firmware_id": fw["id"], "all": True}).json()["id"]
    wait_until(lambda: d1.informs and d2.informs, what="the informs")
    assert d1.report(100) == 0
    assert d2.report(40, "flashing") == 0
    wait_state(api, tid, "d2", "IN_PROGRESS")
    assert task(api, tid)["devices"][1]["desc"] == "flashing"
    # The package cannot be deleted while the task runs.
    busy = api.delete(f"{FW}/{fw['id']}")
    assert busy.status_code == 409 and "running" in busy.json()["error"]
    r = api.post(f"{TASKS}/{tid}/cancel")
    assert r.status_code == 200, r.text
    canceled = r.json()
    assert canceled["status"] == "CANCELED"
    assert {d["name"]: d["state"] for d in canceled["devices"]} == {
        "d1": "SUCCEEDED",
        "d2": "CANCELED",
        "d3": "CANCELED",
    }
    assert task(api, tid) == canceled
    again = api.post(f"{TASKS}/{tid}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "CANCELED"
    # Reports after the cancel change nothing; the link no longer works.
    assert d2.report(100) == 0
    assert states(api, tid)["d2"] == "CANCELED"
    assert httpx.get(d2.informs[0]["params"]["url"]).status_code == 403
    assert api.delete(f"{FW}/{fw['id']}").status_code == 204
    assert task(api, tid)["status"] == "CANCELED"  # a finished task outlives its package
    assert api.post(f"{TASKS}/nosuch/cancel").status_code == 404


def test_timeout(platform: RunningPlatform, register: Callable[..., Registered]) -> None:
    api = platform.http()
    d1, d2 = Device(platform, register("p1", "d1")), Device(platform, register("p1", "d2"))
    fw, _ = firmware(api, size=100)
    r = api.post(
        TASKS, json={"firmware_id": fw["id"], "devices": ["d1", "d2"], "device_timeout_s": 1}
    )
    tid = r.json()["id"]
    assert r.json()["device_timeout_s"] == 1
    wait_until(lambda: d1.informs and d2.informs, what="the informs")
    assert d1.report(50) == 0  # in progress, but never finishes
    wait_until(lambda: task(api, tid)["status"] == "COMPLETED", 5, "the task to end")
    done = task(api, tid)
    assert [d["state"] for d in done["devices"]] == ["TIMED_OUT", "TIMED_OUT"]
    assert "within 1 s" in done["devices"][0]["desc"]
    assert done["devices"][0]["step"] == 50
    assert httpx.get(d1.informs[0]["params"]["url"]).status_code == 403
    assert api.post(f"{TASKS}/{tid}/cancel").status_code == 409  # completed already


def test_ignored_progress_is_counted(
    platform: RunningPlatform, register: Callable[..., Registered]
) -> None:
    api = platform.http()
    d1 = Device(platform, register("p1", "d1"))
    assert d1.report(10) == 0  # no task at all
    fw, _ = firmware(api, size=100)
    tid = api.post(TASKS, json={"firmware_id": fw["id"], "devices": ["d1"]}).json()["id"]
    wait_until(lambda: d1.informs, what="the inform")
    assert d1.report(10, module="WIFI") == 0  # not the task's module
    for bad_step in ("0", "101", "-5", "abc", "1.5"):
        assert d1.report(bad_step) == 0
    assert d1.client is not None
    for raw in (b"not json", b"[]", b'{"step": "5"}'):
        assert d1.client.publish("ota/devices/progress", raw, qos=1) == 0
    assert states(api, tid)["d1"] == "INFORMED"  # nothing changed
    assert d1.report(20) == 0
    wait_state(api, tid, "d1", "IN_PROGRESS")
    metrics = api.get("/metrics").text
    for reason, n in (
        ("no_task", 1),
        ("unknown_module", 1),
        ("bad_step", 5),
        ("invalid_report", 3),
    ):
        assert f'thingshub_ota_progress_ignored_total{{reason="{reason}"}} {n}.0' in metrics, reason
    assert "thingshub_ota_progress_accepted_total 1.0" in metrics
    assert "thingshub_ota_running_tasks 1.0" in metrics


def test_task_requests_are_checked(
    platform: RunningPlatform, register: Callable[..., Registered]
) -> None:
    api = platform.http()
    register("p1", "d1")
    register("p1", "d2")
    fw, _ = firmware(api, size=100)
    base = {"firmware_id": fw["id"]}
    for body, status in (
        ({**base}, 400),  # neither devices nor all
        ({**base, "devices": []}, 400),
        ({**base, "devices": ["d1"], "all": True}, 400),
        ({**base, "devices": ["d1", "nope"]}, 404),
        ({**base, "devices": ["bad/name"]}, 400),
        ({"firmware_id": "nope", "devices": ["d1"]}, 404),
        ({**base, "devices": ["d1"], "sign_method": "SHA1"}, 400),
        ({**base, "devices": ["d1"], "rollout_per_minute": 0}, 400),
        ({**base, "devices": ["d1"], "device_timeout_s": 0}, 400),
        ({**base, "devices": ["d1"], "extra": 1}, 400),
    ):
        r = api.post(TASKS, json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]
    r = api.post(TASKS, json={**base, "devices": ["d1", "d1"], "sign_method": "md5"})
    assert r.status_code == 201, r.text
    assert r.json()["sign_method"] == "MD5"
    assert [d["name"] for d in r.json()["devices"]] == ["d1"]
    # One running task per device and module.
    busy = api.post(TASKS, json={**base, "all": True})
    assert busy.status_code == 409 and "'d1'" in busy.json()["error"]
    assert api.post(TASKS, json={**base, "devices": ["d2"]}).status_code == 201
    assert api.get(f"{TASKS}/nosuch").status_code == 404
    assert api.get("/api/v1/products/nope/ota-tasks/x").status_code == 404
    assert (
        api.post("/api/v1/products/nope/ota-tasks", json={**base, "all": True}).status_code == 404
    )


def test_md5_and_rollout_pace(
    platform: RunningPlatform, register: Callable[..., Registered]
) -> None:
    api = platform.http()
    devices = [Device(platform, register("p1", f"d{i}")) for i in range(4)]
    late = Device(platform, register("p1", "late"), connect=False)
    fw, _ = firmware(api, size=100)
    r = api.post(
        TASKS,
        json={
            "firmware_id": fw["id"],
            "devices": ["late", "d0", "d1", "d2", "d3"],
            "rollout_per_minute": 600,  # one every 100 ms
            "sign_method": "MD5",
        },
    )
    tid = r.json()["id"]
    late.connect()  # subscribing does not jump the queue's pace
    wait_until(lambda: all(d.informs for d in [*devices, late]), 5, "every inform")
    informed = sorted(d["informed_at"] for d in task(api, tid)["devices"])
    # At most 1 + 10 a second: the k-th inform comes at least k x 100 ms after the first.
    # The pace runs on the monotonic clock and `informed_at` is the wall clock read just
    # before it, each in whole ms: two readings of two clocks may differ by 2 ms.
    assert all(at - informed[0] >= 100 * k - 2 for k, at in enumerate(informed)), informed
    assert informed[-1] - informed[0] < 2000  # and the pace is kept up, not slower
    assert devices[0].informs[0]["params"]["signMethod"] == "MD5"
    assert devices[0].informs[0]["params"]["sign"] == fw["md5"]


def test_deleting_a_device_cancels_its_part(
    platform: RunningPlatform, register: Callable[..., Registered]
) -> None:
    api = platform.http()
    register("p1", "d1")
    fw, _ = firmware(api, size=100)
    tid = api.post(TASKS, json={"firmware_id": fw["id"], "devices": ["d1"]}).json()["id"]
    assert api.delete("/api/v1/products/p1/devices/d1").status_code == 204
    wait_until(lambda: task(api, tid)["status"] == "COMPLETED", what="the task to end")
    device = task(api, tid)["devices"][0]
    assert device["state"] == "CANCELED" and device["desc"] == "the device was deleted"


def test_rollout_resumes_after_a_restart(
    platform_factory: Callable[..., RunningPlatform], database_url: str | None
) -> None:
    p = platform_factory(database_url=database_url, ota_tick=0.05)
    api = p.http()
    api.post("/api/v1/products", json={"id": "p1", "name": "p"})
    created = []
    for name in ("d1", "d2"):
        d = api.post("/api/v1/products/p1/devices", json={"name": name}).json()
        created.append(
            Registered("p1", name, d["device_number"], d["key"], d["username"], d["password"])
        )
    fw, data = firmware(api, size=5000)
    d1 = Device(p, created[0])
    tid = api.post(TASKS, json={"firmware_id": fw["id"], "all": True}).json()["id"]
    wait_until(lambda: d1.informs, what="the inform")
    assert d1.report(40) == 0
    url = d1.informs[0]["params"]["url"]
    platform_factory.stop(p)
    assert d1.client is not None
    d1.client.wait_disconnected()

    p2 = platform_factory(database_url=database_url, ota_tick=0.05)
    api2 = p2.http()
    assert states(api2, tid) == {"d1": "IN_PROGRESS", "d2": "QUEUED"}
    d2 = Device(p2, created[1], connect=False)
    d2.upgrade_to_end()
    d2.connect()
    wait_state(api2, tid, "d2", "SUCCEEDED")
    d2.join()
    # d1's link (made before the restart, for the old port) still carries a good token.
    token = url.split("token=", 1)[1]
    r = httpx.get(f"{p2.base_url}/ota/download/{tid}/d1?token={token}")
    assert r.status_code == 200 and r.content == data
    d1.platform = p2
    d1.connect()
    assert d1.report(100) == 0
    wait_until(lambda: task(api2, tid)["status"] == "COMPLETED", what="the task to end")


def test_links_use_the_public_url(
    platform_factory: Callable[..., RunningPlatform], database_url: str | None
) -> None:
    p = platform_factory(database_url=database_url, public_url="https://fw.example:8443/hub/")
    api = p.http()
    api.post("/api/v1/products", json={"id": "p1", "name": "p"})
    d = api.post("/api/v1/products/p1/devices", json={"name": "d1"}).json()
    dev = Device(
        p, Registered("p1", "d1", d["device_number"], d["key"], d["username"], d["password"])
    )
    fw, _ = firmware(api, size=10)
    tid = api.post(TASKS, json={"firmware_id": fw["id"], "devices": ["d1"]}).json()["id"]
    wait_until(lambda: dev.informs, what="the inform")
    url = dev.informs[0]["params"]["url"]
    assert url.startswith(f"https://fw.example:8443/hub/ota/download/{tid}/d1?token=")
    # The same link, on the address the test reaches: the path and token are what count.
    local = url.replace("https://fw.example:8443/hub", p.base_url)
    assert httpx.get(local).status_code == 200


def test_settings_of_ota() -> None:
    from thingshub.config import SettingsError, load

    settings = load(
        {}, {"THINGSHUB_PUBLIC_URL": "http://10.0.0.5:8080", "THINGSHUB_FIRMWARE_MAX_SIZE": "5"}
    )
    assert settings.public_url == "http://10.0.0.5:8080" and settings.firmware_max_size == 5
    assert load({}, {}).firmware_max_size == 256 * 1024 * 1024 and load({}, {}).ota_tick == 1.0
    for env in (
        {"THINGSHUB_PUBLIC_URL": "ftp://x"},
        {"THINGSHUB_FIRMWARE_MAX_SIZE": "0"},
        {"THINGSHUB_OTA_TICK": "0"},
    ):
        with pytest.raises(SettingsError):
            load({}, env)


def test_progress_reaches_the_live_stream(
    platform: RunningPlatform, register: Callable[..., Registered]
) -> None:
    from tests.api.test_stream import open_stream, receive

    api = platform.http()
    d1 = Device(platform, register("p1", "d1"))
    fw, _ = firmware(api, size=100)
    with open_stream(platform, "kinds=ota&device=d1") as ws:
        tid = api.post(TASKS, json={"firmware_id": fw["id"], "devices": ["d1"]}).json()["id"]
        informed = receive(ws, "ota")
        assert informed["product_id"] == "p1" and informed["device"] == "d1"
        assert informed["data"] == {"task_id": tid, "state": "INFORMED", "step": None}
        assert d1.report(40, "flashing") == 0
        progress = receive(ws, "ota")
        assert progress["data"] == {"task_id": tid, "state": "IN_PROGRESS", "step": 40}
        assert d1.report(100) == 0
        assert receive(ws, "ota")["data"] == {"task_id": tid, "state": "SUCCEEDED", "step": 100}
