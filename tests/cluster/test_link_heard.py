"""`ClusterLink.heard`: this node's gateway answers for a device it holds; a device
held elsewhere may be heard there."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from thingshub.bus.calls import ClusterLink
from thingshub.core.messages import DeviceRef

REF = DeviceRef("p1", "d1", "n1")


class Local:
    def __init__(self, heard: bool, online: bool) -> None:
        self._heard, self._online = heard, online

    def heard(self, ref: DeviceRef) -> bool:
        return self._heard

    def is_online(self, product_id: str, name: str) -> bool:
        return self._online


@pytest.mark.parametrize(
    ("heard", "online", "expected"),
    [(True, True, True), (False, True, False), (False, False, True), (True, False, True)],
)
def test_heard_here_or_maybe_elsewhere(heard: bool, online: bool, expected: bool) -> None:
    calls: Any = SimpleNamespace(holders=None)
    link = ClusterLink(Local(heard, online), calls, unknown_online=False)  # type: ignore[arg-type]
    assert link.heard(REF) is expected
