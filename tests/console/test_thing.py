"""The thing model in the console, as an operator uses it: a real Chromium against
`thingshub serve`, and paho-mqtt devices answering on `$sys/{pid}/{name}/thing/...`
as the OneNET SDK does.

What the issue asks: uploading a model (a fault named by its JSON pointer) and
seeing it; setting a property from the device page and the device receiving it;
invoking a service through its form and seeing the answer or why there is none
(offline 308, not listening 1022, timeout 306); desired values set and deleted,
live; typed events with a colour per type. Updates come without a reload.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.console.browser import assert_not_reloaded, device_url, field, mark_page
from tests.console.conftest import ConsoleServer
from tests.console.sim import answer_thing, onenet_login, thing_post, thing_topic
from tests.mqtt.clients import PahoClient, wait_until

expect.set_options(timeout=15_000)

MODEL: dict[str, Any] = {
    "version": "1.0",
    "profile": {"productId": "x", "industryId": "1"},
    "properties": [
        {
            "identifier": "temp",
            "name": "Temperature",
            "accessMode": "rw",
            "dataType": {
                "type": "float",
                "specs": {"min": "-40", "max": "125", "step": "0.1", "unit": "°C"},
            },
        },
        {
            "identifier": "mode",
            "name": "Mode",
            "accessMode": "rw",
            "dataType": {"type": "enum", "specs": {"0": "off", "1": "eco", "2": "boost"}},
        },
        {
            "identifier": "power",
            "name": "Power",
            "accessMode": "rw",
            "dataType": {"type": "bool", "specs": {"0": "off", "1": "on"}},
        },
        {
            "identifier": "label",
            "name": "Label",
            "accessMode": "rw",
            "dataType": {"type": "string", "specs": {"length": "16"}},
        },
        {
            "identifier": "count",
            "name": "Count",
            "accessMode": "r",
            "dataType": {"type": "int32", "specs": {"min": "0", "max": "100"}},
        },
    ],
    "events": [
        {"identifier": "boot", "name": "Boot", "type": "info", "outputData": []},
        {
            "identifier": "overheat",
            "name": "Overheat",
            "eventType": "alert",
            "outputData": [{"identifier": "level", "name": "Level", "dataType": {"type": "int32"}}],
        },
        {"identifier": "fault", "name": "Fault", "eventType": "error", "outputData": []},
    ],
    "services": [
        {
            "identifier": "add",
            "name": "Add",
            "callType": "sync",
            "inputData": [
                {"identifier": "a", "name": "A", "dataType": {"type": "int32"}},
                {"identifier": "b", "name": "B", "dataType": {"type": "int32"}},
            ],
            "outputData": [{"identifier": "c", "name": "C", "dataType": {"type": "int64"}}],
        },
        {"identifier": "reboot", "name": "Reboot", "callType": "async"},
    ],
}


@pytest.fixture
def product(console_server: ConsoleServer) -> str:
    """A new product (without a model)."""
    pid = f"thing{secrets.token_hex(3)}"
    with console_server.api() as api:
        assert api.post("/api/v1/products", json={"id": pid, "name": "Heater"}).status_code == 201
    return pid


@pytest.fixture
def heater(console_server: ConsoleServer, product: str) -> dict[str, Any]:
    """A device of a product with MODEL, registered through the API (with its key)."""
    with console_server.api() as api:
        assert api.put(f"/api/v1/products/{product}/thing-model", json=MODEL).status_code == 200
        r = api.post(f"/api/v1/products/{product}/devices", json={"name": "heater-1"})
        assert r.status_code == 201, r.text
        created: dict[str, Any] = r.json()
    return created


def login(server: ConsoleServer, device: dict[str, Any]) -> PahoClient:
    return onenet_login(server.mqtt_port, device["product_id"], device["name"], device["key"])


def upload(page: Page, name: str, data: bytes) -> None:
    """Choose a file as an operator does: the button opens the browser's file picker."""
    with page.expect_file_chooser() as chooser:
        page.get_by_test_id("model-choose").click()
    chooser.value.set_files(files=[{"name": name, "mimeType": "application/json", "buffer": data}])


def row(page: Page, table: str, text: str) -> Any:
    return page.get_by_test_id(table).get_by_role("row", name=re.compile(rf"\b{text}\b"))


