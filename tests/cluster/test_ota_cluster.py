"""OTA in a cluster: the rollout job runs on one node, tasks are created and read
on any node, each node keeps up with the others' changes."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import Registered, RunningPlatform
from tests.gateway.test_ota import TASKS, Device, firmware, task, wait_state


def test_a_task_made_on_another_node_is_rolled_out_by_the_jobs_holder(
    node_factory: Callable[..., RunningPlatform],
) -> None:
    a = node_factory("a", ota_tick=0.05)  # first up: it runs the OTA job
    b = node_factory("b", ota_tick=0.05)
    assert a.platform.ota.job.holding and not b.platform.ota.job.holding
    api_a, api_b = a.http(), b.http()
    assert api_a.post("/api/v1/products", json={"id": "p1", "name": "P"}).status_code == 201
    made = api_a.post("/api/v1/products/p1/devices", json={"name": "d1"}).json()
    dev = Registered(
        "p1", "d1", made["device_number"], made["key"], made["username"], made["password"]
    )
    fw, _ = firmware(api_a)  # the file is in a's data dir: a's links serve it
    device = Device(a, dev)
    device.upgrade_to_end()

    r = api_b.post(TASKS, json={"firmware_id": fw["id"], "devices": ["d1"]})
    assert r.status_code == 201, r.text
    task_id = r.json()["id"]
    wait_state(api_a, task_id, "d1", "SUCCEEDED", timeout=10)
    device.join()
    assert len(device.informs) == 1
    # b, which made the task, sees it end too.
    wait_state(api_b, task_id, "d1", "SUCCEEDED", timeout=10)
    assert task(api_b, task_id)["status"] == "COMPLETED"
    # Its device is free again on b: another task for it is accepted there.
    r = api_b.post(TASKS, json={"firmware_id": fw["id"], "devices": ["d1"]})
    assert r.status_code == 201, r.text
    wait_state(api_b, r.json()["id"], "d1", "SUCCEEDED", timeout=10)
