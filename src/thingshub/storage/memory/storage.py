"""Storage in dicts: the reference implementation and the services' test double.

Rules:
- Same semantics as the SQL backends, checked by the same contract suite
  (tests/storage): clashes are reported by the priority of common.py; a
  device needs its product, and a product with devices cannot be deleted;
  deleting a device deletes its presence, its image, its command records,
  its telemetry (history and latest values), attributes and events.
- What devices report (telemetry, attributes, events) lives in
  memory/series.py, one `Series` per device, gone with the device.
- Image documents are kept as the JSON text the SQL backends store, so what
  comes back is a fresh object and JSON-ability is checked alike.
- Nothing here awaits between reading and writing, so each method is atomic
  on the event loop, as a transaction is in SQL.
- Values go in and out as copies (tags included): a caller can never change
  what is stored by mutating what it passed or got back.
- Data lives as long as the object: `close()` and `open()` keep it, which is
  what a "restart" means for a store in memory. Works without `open()`.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from thingshub.core.model import (
    CommandRecord,
    Device,
    Presence,
    PresenceUpdate,
    Product,
    StoredImage,
)
from thingshub.core.ports import (
    ApiKeyRepo,
    AttributeRepo,
    CommandRepo,
    DesiredRepo,
    DeviceRepo,
    EventRepo,
    FirmwareRepo,
    ImageRepo,
    Locks,
    NodeRepo,
    OtaRepo,
    ProductRepo,
    SettingsRepo,
    TelemetryRepo,
    ThingModelRepo,
)
from thingshub.storage import common
from thingshub.storage.locks import ProcessLocks
from thingshub.storage.memory.keys import MemoryApiKeys
from thingshub.storage.memory.nodes import MemoryNodes
from thingshub.storage.memory.ota import MemoryFirmware, MemoryOta, OtaData
from thingshub.storage.memory.series import (
    MemoryAttributes,
    MemoryEvents,
    MemoryTelemetry,
    Series,
    SeriesStore,
)
from thingshub.storage.memory.things import Desired, MemoryDesired, MemoryThingModels, Models

Key = tuple[str, str]


@dataclass
class _Data:
    products: dict[str, Product] = field(default_factory=dict)
    devices: dict[Key, Device] = field(default_factory=dict)
    by_number: dict[str, Key] = field(default_factory=dict)
    by_username: dict[str, Key] = field(default_factory=dict)
    by_token: dict[str, Key] = field(default_factory=dict)
    presence: dict[Key, Presence] = field(default_factory=dict)
    #: The node holding each device's connection (storage/sql: device_presence.node).
    holders: dict[Key, str | None] = field(default_factory=dict)
    images: dict[Key, tuple[str, int]] = field(default_factory=dict)  # (JSON text, version)
    commands: dict[str, CommandRecord] = field(default_factory=dict)
    commands_of: dict[Key, set[str]] = field(default_factory=dict)  # device -> its cmd_ids
    settings: dict[str, str] = field(default_factory=dict)
    series: dict[Key, Series] = field(default_factory=dict)  # what devices reported
    models: Models = field(default_factory=dict)  # thing models (memory/things.py)
    desired: Desired = field(default_factory=dict)  # desired values (memory/things.py)
    versions: dict[Key, tuple[str | None, str | None]] = field(default_factory=dict)
    ota: OtaData = field(init=False)  # firmware packages and OTA tasks (memory/ota.py)

    def __post_init__(self) -> None:
        self.ota = OtaData(self.products)


def _copy(device: Device) -> Device:
    return replace(device, tags=dict(device.tags))


class MemoryProducts:
    def __init__(self, data: _Data) -> None:
        self._data = data

    async def add(self, product: Product) -> None:
        if product.id in self._data.products:
            raise common.product_exists(product.id)
        self._data.products[product.id] = product

    async def get(self, product_id: str) -> Product | None:
        return self._data.products.get(product_id)

    async def list(self, limit: int, after: str | None = None) -> builtins.list[Product]:
        if limit <= 0:
            return []
        ids = sorted(i for i in self._data.products if after is None or i > after)
        return [self._data.products[i] for i in ids[:limit]]

    async def delete(self, product_id: str) -> bool:
        if product_id not in self._data.products:
            return False
        if any(key[0] == product_id for key in self._data.devices):
            raise common.product_has_devices(product_id)
        del self._data.products[product_id]
        self._data.ota.forget_product(product_id)
        self._data.models.pop(product_id, None)
        return True

    async def update(self, product_id: str, changes: Mapping[str, object]) -> bool:
        product = self._data.products.get(product_id)
        if product is None:
            return False
        self._data.products[product_id] = replace(product, **changes)  # type: ignore[arg-type]
        return True


class MemoryDevices:
    def __init__(self, data: _Data) -> None:
        self._data = data

    async def add(self, device: Device) -> None:
        data = self._data
        key = (device.product_id, device.name)
        keys = {
            key,
            data.by_number.get(device.device_number),
            data.by_username.get(device.username),
            data.by_token.get(device.access_token) if device.access_token else None,
        }
        existing = [data.devices[k] for k in keys if k is not None and k in data.devices]
        clash = common.first_clash(
            device,
            [(d.product_id, d.name, d.device_number, d.username, d.access_token) for d in existing],
        )
        if clash is None and self._sibling(device.gateway, device.sub_address, key):
            clash = "sub_address"
        if clash is not None:
            raise common.device_clash(device, clash)
        if device.product_id not in data.products:
            raise common.product_missing(device.product_id)
        data.devices[key] = _copy(device)
        data.by_number[device.device_number] = key
        data.by_username[device.username] = key
        if device.access_token is not None:
            data.by_token[device.access_token] = key

    def _sibling(self, gateway: Key | None, sub_address: str | None, key: Key) -> bool:
        """Whether another child of `gateway` has `sub_address`."""
        if gateway is None or sub_address is None:
            return False
        return any(
            d.gateway == gateway and d.sub_address == sub_address and k != key
            for k, d in self._data.devices.items()
        )

    async def set_gateway(
        self, product_id: str, name: str, gateway: Key | None, sub_address: str | None
    ) -> bool:
        key = (product_id, name)
        device = self._data.devices.get(key)
        if device is None:
            return False
        if self._sibling(gateway, sub_address, key):
            raise common.address_taken(gateway, sub_address)
        self._data.devices[key] = replace(device, gateway=gateway, sub_address=sub_address)
        return True

    async def children(
        self, product_id: str, name: str, limit: int, after: Key | None = None
    ) -> builtins.list[Device]:
        if limit <= 0:
            return []
        found = sorted(
            (k, d)
            for k, d in self._data.devices.items()
            if d.gateway == (product_id, name) and (after is None or k > after)
        )
        return [_copy(d) for _, d in found[:limit]]

    async def count_children(self, product_id: str, name: str) -> int:
        return sum(1 for d in self._data.devices.values() if d.gateway == (product_id, name))

    async def get(self, product_id: str, name: str) -> Device | None:
        device = self._data.devices.get((product_id, name))
        return _copy(device) if device is not None else None

    async def by_number(self, device_number: str) -> Device | None:
        key = self._data.by_number.get(device_number)
        return _copy(self._data.devices[key]) if key is not None else None

    async def by_username(self, username: str) -> Device | None:
        key = self._data.by_username.get(username)
        return _copy(self._data.devices[key]) if key is not None else None

    async def by_access_token(self, token: str) -> Device | None:
        key = self._data.by_token.get(token)
        return _copy(self._data.devices[key]) if key is not None else None

    async def count(self, product_id: str) -> int:
        return sum(1 for key in self._data.devices if key[0] == product_id)

    async def delete(self, product_id: str, name: str) -> bool:
        key = (product_id, name)
        device = self._data.devices.pop(key, None)
        if device is None:
            return False
        del self._data.by_number[device.device_number]
        del self._data.by_username[device.username]
        if device.access_token is not None:
            self._data.by_token.pop(device.access_token, None)
        self._data.presence.pop(key, None)
        self._data.holders.pop(key, None)
        self._data.images.pop(key, None)
        for cmd_id in self._data.commands_of.pop(key, set()):
            del self._data.commands[cmd_id]
        self._data.series.pop(key, None)
        self._data.desired.pop(key, None)
        self._data.versions.pop(key, None)
        for child_key, child in self._data.devices.items():
            if child.gateway == key:
                self._data.devices[child_key] = replace(child, gateway=None, sub_address=None)
        return True

    async def set_tags(self, product_id: str, name: str, tags: Mapping[str, str]) -> bool:
        key = (product_id, name)
        device = self._data.devices.get(key)
        if device is None:
            return False
        self._data.devices[key] = replace(device, tags=dict(tags))
        return True

    async def versions(self, product_id: str, name: str) -> tuple[str | None, str | None] | None:
        key = (product_id, name)
        if key not in self._data.devices:
            return None
        return self._data.versions.get(key, (None, None))

    async def set_versions(
        self, product_id: str, name: str, f_version: str | None, s_version: str | None
    ) -> bool:
        key = (product_id, name)
        if key not in self._data.devices:
            return False
        f, s = self._data.versions.get(key, (None, None))
        self._data.versions[key] = (f_version or f, s_version or s)
        return True

    async def set_presence(self, updates: Sequence[PresenceUpdate]) -> None:
        for u in updates:
            key = (u.product_id, u.name)
            if key not in self._data.devices:
                continue
            old, holder = self._data.presence.get(key), self._data.holders.get(key)
            held = old is not None and old.online and holder is not None
            if not u.online and held and u.node is not None and holder != u.node:
                continue  # another node holds it
            self._data.presence[key] = Presence(u.online, u.last_activity, u.changed_at)
            self._data.holders[key] = u.node

    async def presence(self, product_id: str, name: str) -> Presence | None:
        key = (product_id, name)
        if key not in self._data.devices:
            return None
        return self._data.presence.get(key, Presence(False))

    async def presence_many(self, keys: Sequence[tuple[str, str]]) -> dict[Key, Presence]:
        return {
            key: self._data.presence.get(key, Presence(False))
            for key in keys
            if key in self._data.devices
        }

    async def mark_all_offline(self, now_ms: int) -> int:
        online = [key for key, p in self._data.presence.items() if p.online]
        for key in online:
            self._data.presence[key] = replace(
                self._data.presence[key], online=False, changed_at=now_ms
            )
        return len(online)

    async def holder(self, product_id: str, name: str) -> str | None:
        key = (product_id, name)
        state = self._data.presence.get(key)
        return self._data.holders.get(key) if state is not None and state.online else None

    async def release_node(self, node: str, now_ms: int) -> builtins.list[Key]:
        held = sorted(
            key
            for key, p in self._data.presence.items()
            if p.online and self._data.holders.get(key) == node
        )
        for key in held:
            self._data.presence[key] = replace(
                self._data.presence[key], online=False, changed_at=now_ms
            )
        return held

    async def list(
        self, product_id: str, limit: int, after: str | None = None, search: str | None = None
    ) -> builtins.list[Device]:
        if limit <= 0:
            return []
        found = sorted(
            (d for (pid, name), d in self._data.devices.items() if pid == product_id),
            key=lambda d: d.name,
        )
        out: builtins.list[Device] = []
        for device in found:
            if after is not None and device.name <= after:
                continue
            if search and not common.matches(search, device):
                continue
            out.append(_copy(device))
            if len(out) == limit:
                break
        return out


class MemoryImages:
    def __init__(self, data: _Data) -> None:
        self._data = data

    async def get(self, product_id: str, name: str) -> StoredImage | None:
        stored = self._data.images.get((product_id, name))
        if stored is None:
            return None
        return StoredImage(common.load_document(stored[0]), stored[1])

    async def save(
        self, product_id: str, name: str, image: StoredImage, expected_version: int
    ) -> None:
        common.check_save(image, expected_version)
        text = common.dump_document(image.document)
        key = (product_id, name)
        if key not in self._data.devices:
            raise common.device_missing(product_id, name)
        stored = self._data.images.get(key)
        version = stored[1] if stored is not None else 0
        if version != expected_version:
            raise common.image_conflict(
                product_id, name, expected_version, stored[1] if stored is not None else None
            )
        self._data.images[key] = (text, image.version)


class MemoryCommands:
    def __init__(self, data: _Data) -> None:
        self._data = data

    async def add(self, record: CommandRecord) -> None:
        data = self._data
        if record.cmd_id in data.commands:
            raise common.command_exists(record.cmd_id)
        key = (record.product_id, record.name)
        if key not in data.devices:
            raise common.device_missing(record.product_id, record.name)
        response = bytes(record.response) if record.response is not None else None
        data.commands[record.cmd_id] = replace(
            record, request=bytes(record.request), response=response
        )
        data.commands_of.setdefault(key, set()).add(record.cmd_id)

    async def finish(
        self,
        cmd_id: str,
        status: str,
        answered_at: int | None,
        response: bytes | None,
        detail: str | None = None,
    ) -> bool:
        record = self._data.commands.get(cmd_id)
        if record is None:
            return False
        self._data.commands[cmd_id] = replace(
            record,
            status=status,
            answered_at=answered_at,
            response=bytes(response) if response is not None else None,
            detail=detail,
        )
        return True

    async def get(self, cmd_id: str) -> CommandRecord | None:
        return self._data.commands.get(cmd_id)

    async def list(
        self, product_id: str, name: str, limit: int, before: tuple[int, str] | None = None
    ) -> builtins.list[CommandRecord]:
        if limit <= 0:
            return []
        records = [
            self._data.commands[c] for c in self._data.commands_of.get((product_id, name), ())
        ]
        if before is not None:
            records = [r for r in records if (r.created_at, r.cmd_id) < before]
        records.sort(key=lambda r: (r.created_at, r.cmd_id), reverse=True)
        return records[:limit]

    async def fail_unfinished(self, now_ms: int, keep: Sequence[str] = ()) -> int:
        sent = [
            r
            for r in self._data.commands.values()
            if r.status == "sent" and (r.node is None or r.node not in keep)
        ]
        for r in sent:
            self._data.commands[r.cmd_id] = replace(
                r, status="failed", answered_at=now_ms, detail=common.SERVER_RESTARTED
            )
        return len(sent)


class MemorySettings:
    def __init__(self, data: _Data) -> None:
        self._data = data

    async def get(self, key: str) -> str | None:
        return self._data.settings.get(key)

    async def set_if_absent(self, key: str, value: str) -> str:
        return self._data.settings.setdefault(key, value)


class MemoryStorage:
    def __init__(self) -> None:
        data = _Data()
        self.products: ProductRepo = MemoryProducts(data)
        self.devices: DeviceRepo = MemoryDevices(data)
        self.images: ImageRepo = MemoryImages(data)
        self.commands: CommandRepo = MemoryCommands(data)
        store = SeriesStore(data.devices, data.series)
        self.telemetry: TelemetryRepo = MemoryTelemetry(store)
        self.attributes: AttributeRepo = MemoryAttributes(store)
        self.events: EventRepo = MemoryEvents(store)
        self.settings: SettingsRepo = MemorySettings(data)
        self.firmware: FirmwareRepo = MemoryFirmware(data.ota)
        self.ota: OtaRepo = MemoryOta(data.ota)
        self.thing_models: ThingModelRepo = MemoryThingModels(data.products, data.models)
        self.desired: DesiredRepo = MemoryDesired(data.devices, data.desired)
        self.api_keys: ApiKeyRepo = MemoryApiKeys()
        self.nodes: NodeRepo = MemoryNodes()
        self.locks: Locks = ProcessLocks()

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass
