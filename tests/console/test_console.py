"""The console as an operator uses it: a real Chromium against `thingshub serve`.

What the issue asks the console to show: signing in; creating a product and
a device; a paho-mqtt device's telemetry reaching the chart and the latest
values without a reload; desired set in the console reaching the device as a
delta; a command sent from the console and its answer; paging through
100,000 devices; and no bus handlers left behind by closed pages. The thing
model's pages are test_thing.py's; the screenshots, test_screenshots.py's.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.console.browser import assert_not_reloaded, device_url, field, mark_page, series
from tests.console.conftest import FLEET, VIEWPORT, ConsoleServer, fleet_name, sign_in
from tests.console.sim import (
    answer_onenet,
    answer_thingspanel,
    deltas,
    onenet_login,
    report,
    telemetry,
)
from tests.mqtt.clients import PahoClient, wait_until

expect.set_options(timeout=15_000)

LAB = "lab"


@pytest.fixture
def lab_device(console_server: ConsoleServer) -> dict[str, Any]:
    """A new device of product `lab`, registered through the API (with its secrets)."""
    with console_server.api() as api:
        api.post("/api/v1/products", json={"id": LAB, "name": "Lab"})
        r = api.post(
            f"/api/v1/products/{LAB}/devices", json={"name": f"bench-{secrets.token_hex(3)}"}
        )
        assert r.status_code == 201, r.text
        created: dict[str, Any] = r.json()
    return created


# ---------------------------------------------------------------- signing in


def test_every_page_asks_for_the_api_key(browser: Any, console_server: ConsoleServer) -> None:
    base = console_server.base_url
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    try:
        for path in (
            "/console/",
            "/console/products",
            f"/console/devices?product={FLEET}",
            f"/console/products/{FLEET}/devices/{fleet_name(7)}",
            "/console/ota",
        ):
            page.goto(base + path)
            expect(page).to_have_url(re.compile(r"/console/login\?to="))
        page.get_by_label("API key").fill("not-the-key")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_text("That is not an API key of this server.")).to_be_visible()
        page.get_by_label("API key").fill(console_server.api_key)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(f"{base}/console/ota")  # where the visitor wanted to go
        page.get_by_test_id("logout").click()
        expect(page).to_have_url(re.compile(r"/console/login"))
        page.goto(f"{base}/console/products")
        expect(page).to_have_url(re.compile(r"/console/login\?to=%2Fproducts"))
    finally:
        context.close()


def test_no_redirect_out_of_the_console(browser: Any, console_server: ConsoleServer) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    try:
        page.goto(f"{console_server.base_url}/console/login?to=//evil.example/")
        page.get_by_label("API key").fill(console_server.api_key)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(f"{console_server.base_url}/console/")
    finally:
        context.close()


# ---------------------------------------------------------------- no leaks


def test_closed_pages_leave_no_bus_handlers(
    browser: Any, console_server: ConsoleServer, lab_device: dict[str, Any]
) -> None:
    def settled() -> int:
        """The handler count once it has not changed for longer than NiceGUI's reconnect
        timeout (the pages of earlier tests go away after it)."""
        last, since = console_server.bus_handlers(), time.monotonic()
        deadline = since + 30
        while time.monotonic() < deadline and time.monotonic() - since < 4:
            time.sleep(0.5)
            now = console_server.bus_handlers()
            if now != last:
                last, since = now, time.monotonic()
        return last

    baseline = settled()
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    sign_in(page, console_server)
    pages = [
        device_url(console_server, LAB, lab_device["name"]),
        f"{console_server.base_url}/console/devices?product={LAB}",
    ]
    for _ in range(2):
        for url in pages:
            page.goto(url)
            expect(page.get_by_test_id("page-title")).to_be_visible()
    assert console_server.bus_handlers() > baseline  # the open page listens
    context.close()
    wait_until(lambda: console_server.bus_handlers() <= baseline, timeout=20, what="handlers to go")


# ---------------------------------------------------------------- products and devices


def test_the_overview_shows_the_nodes(console: Page, console_server: ConsoleServer) -> None:
    """A single server is a cluster of one: its node, marked as the one serving."""
    with httpx.Client(base_url=console_server.base_url) as http:
        headers = {"Authorization": f"Bearer {console_server.api_key}"}
        node = http.get("/api/v1/cluster", headers=headers).json()["node"]
    console.goto(f"{console_server.base_url}/console/")
    nodes = console.get_by_test_id("nodes")
    expect(nodes.get_by_role("row", name=re.compile(re.escape(node)))).to_contain_text(
        "(this page)"
    )
    expect(nodes.get_by_role("row")).to_have_count(2)  # the heading and the one node


def test_create_a_product_and_a_device_that_comes_online(
    console: Page, console_server: ConsoleServer
) -> None:
    page = console
    pid = f"orchard{secrets.token_hex(2)}"
    page.goto(f"{console_server.base_url}/console/products")
    page.get_by_test_id("new-product").click()
    field(page, "product-name").fill("Orchard")
    field(page, "product-id").fill("no/slash")
    page.get_by_test_id("create-product").click()
    expect(page.get_by_text("id", exact=False).locator("xpath=.")).not_to_have_count(0)
    field(page, "product-id").fill(pid)
    page.get_by_test_id("create-product").click()
    expect(page).to_have_url(re.compile(rf"/console/devices\?product={pid}$"))

    page.get_by_test_id("new-device").click()
    field(page, "device-name").fill("sensor-1")
    field(page, "device-tags").fill('{"row": 3}')
    page.get_by_test_id("create-device").click()
    # The service's own sentence, as the HTTP API would answer it.
    expect(page.get_by_test_id("device-problem")).to_contain_text("must be a string")
    field(page, "device-tags").fill('{"row": "3"}')
    page.get_by_test_id("create-device").click()
    username = page.get_by_test_id("secret-username").inner_text()
    password = page.get_by_test_id("secret-password").inner_text()
    assert username and password
    page.keyboard.press("Escape")
    row = page.get_by_test_id("devices").get_by_role("row", name=re.compile("sensor-1"))
    expect(row).to_contain_text("offline")
    expect(row).to_contain_text("row: 3")

    mark_page(page)
    device = PahoClient(console_server.mqtt_port, "sensor-1", username=username, password=password)
    expect(row).to_contain_text("online")  # live, through the bus
    device.disconnect()
    expect(row).to_contain_text("offline")
    assert_not_reloaded(page)


def test_the_device_list_pages_through_100k_devices(
    console: Page, console_server: ConsoleServer
) -> None:
    page = console
    started = time.monotonic()
    page.goto(f"{console_server.base_url}/console/devices?product={FLEET}")
    table = page.get_by_test_id("devices")
    expect(table.get_by_role("row").nth(1)).to_contain_text(fleet_name(0))
    assert time.monotonic() - started < 5, "the first page of 100,000 devices was slow"
    expect(table.get_by_role("row")).to_have_count(51)  # header + 50
    page.get_by_test_id("page-next").click()
    expect(table.get_by_role("row").nth(1)).to_contain_text(fleet_name(50))
    expect(page.get_by_test_id("page-label")).to_have_text("page 2")
    page.get_by_test_id("page-next").click()
    expect(table.get_by_role("row").nth(1)).to_contain_text(fleet_name(100))
    page.get_by_test_id("page-prev").click()
    page.get_by_test_id("page-prev").click()
    expect(table.get_by_role("row").nth(1)).to_contain_text(fleet_name(0))
    expect(page.get_by_test_id("page-prev")).to_be_disabled()

    # Searching the end of the fleet is one query, not a walk through it.
    started = time.monotonic()
    field(page, "device-search").fill("dev09999")
    expect(table.get_by_role("row")).to_have_count(11)  # dev099990 .. dev099999
    expect(table.get_by_role("row").nth(10)).to_contain_text(fleet_name(99_999))
    assert time.monotonic() - started < 5
    expect(page.get_by_test_id("page-next")).to_be_disabled()


# ---------------------------------------------------------------- the device page


def test_telemetry_reaches_the_chart_and_latest_values_without_a_reload(
    console: Page, console_server: ConsoleServer, lab_device: dict[str, Any]
) -> None:
    page, name = console, lab_device["name"]
    page.goto(device_url(console_server, LAB, name))
    expect(page.get_by_text("No telemetry yet.")).to_be_visible()
    expect(page.get_by_test_id("device-status")).to_have_text("offline")
    mark_page(page)

    device = onenet_login(console_server.mqtt_port, LAB, name, lab_device["key"])
    expect(page.get_by_test_id("device-status")).to_have_text("online")
    telemetry(device, {"temperature": 21.5, "mode": "auto"})
    latest = page.get_by_test_id("latest")
    expect(latest.get_by_role("row", name=re.compile("temperature"))).to_contain_text("21.5")
    expect(latest.get_by_role("row", name=re.compile("mode"))).to_contain_text("auto")
    expect(page.get_by_test_id("chart-temperature")).to_be_visible()
    expect(page.get_by_test_id("chart-mode")).to_have_count(0)  # not a number: no chart
    wait_until(lambda: len(series(page, "chart-temperature")) == 1, what="the first bucket")
    assert series(page, "chart-temperature")[0][1] == 21.5

    telemetry(device, {"temperature": 23.5})
    expect(latest.get_by_role("row", name=re.compile("temperature"))).to_contain_text("23.5")
    # The newest bucket is re-read from the database: the average of both points,
    # or the new point alone if it fell into the next bucket.
    wait_until(lambda: series(page, "chart-temperature")[-1][1] in (22.5, 23.5), what="the chart")
    assert_not_reloaded(page)

    # Another range is aggregated anew by the database.
    page.get_by_test_id("range").get_by_text("24 h").click()
    expect(page.get_by_text("Average per 5 min, last 24 h")).to_be_visible()
    wait_until(lambda: series(page, "chart-temperature")[-1][1] == 22.5, what="one 5 min bucket")


def test_desired_set_in_the_console_reaches_the_device_as_a_delta(
    console: Page, console_server: ConsoleServer, lab_device: dict[str, Any]
) -> None:
    page, name = console, lab_device["name"]
    device = onenet_login(console_server.mqtt_port, LAB, name, lab_device["key"])
    device.subscribe(f"$sys/{LAB}/{name}/image/#", qos=1)
    page.goto(device_url(console_server, LAB, name))
    expect(page.get_by_test_id("image-version")).to_have_text("This device has no image yet.")

    # A broken rule answers the API's sentence and err_code.
    with console_server.api() as api:
        bad = {"desired": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}}
        r = api.patch(f"/api/v1/products/{LAB}/devices/{name}/image", json=bad)
    assert r.status_code == 400, r.text
    field(page, "desired-edit").fill(json.dumps(bad["desired"]))
    page.get_by_test_id("apply-desired").click()
    problem = page.get_by_test_id("desired-problem")
    expect(problem).to_contain_text(r.json()["error"])
    expect(problem).to_contain_text(f"err_code {r.json()['err_code']}")

    mark_page(page)
    field(page, "desired-edit").fill('{"target": 22, "fan": "auto"}')
    page.get_by_test_id("apply-desired").click()
    expect(page.get_by_test_id("image-delta")).to_contain_text('"target": 22')
    wait_until(lambda: deltas(device, LAB, name), what="the delta at the device")
    assert deltas(device, LAB, name)[-1]["state"] == {"target": 22, "fan": "auto"}

    report(device, LAB, name, {"target": 22, "fan": "auto"})  # the device catches up
    expect(page.get_by_test_id("image-reported")).to_contain_text('"fan": "auto"')
    expect(page.get_by_test_id("image-delta")).to_have_text("{}")
    expect(page.get_by_test_id("image-version")).to_contain_text("Version 2")
    assert_not_reloaded(page)

    field(page, "tags-edit").fill('{"room": "lab 2"}')
    page.get_by_test_id("save-tags").click()
    expect(page.get_by_text("Tags saved")).to_be_visible()
    with console_server.api() as api:
        doc = api.get(f"/api/v1/products/{LAB}/devices/{name}").json()
    assert doc["tags"] == {"room": "lab 2"}


def test_commands_show_the_answer_or_the_timeout(
    console: Page, console_server: ConsoleServer, lab_device: dict[str, Any]
) -> None:
    page, name = console, lab_device["name"]
    device = onenet_login(console_server.mqtt_port, LAB, name, lab_device["key"])
    answer_onenet(device, LAB, name)
    answer_thingspanel(device, lab_device["device_number"], ignore="sleep")
    page.goto(device_url(console_server, LAB, name))
    expect(page.get_by_test_id("device-status")).to_have_text("online")

    field(page, "onenet-payload").fill("switch on")
    page.get_by_test_id("send-onenet").click()
    expect(page.get_by_test_id("answer-status")).to_have_text("answered")
    expect(page.get_by_test_id("answer")).to_contain_text("done:switch on")
    history = page.get_by_test_id("history")
    expect(history.get_by_role("row").nth(1)).to_contain_text("answered")
    expect(history.get_by_role("row").nth(1)).to_contain_text("switch on")

    page.get_by_test_id("tab-thingspanel").click()
    field(page, "tp-method").fill("reboot")
    field(page, "tp-params").fill('{"delay": 5}')
    page.get_by_test_id("send-thingspanel").click()
    expect(page.get_by_test_id("answer-status")).to_have_text("answered")
    expect(page.get_by_test_id("answer")).to_contain_text('"delay": 5')

    field(page, "tp-method").fill("sleep")  # the device never answers this one
    field(page, "tp-timeout").fill("1")
    page.get_by_test_id("send-thingspanel").click()
    expect(page.get_by_test_id("answer-status")).to_have_text("timeout")
    expect(page.get_by_test_id("answer")).to_contain_text("did not answer within 1 s")
    expect(history.get_by_role("row").nth(1)).to_contain_text("timeout")

    device.disconnect()
    expect(page.get_by_test_id("device-status")).to_have_text("offline")
    page.get_by_test_id("tab-onenet").click()
    page.get_by_test_id("send-onenet").click()
    expect(page.get_by_test_id("answer-status")).to_have_text("offline")


def test_a_token_minted_in_the_console_logs_the_device_in(
    console: Page, console_server: ConsoleServer, lab_device: dict[str, Any]
) -> None:
    page, name = console, lab_device["name"]
    page.goto(device_url(console_server, LAB, name))
    expect(page.get_by_test_id("mqtt-address")).to_have_text(
        f"127.0.0.1:{console_server.mqtt_port}"
    )
    page.get_by_test_id("mint-token").click()
    expect(field(page, "token")).to_have_value(re.compile(r"^version=2018-10-31&res="))
    token = field(page, "token").input_value()
    device = PahoClient(console_server.mqtt_port, name, username=LAB, password=token)
    assert device.connack_code == 0
    expect(page.get_by_test_id("device-status")).to_have_text("online")


# ---------------------------------------------------------------- OTA


def test_an_ota_task_shows_each_devices_progress_live(
    console: Page, console_server: ConsoleServer, lab_device: dict[str, Any]
) -> None:
    page, name, number = console, lab_device["name"], lab_device["device_number"]
    device = PahoClient(
        console_server.mqtt_port,
        f"ota-{name}",
        username=lab_device["username"],
        password=lab_device["password"],
    )
    device.subscribe(f"ota/devices/inform/{number}", qos=1)
    version = f"2.{secrets.randbelow(1000)}.0"
    page.goto(f"{console_server.base_url}/console/ota?product={LAB}")
    field(page, "fw-version").fill(version)
    field(page, "fw-module").fill("MCU")
    page.locator('[data-testid="fw-upload"] input[type=file]').set_input_files(
        files=[
            {"name": "fw.bin", "mimeType": "application/octet-stream", "buffer": b"\x7fELF" * 999}
        ]
    )
    expect(page.get_by_test_id("firmware")).to_contain_text(version)

    page.get_by_test_id("task-firmware").click()
    page.get_by_role("option", name=f"MCU {version}").click()
    page.get_by_test_id("task-all").click()  # off: name the device
    field(page, "task-devices").fill(name)
    page.get_by_test_id("task-create").click()
    expect(page).to_have_url(re.compile(r"/console/ota\?product=lab&task="))
    expect(page.get_by_test_id("task-status")).to_have_text("running")
    row = page.get_by_test_id("task-devices").get_by_role("row", name=re.compile(name))
    expect(row).to_contain_text("informed")
    wait_until(
        lambda: any(m.topic == f"ota/devices/inform/{number}" for m in device.messages),
        what="the inform at the device",
    )
    inform = json.loads(device.messages[-1].payload)["params"]
    assert inform["version"] == version and inform["size"] == 4 * 999

    mark_page(page)
    progress = {"step": "40", "desc": "downloading", "module": "MCU"}
    device.publish("ota/devices/progress", json.dumps(progress).encode(), qos=1)
    expect(row).to_contain_text("40 %")
    expect(row).to_contain_text("in progress")
    progress = {"step": "100", "desc": "done", "module": "MCU"}
    device.publish("ota/devices/progress", json.dumps(progress).encode(), qos=1)
    expect(row).to_contain_text("succeeded")
    expect(page.get_by_test_id("task-status")).to_have_text("completed")
    assert_not_reloaded(page)


# ---------------------------------------------------------------- roles

#: The test ids of the controls that change something, by page.
WRITES = {
    "products": ["new-product", "create-product"],
    "product": ["model-choose", "model-upload", "model-delete"],
    "devices": ["new-device", "create-device"],
    "device": [
        "mint-token",
        "send-onenet",
        "send-thingspanel",
        "create-image",
        "apply-desired",
        "save-tags",
        "gateway-bind",
        "gateway-unbind",
        "thing-set",
        "thing-invoke",
        "desired-set",
    ],
    "ota": ["fw-upload", "task-create", "task-cancel"],
}


def _key_page(browser: Any, server: ConsoleServer, role: str, products: list[str] | None) -> Any:
    """A page signed in with a new key of `role` (limited to `products`); the key's id
    is the page's `key_id`."""
    body: dict[str, Any] = {"name": f"console {role}", "role": role}
    if products is not None:
        body["products"] = products
    with server.api() as api:
        made = api.post("/api/v1/keys", json=body)
        assert made.status_code == 201, made.text
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(f"{server.base_url}/console/login")
    page.get_by_label("API key").fill(made.json()["key"])
    page.get_by_role("button", name="Sign in").click()
    page.get_by_test_id("page-title").wait_for()
    page.key_id = made.json()["id"]
    return page