def choose(page: Page, select: str, option: str) -> None:
    page.get_by_test_id(select).click()
    page.get_by_role("option", name=option).click()


# ---------------------------------------------------------------- the product page


def test_a_model_is_uploaded_refused_at_its_fault_and_deleted(
    console: Page, console_server: ConsoleServer, product: str, tmp_path: Path
) -> None:
    page = console
    page.goto(f"{console_server.base_url}/console/products")
    page.get_by_test_id("products").get_by_role("link", name="Heater").first.click()
    expect(page).to_have_url(re.compile(rf"/console/products/{product}$"))
    expect(page.get_by_test_id("model-summary")).to_have_text("No thing model yet.")

    broken = json.loads(json.dumps(MODEL))
    broken["properties"][4]["dataType"]["specs"]["min"] = "1000"
    upload(page, "broken.json", json.dumps(broken).encode())
    expect(page.get_by_test_id("model-problem-path")).to_have_text("/properties/4/dataType/specs")
    expect(page.get_by_test_id("model-problem")).to_have_text("min is greater than max")
    upload(page, "garbled.json", b'{"properties": [}')
    expect(page.get_by_test_id("model-problem")).to_contain_text("the file is not JSON")
    expect(page.get_by_test_id("model-problem")).to_contain_text("line 1, column 17")
    expect(page.get_by_test_id("model-problem-path")).to_be_hidden()
    with console_server.api() as api:
        assert api.get(f"/api/v1/products/{product}/thing-model").status_code == 404

    mark_page(page)
    upload(page, "heater.json", b"\xef\xbb\xbf" + json.dumps(MODEL).encode())  # with a BOM
    expect(page.get_by_test_id("model-summary")).to_contain_text(
        "5 properties, 3 events, 2 services · revision 1"
    )
    expect(page.get_by_test_id("model-problem")).to_be_hidden()
    temp = row(page, "model-properties", "temp")
    for text in ("Temperature", "float", "-40 … 125 °C", "rw"):
        expect(temp).to_contain_text(text)
    expect(row(page, "model-properties", "mode")).to_contain_text("0: off, 1: eco, 2: boost")
    expect(row(page, "model-properties", "label")).to_contain_text("≤ 16 chars")
    expect(row(page, "model-properties", "count")).to_contain_text("0 … 100")
    overheat = row(page, "model-events", "overheat")
    expect(overheat).to_contain_text("alert")
    expect(overheat).to_contain_text("level (Level): int32")
    expect(overheat.locator(".q-badge")).to_have_class(re.compile(r"\bbg-warning\b"))
    expect(row(page, "model-events", "boot").locator(".q-badge")).to_have_class(
        re.compile(r"\bbg-info\b")
    )
    expect(row(page, "model-events", "fault").locator(".q-badge")).to_have_class(
        re.compile(r"\bbg-negative\b")
    )
    add = row(page, "model-services", "add")
    for text in ("sync", "a (A): int32", "b (B): int32", "c (C): int64"):
        expect(add).to_contain_text(text)
    expect(row(page, "model-services", "reboot")).to_contain_text("async")
    with console_server.api() as api:
        stored = api.get(f"/api/v1/products/{product}/thing-model").json()
    assert stored["revision"] == 1 and stored["services"][1]["callType"] == "a"

    with page.expect_download() as download:
        page.get_by_test_id("model-download").click()
    saved = tmp_path / "model.json"
    download.value.save_as(saved)
    assert json.loads(saved.read_text())["events"][0]["eventType"] == "info"  # canonical
    upload(page, "again.json", saved.read_bytes())
    expect(page.get_by_test_id("model-summary")).to_contain_text("revision 2")

    page.get_by_test_id("model-delete").click()
    page.get_by_test_id("model-delete-confirm").click()
    expect(page.get_by_test_id("model-summary")).to_have_text("No thing model yet.")
    assert_not_reloaded(page)
    with console_server.api() as api:
        assert api.get(f"/api/v1/products/{product}/thing-model").status_code == 404


# ---------------------------------------------------------------- the device page


