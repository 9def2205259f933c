"""What the core and the services need from the outside world, as Protocols.

Rules:
- Storage implementations (storage/memory, storage/sqlite, storage/postgres)
  satisfy these exactly and pass one contract test suite.
- Methods that must be unique raise `AlreadyExists` naming the field that
  clashed; lookups return None for "absent", never raise NotFound.
- Listing is keyset paging: `after` is the last key of the previous page,
  results are in ascending key order, at most `limit` items.
- Every write is durable when the coroutine returns.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from thingshub.core.commands import Forwarded
from thingshub.core.errors import DeviceOffline
from thingshub.core.events import Event
from thingshub.core.messages import DeviceRef, Outbound
from thingshub.core.model import (
    ApiKey,
    CommandRecord,
    DesiredValue,
    Device,
    DeviceEvent,
    Firmware,
    NodeInfo,
    OtaDevice,
    OtaTask,
    Point,
    Presence,
    PresenceUpdate,
    Product,
    StoredImage,
    StoredModel,
)
from thingshub.core.settlement import Settlement


class Clock(Protocol):
    """Two clocks (services/clock.py): the wall clock, recorded and shown, which
    may jump; and a monotonic one, for durations measured in memory."""

    def now_ms(self) -> int: ...

    def monotonic_ms(self) -> int: ...


class DeviceLink(Protocol):
    """Reaches connected devices (implemented by the gateway)."""

    def send(self, ref: DeviceRef, message: Outbound) -> bool:
        """Publish to the device (QoS 0); False if no connection of it received it."""

    def is_online(self, product_id: str, name: str) -> bool: ...

    def heard(self, ref: DeviceRef) -> bool:
        """Whether a message sent to the device now may reach anyone: False only when
        none can (no connection holds any subscription), so that a message nobody
        waits for (a reply to a post) need not be built."""

    def listens(self, ref: DeviceRef, filters: list[str], kind: type) -> bool:
        """Whether one of a device's topic filters takes messages of `kind`."""


class RemoteCalls(Protocol):
    """Reaches devices connected to other nodes of a cluster (bus/calls.py)."""

    async def run(self, via: tuple[str, str], offline: DeviceOffline, op: Forwarded) -> object:
        """Run `op` on the node holding the connection of `via` (the device, or
        its top gateway), as that node's command service runs it; its result,
        or its error raised here. `offline` is raised when no node holds it."""


class EventBus(Protocol):
    """Delivers events to every subscriber (in this process, or across processes)."""

    def publish(self, event: Event) -> None: ...

    def subscribe(
        self, handler: Callable[[Event], None], kinds: Iterable[type]
    ) -> Callable[[], None]:
        """Call `handler` for every event of the given types; returns a function
        that unsubscribes."""

    def wants(self, kind: type) -> bool:
        """Whether anyone listens for events of this type."""


class Peers(Protocol):
    """The other nodes of a cluster (bus/nats.py): best-effort messages to every
    one of them, never back to the sender."""

    def broadcast(self, topic: str, payload: bytes) -> None: ...

    def on_broadcast(self, topic: str, handler: Callable[[bytes], None]) -> None: ...


class ProductRepo(Protocol):
    async def add(self, product: Product) -> None: ...

    async def get(self, product_id: str) -> Product | None: ...

    async def list(self, limit: int, after: str | None = None) -> list[Product]: ...

    async def delete(self, product_id: str) -> bool: ...

    async def update(self, product_id: str, changes: Mapping[str, object]) -> bool:
        """Set the given settings (PRODUCT_SETTINGS, already checked, or `access_key`)
        of a product; False if it does not exist."""


