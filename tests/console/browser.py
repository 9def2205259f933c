"""What the browser tests of the console share: where pages are, and how to read them."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page

from tests.console.conftest import ConsoleServer


def device_url(server: ConsoleServer, product_id: str, name: str) -> str:
    return f"{server.base_url}/console/products/{product_id}/devices/{name}"


def field(page: Page, test_id: str) -> Any:
    """The <input>/<textarea> inside a NiceGUI input marked with `test_id`."""
    marked = f'[data-testid="{test_id}"]'
    return page.locator(f"input{marked}, textarea{marked}, {marked} input, {marked} textarea").first


def series(page: Page, test_id: str) -> list[list[Any]]:
    """The data of the first series of an echart, as the browser holds it."""
    data: list[list[Any]] = page.get_by_test_id(test_id).evaluate(
        "el => getElement(el).chart.getOption().series[0].data"
    )
    return data


def mark_page(page: Page) -> None:
    """A marker that a reload would wipe out (to show that updates came live)."""
    page.evaluate("window.__not_reloaded = true")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__not_reloaded === true"), "the page was reloaded"