def test_properties_show_their_latest_values_and_are_set_on_the_device(
    console: Page, console_server: ConsoleServer, heater: dict[str, Any]
) -> None:
    page, pid, name = console, heater["product_id"], heater["name"]
    device = login(console_server, heater)
    seen = answer_thing(device, pid, name)
    page.goto(device_url(console_server, pid, name))
    expect(row(page, "thing-properties", "temp")).to_contain_text("never")
    mark_page(page)

    thing_post(device, pid, name, "property", {"temp": 21.5, "mode": 2, "count": 7})
    expect(row(page, "thing-properties", "temp")).to_contain_text("21.5 °C")
    expect(row(page, "thing-properties", "mode")).to_contain_text("2 (boost)")
    expect(row(page, "thing-properties", "count")).to_contain_text("7")

    # A number, with the model's bounds.
    field(page, "thing-set-value").fill("22.5")
    page.get_by_test_id("thing-set").click()
    expect(page.get_by_test_id("thing-set-status")).to_have_text("code 200")
    wait_until(lambda: seen and seen[-1]["params"] == {"temp": 22.5}, what="the set at the device")
    assert seen[-1]["topic"] == thing_topic(pid, name, "property/set")
    assert page.get_by_test_id("thing-set-answer").inner_text().startswith("msg: ok")
    assert field(page, "thing-set-value").get_attribute("max") == "125"

    # An enum is a select of its labels; a bool a switch; a string a text field.
    choose(page, "thing-set-property", "mode (Mode)")
    choose(page, "thing-set-value", "1: eco")
    page.get_by_test_id("thing-set").click()
    wait_until(lambda: seen[-1]["params"] == {"mode": 1}, what="the enum at the device")
    choose(page, "thing-set-property", "power (Power)")
    page.get_by_test_id("thing-set-value").click()
    page.get_by_test_id("thing-set").click()
    wait_until(lambda: seen[-1]["params"] == {"power": True}, what="the bool at the device")
    choose(page, "thing-set-property", "label (Label)")
    field(page, "thing-set-value").fill("hall")
    page.get_by_test_id("thing-set").click()
    wait_until(lambda: seen[-1]["params"] == {"label": "hall"}, what="the string at the device")
    expect(page.get_by_test_id("thing-set-status")).to_have_text("code 200")

    # Read-only properties are not offered.
    page.get_by_test_id("thing-set-property").click()
    expect(page.get_by_role("option", name="count (Count)")).to_have_count(0)
    page.keyboard.press("Escape")
    assert_not_reloaded(page)

    device.disconnect()
    expect(page.get_by_test_id("device-status")).to_have_text("offline")
    page.get_by_test_id("thing-set").click()
    expect(page.get_by_test_id("thing-set-status")).to_have_text("offline")
    expect(page.get_by_test_id("thing-set-answer")).to_contain_text("err_code 308")


def test_a_service_is_invoked_through_its_form(
    console: Page, console_server: ConsoleServer, heater: dict[str, Any]
) -> None:
    page, pid, name = console, heater["product_id"], heater["name"]
    device = login(console_server, heater)
    page.goto(device_url(console_server, pid, name))
    expect(page.get_by_test_id("device-status")).to_have_text("online")

    # Online, but not listening on the service topic: 1022.
    field(page, "thing-input-a").fill("2")
    field(page, "thing-input-b").fill("3")
    page.get_by_test_id("thing-invoke").click()
    expect(page.get_by_test_id("thing-invoke-status")).to_have_text("not listening")
    expect(page.get_by_test_id("thing-invoke-answer")).to_contain_text("err_code 1022")

    seen = answer_thing(device, pid, name, {"add": lambda p: {"c": p["a"] + p["b"]}})
    page.get_by_test_id("thing-invoke").click()
    expect(page.get_by_test_id("thing-invoke-status")).to_have_text("code 200")
    expect(page.get_by_test_id("thing-invoke-answer")).to_contain_text('"c": 5')
    assert seen[-1]["topic"] == thing_topic(pid, name, "service/add/invoke")
    assert seen[-1]["params"] == {"a": 2, "b": 3}  # integers, as the model types them

    # An empty input is refused before anything is sent.
    field(page, "thing-input-b").fill("")
    page.get_by_test_id("thing-invoke").click()
    expect(page.get_by_test_id("thing-invoke-answer")).to_contain_text("b: a value is needed")

    # An asynchronous service returns once published; its answer completes its record.
    choose(page, "thing-service", "reboot (Reboot, async)")
    expect(page.get_by_text("No input params.")).to_be_visible()
    page.get_by_test_id("thing-invoke").click()
    expect(page.get_by_test_id("thing-invoke-status")).to_have_text("sent")
    wait_until(lambda: seen[-1]["topic"].endswith("service/reboot/invoke"), what="the reboot")
    expect(page.get_by_test_id("history").get_by_role("row").nth(1)).to_contain_text("answered")