class DeviceRepo(Protocol):
    async def add(self, device: Device) -> None:
        """Raises AlreadyExists("... name ...") for a name taken in the product,
        or naming `device_number` or `username` when those clash globally."""

    async def get(self, product_id: str, name: str) -> Device | None: ...

    async def by_number(self, device_number: str) -> Device | None: ...

    async def by_username(self, username: str) -> Device | None: ...

    async def by_access_token(self, token: str) -> Device | None: ...

    async def versions(self, product_id: str, name: str) -> tuple[str | None, str | None] | None:
        """The OneNET (f_version, s_version) a device reported; None: no such device."""

    async def set_versions(
        self, product_id: str, name: str, f_version: str | None, s_version: str | None
    ) -> bool:
        """Set the versions given (None keeps one); False if there is no such device."""

    async def list(
        self, product_id: str, limit: int, after: str | None = None, search: str | None = None
    ) -> list[Device]:
        """Devices of a product by name; `search` keeps names or device numbers
        containing it (case-insensitive)."""

    async def count(self, product_id: str) -> int: ...

    async def delete(self, product_id: str, name: str) -> bool: ...

    async def set_presence(self, updates: Sequence[PresenceUpdate]) -> None:
        """Apply many presence changes in one transaction; unknown devices are skipped."""

    async def presence(self, product_id: str, name: str) -> Presence | None: ...

    async def presence_many(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Presence]: ...

    async def mark_all_offline(self, now_ms: int) -> int:
        """At start-up: every device recorded online is offline now (returns how many)."""

    async def holder(self, product_id: str, name: str) -> str | None:
        """The node recorded holding the device's connection, if it is online there."""

    async def release_node(self, node: str, now_ms: int) -> builtins.list[tuple[str, str]]:
        """Every device recorded online on `node` is offline now; their keys."""

    async def set_tags(self, product_id: str, name: str, tags: Mapping[str, str]) -> bool:
        """Replace a device's tags; False if there is no such device."""

    async def set_gateway(
        self, product_id: str, name: str, gateway: tuple[str, str] | None, sub_address: str | None
    ) -> bool:
        """Bind a device to `gateway` under `sub_address` (gateway None: unbind);
        False if there is no such device. AlreadyExists naming `sub_address` when
        another child of the gateway has it. The caller checks the gateway exists
        and the tree's rules (core/topology.py); deleting a gateway unbinds its children."""

    async def children(
        self, product_id: str, name: str, limit: int, after: tuple[str, str] | None = None
    ) -> builtins.list[Device]:
        """The devices whose gateway is this one, by (product id, name); `after`
        is the key of the last device of the previous page."""

    async def count_children(self, product_id: str, name: str) -> int: ...


class ImageRepo(Protocol):
    """OneNET device images. Writes are group-committed (see storage docs)."""

    async def get(self, product_id: str, name: str) -> StoredImage | None: ...

    async def save(
        self, product_id: str, name: str, image: StoredImage, expected_version: int
    ) -> None:
        """Store `image` if the stored version is `expected_version` (0: none stored);
        raise VersionConflict otherwise, so two writers can never both win.
        NotFound if the device does not exist."""


class ThingModelRepo(Protocol):
    """Products' thing models: at most one a product."""

    async def get(self, product_id: str) -> StoredModel | None: ...

    async def put(self, product_id: str, document: Mapping[str, Any], now_ms: int) -> StoredModel:
        """Set (or replace) a product's model; its revision goes up by one.
        NotFound if the product does not exist."""

    async def delete(self, product_id: str) -> bool: ...


class DesiredRepo(Protocol):
    """Desired property values, per device and identifier."""

    async def get(self, product_id: str, name: str) -> dict[str, DesiredValue]: ...

    async def change(
        self, product_id: str, name: str, changes: Mapping[str, object | None], now_ms: int
    ) -> dict[str, DesiredValue | None]:
        """Set values (a value) and delete them (None), all in one transaction;
        each identifier's new value (None: deleted). NotFound if the device does not exist."""

    async def delete_versions(
        self, product_id: str, name: str, versions: Mapping[str, int | None]
    ) -> list[str]:
        """Delete the values whose version is the one given (None: any);
        the identifiers deleted."""


class CommandRepo(Protocol):
    """Records of application-to-device calls. Writes are group-committed."""

    async def add(self, record: CommandRecord) -> None: ...

    async def finish(
        self,
        cmd_id: str,
        status: str,
        answered_at: int | None,
        response: bytes | None,
        detail: str | None = None,
    ) -> bool:
        """Set the final status of a record; False if there is no such record."""

    async def get(self, cmd_id: str) -> CommandRecord | None: ...

    async def list(
        self, product_id: str, name: str, limit: int, before: tuple[int, str] | None = None
    ) -> list[CommandRecord]:
        """Newest first, by (created_at, cmd_id) descending; `before` is the
        (created_at, cmd_id) of the last record of the previous page."""

    async def fail_unfinished(self, now_ms: int, keep: Sequence[str] = ()) -> int:
        """At start-up: records still `sent` belong to calls that can no longer be
        answered (their caller is gone): mark them `failed`, except those sent by
        the nodes in `keep` (the live nodes of a cluster other than this one)."""


