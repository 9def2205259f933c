"""Gateways and sub-devices in the console: a real Chromium against `thingshub serve`.

A gateway's page shows its tree (three levels below it, across two products)
with each device's address and presence; a paho-mqtt ThingsPanel gateway
reporting for its sub-devices brings them online on the page without a
reload, and its disconnection takes them offline; a sub-device's page links
to its gateway; binding and unbinding from the console show on the
gateway's page live, and the tree's rules (a cycle, a sixth level) are
refused with the API's sentence; a large gateway's children come a page at
a time.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.console.browser import assert_not_reloaded, device_url, field, mark_page
from tests.console.conftest import ConsoleServer
from tests.mqtt.clients import PahoClient

expect.set_options(timeout=15_000)


class Plant:
    """A gateway `gw` of product `pid` and its tree: a ("a"), sg1 ("sg1") -> sg2 ("sg2")
    -> leaf ("leaf:1", of product `other`), registered through the API."""

    def __init__(self, server: ConsoleServer) -> None:
        self.server = server
        suffix = secrets.token_hex(3)
        self.pid, self.other = f"plant{suffix}", f"meter{suffix}"
        self.made: dict[str, dict[str, Any]] = {}
        with server.api() as api:
            for pid in (self.pid, self.other):
                assert api.post("/api/v1/products", json={"id": pid, "name": pid}).is_success
            self.add(api, "gw")
            self.add(api, "a", "gw", "a")
            self.add(api, "sg1", "gw", "sg1")
            self.add(api, "sg2", "sg1", "sg2")
            self.add(api, "leaf", "sg2", "leaf:1", pid=self.other)

    def add(
        self,
        api: Any,
        name: str,
        gateway: str | None = None,
        address: str | None = None,
        pid: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name}
        if gateway is not None:
            body |= {"gateway": {"product_id": self.pid, "name": gateway}, "sub_address": address}
        r = api.post(f"/api/v1/products/{pid or self.pid}/devices", json=body)
        assert r.status_code == 201, r.text
        created: dict[str, Any] = r.json()
        self.made[name] = created
        return created

    def url(self, name: str) -> str:
        pid = self.other if name == "leaf" else self.pid
        return device_url(self.server, pid, name)


@pytest.fixture
def plant(console_server: ConsoleServer) -> Plant:
    return Plant(console_server)


def tree_row(page: Page, name: str) -> Locator:
    return page.get_by_test_id("sub-devices").get_by_role("row", name=re.compile(rf"\b{name}\b"))


def test_a_gateway_shows_its_tree_and_its_presence_live(
    console: Page, console_server: ConsoleServer, plant: Plant
) -> None:
    page = console
    page.goto(plant.url("gw"))
    rows = page.get_by_test_id("sub-devices").get_by_role("row")
    # A small tree opens whole, depth first: header + 4 devices.
    expect(rows).to_have_count(5)
    shown = [
        (
            rows.nth(i).locator("a").inner_text(),
            rows.nth(i).locator("[data-depth]").get_attribute("data-depth"),
        )
        for i in range(1, 5)
    ]
    assert shown == [("a", "1"), ("sg1", "1"), ("sg2", "2"), ("leaf", "3")]
    expect(tree_row(page, "leaf")).to_contain_text(plant.other)
    expect(tree_row(page, "leaf")).to_contain_text("leaf:1")
    for name in ("a", "sg1", "sg2", "leaf"):
        expect(tree_row(page, name)).to_contain_text("offline")
    expect(tree_row(page, "sg1")).to_contain_text("gateway")
    expect(tree_row(page, "a")).not_to_contain_text("gateway")

    mark_page(page)
    gw = plant.made["gw"]
    device = PahoClient(
        console_server.mqtt_port, gw["name"], username=gw["username"], password=gw["password"]
    )
    try:
        report = {
            "sub_device_data": {"a": {"t": 1}},
            "sub_gateway_data": {
                "sg1": {"sub_gateway_data": {"sg2": {"sub_device_data": {"leaf:1": {"t": 5}}}}}
            },
        }
        assert device.publish("gateway/telemetry", json.dumps(report).encode(), qos=1) == 0
        expect(tree_row(page, "a")).to_contain_text("online")
        expect(tree_row(page, "leaf")).to_contain_text("online")
        expect(page.get_by_test_id("device-status")).to_contain_text("online")
        # Heard of only as the way to the leaf: not online themselves.
        expect(tree_row(page, "sg1")).to_contain_text("offline")
        expect(tree_row(page, "sg2")).to_contain_text("offline")
    finally:
        device.disconnect()
    expect(tree_row(page, "a")).to_contain_text("offline")
    expect(tree_row(page, "leaf")).to_contain_text("offline")
    assert_not_reloaded(page)

    # Folding a gateway hides its subtree; opening it loads it again.
    page.get_by_test_id(f"tree-toggle-{plant.pid}/sg1").click()
    expect(rows).to_have_count(3)
    page.get_by_test_id(f"tree-toggle-{plant.pid}/sg1").click()
    expect(rows).to_have_count(4)  # sg2 again, folded
    expect(tree_row(page, "sg2")).to_be_visible()


def test_a_sub_device_links_to_its_gateway(console: Page, plant: Plant) -> None:
    page = console
    page.goto(plant.url("leaf"))
    link = page.get_by_test_id("gateway-link")
    expect(link).to_have_text(f"sg2 ({plant.pid})")
    expect(page.get_by_test_id("gateway-address")).to_have_text("at address leaf:1")
    expect(page.get_by_test_id("sub-devices-card")).to_be_hidden()  # not a gateway
    link.click()
    expect(page).to_have_url(plant.url("sg2"))
    expect(page.get_by_test_id("page-title")).to_have_text("sg2")
    expect(tree_row(page, "leaf")).to_be_visible()
    expect(page.get_by_test_id("gateway-link")).to_have_text("sg1")  # same product

    # The device list marks sub-devices with their gateway.
    page.goto(f"{plant.server.base_url}/console/devices?product={plant.pid}")
    devices = page.get_by_test_id("devices")
    expect(devices.get_by_role("row", name=re.compile(r"\bsg2\b"))).to_contain_text("via sg1")
    expect(devices.get_by_role("row", name=re.compile(r"^gw\b"))).not_to_contain_text("via")


def test_binding_and_unbinding_from_the_console(
    console: Page, console_server: ConsoleServer, plant: Plant
) -> None:
    with console_server.api() as api:
        plant.add(api, "lone")
        plant.add(api, "top")
        plant.add(api, "below", "top", "b")
    gateway_page = console
    gateway_page.goto(plant.url("gw"))
    expect(gateway_page.get_by_test_id("sub-devices").get_by_role("row")).to_have_count(5)
    mark_page(gateway_page)

    page = console.context.new_page()
    # A cycle: the gateway under its own sub-device.
    page.goto(plant.url("gw"))
    expect(page.get_by_test_id("gateway-link")).to_be_hidden()
    field(page, "gateway-name").fill("sg2")
    page.get_by_test_id("gateway-bind").click()
    expect(page.get_by_test_id("gateway-problem")).to_contain_text("cycle")
    # A sixth level: `top` and its child below the leaf (level 4).
    page.goto(plant.url("top"))
    field(page, "gateway-product").fill(plant.other)
    field(page, "gateway-name").fill("leaf")
    page.get_by_test_id("gateway-bind").click()
    expect(page.get_by_test_id("gateway-problem")).to_contain_text("at most 5 levels")
    expect(page.get_by_test_id("gateway-link")).to_be_hidden()

    page.goto(plant.url("lone"))
    field(page, "gateway-name").fill("gw")
    field(page, "gateway-sub-address").fill("a")  # a sibling has it
    page.get_by_test_id("gateway-bind").click()
    expect(page.get_by_test_id("gateway-problem")).to_contain_text("sub_address")
    field(page, "gateway-sub-address").fill("lone:7")
    page.get_by_test_id("gateway-bind").click()
    expect(page.get_by_test_id("gateway-link")).to_have_text("gw")
    expect(page.get_by_test_id("gateway-address")).to_have_text("at address lone:7")
    expect(page.get_by_test_id("gateway-problem")).to_have_text("")
    # The gateway's page, open meanwhile, shows its new child live.
    expect(tree_row(gateway_page, "lone")).to_contain_text("lone:7")

    page.get_by_test_id("gateway-unbind").click()
    expect(page.get_by_test_id("gateway-link")).to_be_hidden()
    expect(page.get_by_test_id("gateway-card")).to_contain_text("no gateway")
    expect(tree_row(gateway_page, "lone")).to_have_count(0)
    expect(gateway_page.get_by_test_id("sub-devices").get_by_role("row")).to_have_count(5)
    assert_not_reloaded(gateway_page)
    with console_server.api() as api:
        body = api.get(f"/api/v1/products/{plant.pid}/devices/lone").json()
    assert body["gateway"] is None


def test_a_large_gateway_comes_a_page_at_a_time(
    console: Page, console_server: ConsoleServer, plant: Plant
) -> None:
    with console_server.api() as api:
        plant.add(api, "hub")
        for i in range(60):
            plant.add(api, f"s{i:03d}", "hub", f"{i}")
    page = console
    page.goto(plant.url("hub"))
    rows = page.get_by_test_id("sub-devices").get_by_role("row")
    expect(rows).to_have_count(1 + 50 + 1)  # header, a page, "more"
    expect(rows.nth(50)).to_contain_text("s049")
    page.get_by_test_id(f"tree-more-{plant.pid}/hub").click()
    expect(rows).to_have_count(1 + 60)
    expect(rows.nth(60)).to_contain_text("s059")
    expect(page.get_by_test_id(f"tree-more-{plant.pid}/hub")).to_have_count(0)