def test_a_silent_device_times_out(
    console: Page, console_server: ConsoleServer, heater: dict[str, Any]
) -> None:
    page, pid, name = console, heater["product_id"], heater["name"]
    device = login(console_server, heater)
    answer_thing(device, pid, name, silent=("add",))
    page.goto(device_url(console_server, pid, name))
    field(page, "thing-input-a").fill("1")
    field(page, "thing-input-b").fill("1")
    field(page, "thing-invoke-timeout").fill("1")
    page.get_by_test_id("thing-invoke").click()
    expect(page.get_by_test_id("thing-invoke-status")).to_have_text("timeout")
    expect(page.get_by_test_id("thing-invoke-answer")).to_contain_text("err_code 306")


def test_desired_values_are_set_deleted_and_follow_other_clients_live(
    console: Page, console_server: ConsoleServer, heater: dict[str, Any]
) -> None:
    page, pid, name = console, heater["product_id"], heater["name"]
    device = login(console_server, heater)
    seen = answer_thing(device, pid, name)
    page.goto(device_url(console_server, pid, name))
    expect(page.get_by_text("No desired values.")).to_be_visible()
    mark_page(page)

    field(page, "desired-set-value").fill("23")
    page.get_by_test_id("desired-set").click()
    temp = row(page, "desired-values", "temp")
    expect(temp).to_contain_text("23 °C")
    expect(temp.get_by_role("cell").nth(3)).to_have_text("1")
    wait_until(lambda: seen and seen[-1]["params"] == {"temp": 23}, what="the push")

    with console_server.api() as api:  # another client: the page follows
        r = api.patch(
            f"/api/v1/products/{pid}/devices/{name}/desired", json={"temp": 24, "mode": 1}
        )
        assert r.status_code == 200, r.text
    expect(temp).to_contain_text("24 °C")
    expect(temp.get_by_role("cell").nth(3)).to_have_text("2")
    expect(row(page, "desired-values", "mode")).to_contain_text("1 (eco)")

    page.get_by_test_id("desired-delete-temp").click()
    expect(row(page, "desired-values", "temp")).to_have_count(0)
    # The device deletes the other one (OneNET's property/desired/delete).
    body = {"id": "9", "version": "1.0", "params": {"mode": {"version": 1}}}
    topic = thing_topic(pid, name, "property/desired/delete")
    device.publish(topic, json.dumps(body).encode(), qos=1)
    expect(page.get_by_text("No desired values.")).to_be_visible()
    assert_not_reloaded(page)
    with console_server.api() as api:
        assert api.get(f"/api/v1/products/{pid}/devices/{name}/desired").json() == {}


def test_events_appear_live_with_their_type(
    console: Page, console_server: ConsoleServer, heater: dict[str, Any]
) -> None:
    page, pid, name = console, heater["product_id"], heater["name"]
    device = login(console_server, heater)
    page.goto(device_url(console_server, pid, name))
    expect(page.get_by_text("No events in the last day.")).to_be_visible()
    mark_page(page)
    thing_post(device, pid, name, "event", {"overheat": {"level": 3}})
    events = page.get_by_test_id("events")
    alert = events.get_by_role("row", name=re.compile("overheat"))
    expect(alert).to_contain_text('{"level": 3}')
    expect(alert.get_by_test_id("event-type-alert")).to_have_class(re.compile(r"\bbg-warning\b"))
    thing_post(device, pid, name, "event", {"fault": {}})
    fault = events.get_by_role("row", name=re.compile("fault"))
    expect(fault.get_by_test_id("event-type-error")).to_have_class(re.compile(r"\bbg-negative\b"))
    thing_post(device, pid, name, "event", {"boot": {}})
    boot = events.get_by_role("row", name=re.compile("boot"))
    expect(boot.get_by_test_id("event-type-info")).to_have_class(re.compile(r"\bbg-info\b"))
    assert_not_reloaded(page)