class TelemetryRepo(Protocol):
    """Time series of device values. `append` is group-committed and atomic per call."""

    async def append(self, product_id: str, name: str, points: Sequence[Point]) -> None:
        """Store every point (history is append-only: equal timestamps are kept)
        and update the latest value per key (newest by ts, then by arrival),
        all in one transaction with the other appends of its batch. Returns once
        durable. NotFound if the device does not exist."""

    def append_now(
        self,
        product_id: str,
        name: str,
        points: Sequence[Point],
        then: Callable[[], None] | None = None,
    ) -> Awaitable[int | None]:
        """`append` for the ingest path, as a future made at once (no coroutine):
        None once durable, 0 if the device does not exist (nothing stored); a
        value the storage refuses, or the storage's failure, is its exception.
        `then` is called once the points are durable (not when nothing was
        stored), before the future's done callbacks run: the caller's
        bookkeeping without a callback of its own per message."""

    def append_settled(
        self,
        product_id: str,
        name: str,
        points: Sequence[Point],
        then: Callable[[], None] | None = None,
    ) -> Settlement | Awaitable[int | None]:
        """`append_now` for one message of the ingest path: what it returns
        may instead be the `Settlement` its write joined (its `last` member
        until the next append: 0 once durable or when the device does not exist,
        else the failure), decided with the others of its batch at once."""

    def append_devices_settled(
        self, devices: Sequence[tuple[str, str, Sequence[Point]]]
    ) -> Settlement | Awaitable[tuple[object, ...] | None]:
        """`append_settled` of many devices' (product_id, name, points) as ONE write
        (a gateway's message), durable together or (a storage failure) not at all.
        Its outcome (the future's value, or its member's settlement `value`): None,
        all durable; else one a device: None (stored), 0 (no such device) or the
        exception of a value the storage refuses (nothing of that device stored)."""

    async def latest(self, product_id: str, name: str) -> dict[str, tuple[int, object]]:
        """key -> (ts ms, value) of the newest point of each key."""

    async def history(
        self,
        product_id: str,
        name: str,
        key: str,
        start: int,
        end: int,
        limit: int,
        after: tuple[int, int] | None = None,
    ) -> list[tuple[int, int, object]]:
        """Points of `key` with start <= ts < end, ascending by (ts, seq), at most
        `limit`; `after` is the (ts, seq) of the last point of the previous page.
        Each item is (ts, seq, value); seq orders points of equal ts by arrival."""

    async def aggregate(
        self,
        product_id: str,
        name: str,
        key: str,
        start: int,
        end: int,
        interval: int,
        function: str,
    ) -> list[tuple[int, object]]:
        """One (bucket start, value) per non-empty bucket [start + k*interval,
        start + (k+1)*interval) within [start, end), ascending, computed in the
        database. `function`: avg, min, max, sum (numbers only; a bucket with
        no number is omitted), count (all points), last (newest by ts, then seq)."""

    async def delete_before(self, product_id: str, before: int, limit: int) -> int:
        """Delete at most `limit` points and events of the product's devices older
        than `before` (ms); returns how many were deleted (0: nothing left)."""


class AttributeRepo(Protocol):
    async def upsert(
        self, product_id: str, name: str, values: Mapping[str, object], ts: int
    ) -> None:
        """Set the given attributes (others are kept); group-committed."""

    async def get(self, product_id: str, name: str) -> dict[str, object]: ...


class EventRepo(Protocol):
    async def append(self, product_id: str, name: str, events: Sequence[DeviceEvent]) -> None:
        """Store events (group-committed, atomic per call)."""

    async def list(
        self,
        product_id: str,
        name: str,
        start: int,
        end: int,
        limit: int,
        after: tuple[int, int] | None = None,
    ) -> list[tuple[int, int, DeviceEvent]]:
        """Events with start <= ts < end, ascending by (ts, seq); (ts, seq, event)."""


class SettingsRepo(Protocol):
    async def get(self, key: str) -> str | None: ...

    async def set_if_absent(self, key: str, value: str) -> str:
        """Store `value` unless the key exists; return the value stored (atomic)."""


