"""The thing model's storage contract over memory, SQLite and PostgreSQL: models by
product (revisions, cascade), desired values by device (versions, deletion by
version, cascade), event types and call targets kept."""

from __future__ import annotations

import pytest

from tests.storage.support import Backend, device, product
from thingshub.core.errors import NotFound
from thingshub.core.model import CommandRecord, DesiredValue, DeviceEvent
from thingshub.core.ports import Storage

MODEL = {"properties": [{"identifier": "t", "name": "T", "dataType": {"type": "int32"}}]}


def test_a_model_per_product_with_its_revision(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        assert await s.thing_models.get("p1") is None
        first = await s.thing_models.put("p1", MODEL, 10)
        assert (first.document, first.revision, first.updated_at) == (MODEL, 1, 10)
        second = await s.thing_models.put("p1", {"properties": []}, 20)
        assert second.revision == 2
        stored = await s.thing_models.get("p1")
        assert stored is not None and stored.document == {"properties": []}
        assert stored.revision == 2
        with pytest.raises(NotFound):
            await s.thing_models.put("nope", MODEL, 30)
        assert await s.thing_models.delete("p1") is True
        assert await s.thing_models.delete("p1") is False
        assert await s.thing_models.get("p1") is None
        again = await s.thing_models.put("p1", MODEL, 40)
        assert again.revision == 1  # a deleted model starts over
        await s.products.delete("p1")
        assert await s.thing_models.get("p1") is None  # it goes with its product

    backend.run(scenario)


def test_desired_values_are_versioned_per_identifier(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1"))
        changed = await s.desired.change("p1", "d1", {"t": 21, "mode": "auto"}, 100)
        assert changed == {
            "t": DesiredValue(21, 1, 100),
            "mode": DesiredValue("auto", 1, 100),
        }
        changed = await s.desired.change("p1", "d1", {"t": {"deep": [1, 2]}, "mode": None}, 200)
        assert changed == {"t": DesiredValue({"deep": [1, 2]}, 2, 200), "mode": None}
        assert await s.desired.get("p1", "d1") == {"t": DesiredValue({"deep": [1, 2]}, 2, 200)}
        # Deleted with the wrong version: kept; with the right one, or none: gone.
        assert await s.desired.delete_versions("p1", "d1", {"t": 1}) == []
        assert await s.desired.delete_versions("p1", "d1", {"t": 2, "x": None}) == ["t"]
        assert await s.desired.get("p1", "d1") == {}
        restarted = await s.desired.change("p1", "d1", {"t": 5}, 300)
        assert restarted["t"] == DesiredValue(5, 1, 300)  # back to version 1
        with pytest.raises(NotFound):
            await s.desired.change("p1", "nope", {"t": 1}, 400)
        await s.devices.delete("p1", "d1")
        assert await s.desired.get("p1", "d1") == {}  # gone with the device

    backend.run(scenario)


def test_event_types_and_call_targets_are_kept(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1"))
        await s.events.append(
            "p1",
            "d1",
            [
                DeviceEvent(1_700_000_000_000, "alarm", {"level": 3}, "alert"),
                DeviceEvent(1_700_000_000_001, "boot", {}),
            ],
        )
        listed = await s.events.list("p1", "d1", 0, 2_000_000_000_000, 10)
        assert [(e.method, e.type) for _, _, e in listed] == [("alarm", "alert"), ("boot", None)]
        record = CommandRecord(
            "c1", "p1", "d1", "thing", "service", b"{}", "sent", 5, sent_at=5, target="add"
        )
        await s.commands.add(record)
        stored = await s.commands.get("c1")
        assert stored is not None and stored.target == "add"
        assert [r.target for r in await s.commands.list("p1", "d1", 10)] == ["add"]

    backend.run(scenario)


def test_access_tokens_find_their_device_and_never_clash(backend: Backend) -> None:
    from dataclasses import replace

    from thingshub.core.errors import AlreadyExists

    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        first = replace(device("p1", "d1"), access_token="t-1")
        await s.devices.add(first)
        await s.devices.add(device("p1", "d2"))  # none: any number of devices have none
        await s.devices.add(device("p1", "d3"))
        found = await s.devices.by_access_token("t-1")
        assert found is not None and found.name == "d1" and found.access_token == "t-1"
        assert await s.devices.by_access_token("t-2") is None
        with pytest.raises(AlreadyExists, match="access_token"):
            await s.devices.add(replace(device("p1", "d4"), access_token="t-1"))
        await s.devices.delete("p1", "d1")
        assert await s.devices.by_access_token("t-1") is None
        await s.devices.add(replace(device("p1", "d5"), access_token="t-1"))  # free again

    backend.run(scenario)