def _no_writes(page: Page, *pages: str) -> None:
    for name in pages:
        for test_id in WRITES[name]:
            expect(page.get_by_test_id(test_id)).to_have_count(0)


def test_a_reader_sees_no_write_controls_and_only_its_products(
    browser: Any, console_server: ConsoleServer
) -> None:
    from tests.gateway.test_thing import MODEL

    pid = f"roles{secrets.token_hex(2)}"
    with console_server.api() as api:
        r = api.post("/api/v1/products", json={"id": pid, "name": "Roles", "thing_model": MODEL})
        assert r.status_code == 201, r.text
        assert api.post(f"/api/v1/products/{pid}/devices", json={"name": "r1"}).status_code == 201
    base = f"{console_server.base_url}/console"
    page = _key_page(browser, console_server, "reader", [pid])
    try:
        page.goto(f"{base}/products")
        expect(page.get_by_test_id("products")).to_contain_text(pid)
        expect(page.get_by_test_id("products")).not_to_contain_text(FLEET)
        _no_writes(page, "products")
        page.goto(f"{base}/products/{pid}")
        expect(page.get_by_test_id("model-summary")).to_be_visible()
        expect(page.get_by_test_id("model-download")).to_be_visible()
        _no_writes(page, "product")
        page.goto(f"{base}/devices?product={pid}")
        expect(page.get_by_test_id("devices")).to_contain_text("r1")
        _no_writes(page, "devices")
        page.goto(f"{base}/products/{pid}/devices/r1")
        expect(page.get_by_test_id("device-status")).to_be_visible()
        expect(page.get_by_test_id("thing-card")).to_be_visible()
        expect(page.get_by_test_id("desired-card")).to_be_visible()
        _no_writes(page, "device")
        page.goto(f"{base}/ota?product={pid}")
        expect(page.get_by_test_id("ota-product")).to_be_visible()
        _no_writes(page, "ota")
        # Another product is absent, as in the API.
        page.goto(f"{base}/products/{FLEET}")
        expect(page.get_by_text(f"There is no product '{FLEET}'.")).to_be_visible()
        page.goto(f"{base}/products/{FLEET}/devices/{fleet_name(1)}")
        expect(page.get_by_text("There is no device")).to_be_visible()
        # Revoking the key signs its session out at the next page.
        with console_server.api() as api:
            assert api.delete(f"/api/v1/keys/{page.key_id}").status_code == 204
        page.goto(f"{base}/products")
        expect(page).to_have_url(re.compile(r"/console/login\?to=%2Fproducts"))
    finally:
        page.context.close()
    operator = _key_page(browser, console_server, "operator", None)
    try:  # an operator acts on devices, but leaves the thing model to admins
        operator.goto(f"{base}/products/{pid}/devices/r1")
        expect(operator.get_by_test_id("send-onenet")).to_have_count(1)
        expect(operator.get_by_test_id("mint-token")).to_be_visible()
        operator.goto(f"{base}/products/{pid}")
        expect(operator.get_by_test_id("model-summary")).to_be_visible()
        _no_writes(operator, "product", "products")
    finally:
        operator.context.close()