class FirmwareRepo(Protocol):
    """Firmware packages (their metadata; the files live in the data dir)."""

    async def add(self, firmware: Firmware) -> None:
        """NotFound if the product does not exist; AlreadyExists if the product
        has that version of that module already (or the id is taken)."""

    async def get(self, product_id: str, firmware_id: str) -> Firmware | None: ...

    async def list(self, product_id: str, limit: int, after: str | None = None) -> list[Firmware]:
        """A product's packages by id (ids sort by upload time)."""

    async def delete(self, product_id: str, firmware_id: str) -> bool:
        """False if there is no such package; Conflict if a RUNNING task uses it
        (checked in the same transaction as the delete)."""

    async def ids(self) -> set[str]:
        """The id of every package of every product."""


class OtaRepo(Protocol):
    """OTA tasks and the state of each of their devices. Writes are group-committed;
    a device row that is final (SUCCEEDED, FAILED, CANCELED, TIMED_OUT) never changes."""

    async def add_task(self, task: OtaTask, devices: Sequence[OtaDevice]) -> int:
        """Store a task and its devices (in this order: the rollout order), atomically.
        NotFound if its firmware is not one of its product's.

        The devices get consecutive OneNET tids (what they carry is ignored),
        taken in the same transaction from one counter, so that processes
        sharing the database never give one twice; returns the first:
        `devices[i]` has `first + i`."""

    async def get_task(self, product_id: str, task_id: str) -> OtaTask | None: ...

    async def list_tasks(
        self, product_id: str, limit: int, after: str | None = None
    ) -> list[OtaTask]:
        """A product's tasks by id (ids sort by creation)."""

    async def running(self) -> list[OtaTask]:
        """Every RUNNING task (to resume them after a start)."""

    async def devices(self, task_id: str) -> list[OtaDevice]:
        """The devices of a task, in rollout order."""

    async def counts(self, task_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """task id -> state -> how many of its devices are in it (states with none
        are left out; tasks without devices too)."""

    async def save_device(self, device: OtaDevice) -> bool:
        """Store a device's new state unless its row is final already (or absent):
        returns whether it was stored."""

    async def by_tid(self, tid: int) -> tuple[OtaTask, OtaDevice] | None:
        """The task and device entry of a tid."""

    async def finish_task(
        self, task_id: str, status: str, finished_at: int, devices: Sequence[OtaDevice]
    ) -> bool:
        """Set a RUNNING task's status (COMPLETED, CANCELED) and, in the same
        transaction, the given device states (rows already final are kept).
        False, changing nothing, if there is no such RUNNING task."""


class ApiKeyRepo(Protocol):
    """API keys (a few, read whole at start: the API authenticates from memory)."""

    async def add(self, key: ApiKey) -> None:
        """AlreadyExists if the id is taken."""

    async def list(self) -> builtins.list[ApiKey]:
        """Every key, by id."""

    async def delete(self, key_id: str) -> bool: ...

    async def touch(self, used: Mapping[str, int]) -> None:
        """Set `last_used_at` of the given keys where it is older (or none);
        unknown ids are skipped. One transaction."""


class NodeRepo(Protocol):
    """The nodes of a cluster and their heartbeats (one row a node id)."""

    async def beat(self, node: NodeInfo) -> None:
        """Write the node's row (added, or replaced with these values)."""

    async def list(self) -> builtins.list[NodeInfo]:
        """Every node with a row, in id order (alive or not: see `last_seen`)."""

    async def remove(self, node_id: str) -> None:
        """The node's row is gone (a node stopping cleanly)."""


class Locks(Protocol):
    """Named locks shared by every process on one database, held by a process
    for as long as it lives: the death of the process frees them (PostgreSQL:
    advisory locks on one connection of their own). One database used by one
    process (memory, SQLite) holds them in that process."""

    async def try_hold(self, name: str) -> bool:
        """Take the lock if nobody holds it; True if this process holds it now."""

    async def release(self, name: str) -> None: ...

    async def still_held(self, name: str) -> bool:
        """Whether this process still holds the lock (its connection may have
        been lost, and the lock with it)."""


class Storage(Protocol):
    products: ProductRepo
    devices: DeviceRepo
    images: ImageRepo
    commands: CommandRepo
    telemetry: TelemetryRepo
    attributes: AttributeRepo
    events: EventRepo
    settings: SettingsRepo
    firmware: FirmwareRepo
    ota: OtaRepo
    thing_models: ThingModelRepo
    desired: DesiredRepo
    api_keys: ApiKeyRepo
    nodes: NodeRepo
    locks: Locks

    async def open(self) -> None:
        """Connect, then create or migrate the schema."""

    async def close(self) -> None: ...
