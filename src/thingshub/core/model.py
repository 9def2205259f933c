"""Domain values: products, devices, presence.

Rules:
- Values are frozen; a change makes a new value.
- Times are Unix milliseconds (ints) everywhere except inside the OneNET image
  document, which keeps OneNET's seconds.
- A device's secrets: `key` (base64 of 32 random bytes) is kept, because the
  platform must verify HMAC tokens with it; the password is never kept, only
  `password_hash`, a keyed hash (see services/credentials.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")
_Item = TypeVar("_Item")


def slot_setters(cls: type, *names: str) -> tuple[Callable[[object, object], None], ...]:
    """The `__set__` of each named slot of a frozen, slotted dataclass. An `__init__`
    of its own that calls them costs a fraction of the generated one, which goes
    through `object.__setattr__` for every field: for the objects made once per
    message or per value on the ingest path (Presence, Point, storage's Write)."""
    return tuple(cls.__dict__[name].__set__ for name in names)


def fast_init(cls: type[T]) -> type[T]:
    """Give a frozen, slotted dataclass an `__init__` with the generated one's
    parameters and defaults that sets its slots through `slot_setters`, for the
    objects made per message whose `__init__` is not written out by hand (the
    thing model's posts and replies). A field with a default factory is refused."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = [f.name for f in fields]
    setters = slot_setters(cls, *names)
    namespace: dict[str, Any] = {f"_set_{n}": s for n, s in zip(names, setters, strict=True)}
    params = []
    for f in fields:
        if f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{f.name}: a default factory is not supported")
        default = "" if f.default is dataclasses.MISSING else f"=_default_{f.name}"
        namespace[f"_default_{f.name}"] = f.default
        params.append(f"{f.name}{default}")
    body = "".join(f"\n    _set_{name}(self, {name})" for name in names)
    exec(f"def __init__(self, {', '.join(params)}):{body}", namespace)
    cls.__init__ = namespace["__init__"]  # type: ignore[method-assign]
    return cls


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    name: str
    created_at: int
    #: Telemetry and events older than this many days are deleted (None: kept).
    retention_days: int | None = None
    #: Its gateways may create sub-devices by publishing on `devices/register`.
    gateway_auto_register: bool = True
    #: Its devices may register themselves (OneNET's dynamic registration).
    dynamic_registration: bool = False
    #: The OneNET product access key (base64 of 32 random bytes): it signs tokens
    #: for any device of the product. None for a product made before it had one
    #: (until the key is rotated).
    access_key: str | None = None


#: The fields of a Product that can change after its creation (PATCH).
PRODUCT_SETTINGS = ("name", "retention_days", "gateway_auto_register", "dynamic_registration")


@dataclass(frozen=True, slots=True)
class Device:
    product_id: str
    name: str
    device_number: str
    key: str
    username: str
    password_hash: str
    created_at: int
    tags: Mapping[str, str] = field(default_factory=dict)
    status: str = "enabled"
    #: A ThingsPanel access token (the user name of a login without password), if any.
    access_token: str | None = None
    #: The gateway it is reached through, (product id, name), if any (core/topology.py).
    gateway: tuple[str, str] | None = None
    #: Its address among its gateway's sub-devices, if it has one.
    sub_address: str | None = None
    #: Its product's access key, as a login found it (never stored with the device).
    product_key: str | None = None


#: How a login names its device: ("d", product id, device name) or ("u", user name).
DeviceLookup = tuple[str, ...]


@dataclass(frozen=True, slots=True, init=False)
class Presence:
    """Whether a device is connected, and when it was last heard from.

    Made anew whenever a device is heard from (every sub-device of every
    gateway message): its `__init__` sets the slots through their
    descriptors, as `Point`'s does."""

    online: bool
    last_activity: int | None = None  # ms
    changed_at: int | None = None  # ms, last online/offline transition

    def __init__(
        self, online: bool, last_activity: int | None = None, changed_at: int | None = None
    ) -> None:
        _SET_ONLINE(self, online)
        _SET_LAST_ACTIVITY(self, last_activity)
        _SET_CHANGED_AT(self, changed_at)


_SET_ONLINE, _SET_LAST_ACTIVITY, _SET_CHANGED_AT = slot_setters(
    Presence, "online", "last_activity", "changed_at"
)


@dataclass(frozen=True, slots=True, init=False)
class PresenceUpdate:
    """A change of presence waiting to be written (as often as `Presence`: the same
    descriptor-set `__init__`)."""

    product_id: str
    name: str
    online: bool
    last_activity: int | None
    changed_at: int
    #: The cluster node holding the device's connection (None: no cluster node
    #: named). An offline update from one node never overrides another's online.
    node: str | None = None

    def __init__(
        self,
        product_id: str,
        name: str,
        online: bool,
        last_activity: int | None,
        changed_at: int,
        node: str | None = None,
    ) -> None:
        _UPDATE_SLOTS[0](self, product_id)
        _UPDATE_SLOTS[1](self, name)
        _UPDATE_SLOTS[2](self, online)
        _UPDATE_SLOTS[3](self, last_activity)
        _UPDATE_SLOTS[4](self, changed_at)
        _UPDATE_SLOTS[5](self, node)


_UPDATE_SLOTS = tuple(
    PresenceUpdate.__dict__[name].__set__
    for name in ("product_id", "name", "online", "last_activity", "changed_at", "node")
)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node of a cluster as its heartbeat last wrote it (times in ms)."""

    id: str
    started_at: int
    last_seen: int
    connections: int = 0
    messages_in_per_s: int = 0


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next: str | None = None


@dataclass(frozen=True, slots=True)
class StoredImage:
    """A device image as stored: its document (JSON-able) and its version."""

    document: Mapping[str, object]
    version: int


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """One call from an application to a device, and how it ended.

    `family` is "onenet", "thingspanel" or "thing"; `kind` says what was
    asked: "command" (OneNET cmd or ThingsPanel command), "attributes_set",
    "attributes_get", and for the thing model "property_set",
    "property_get", "service" (`target`: the service's identifier) and
    "desired_push". `request`/`response` are the bytes on the wire.
    `status`: sent, answered, timeout, failed, rejected.
    """

    cmd_id: str
    product_id: str
    name: str
    family: str
    kind: str
    request: bytes
    status: str
    created_at: int  # ms
    sent_at: int | None = None
    answered_at: int | None = None
    response: bytes | None = None
    detail: str | None = None  # why it failed or was rejected
    target: str | None = None  # what the call is for, where its kind needs it
    node: str | None = None  # the node that sent it (a cluster's restart fails its own)


@dataclass(frozen=True, slots=True, init=False)
class Point:
    """One telemetry value of one key at one time. `value` is a JSON value:
    number, bool, string, or nested JSON (object or array).

    Frozen like every value, but made by the hundred thousand a second on the
    ingest path: its `__init__` sets the slots through their descriptors,
    where the generated one calls `object.__setattr__` per field (about a
    third of the cost of making a point)."""

    key: str
    ts: int  # ms
    value: object

    def __init__(self, key: str, ts: int, value: object) -> None:
        _SET_KEY(self, key)
        _SET_TS(self, ts)
        _SET_VALUE(self, value)


_SET_KEY, _SET_TS, _SET_VALUE = slot_setters(Point, "key", "ts", "value")


class ValuesAtTime(Sequence[_Item]):
    """A report's values at one time, as decoded (`ts`, `values`), read as the
    sequence of one item per value (`_item`), made only when read.

    The ingest path hands `values` to the storage straight, with no object per
    value; whoever reads it as a sequence (the bus, a test) gets the items a
    list would hold, in `values`' order, and it compares equal to such a list
    or tuple. Frozen: `values` is the report's own (nobody else holds it)."""

    __slots__ = ("ts", "values")

    ts: int | None
    values: Mapping[str, object]

    def __init__(self, ts: int | None, values: Mapping[str, object]) -> None:
        _SET_AT_TS(self, ts)
        _SET_AT_VALUES(self, values)

    def _item(self, key: str, value: object) -> _Item:
        raise NotImplementedError  # pragma: no cover - each subclass has its own

    def __setattr__(self, name: str, value: object) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[_Item]:
        item = self._item
        return iter([item(key, value) for key, value in self.values.items()])

    @overload
    def __getitem__(self, index: int) -> _Item: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[_Item]: ...
    def __getitem__(self, index: int | slice) -> _Item | Sequence[_Item]:
        return list(self)[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, type(self) | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.ts!r}, {self.values!r})"


_SET_AT_TS, _SET_AT_VALUES = slot_setters(ValuesAtTime, "ts", "values")


class PointsAt(ValuesAtTime[Point]):
    """The points of values reported at one time (`ts`, ms): a `Point` each,
    made only when read.

    A real-time report (ThingsPanel's root object, a gateway's node) is one
    time and an object of values. The storage encodes its rows from `values`
    straight, so the ingest path makes no `Point` per value; whoever reads it
    as a sequence (the bus, a test) gets the same points as a list would
    hold, in `values`' order, and it compares equal to such a list or tuple.
    Frozen: `values` is the report's own (nobody else holds it)."""

    __slots__ = ()

    ts: int

    def __init__(self, ts: int, values: Mapping[str, object]) -> None:
        _SET_AT_TS(self, ts)
        _SET_AT_VALUES(self, values)

    def _item(self, key: str, value: object) -> Point:
        return Point(key, self.ts, value)


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """An event a device reported; `type` is its kind in the thing model
    (info, alert, error) where the model defines one."""

    ts: int  # ms
    method: str
    params: object = None
    type: str | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as stored: never its secret, only `secret_hash` (services/keys.py)."""

    id: str
    name: str
    role: str  # core/access.py's ROLES
    #: The products it is limited to (sorted); None: every product.
    products: tuple[str, ...] | None
    secret_hash: str
    created_at: int  # ms
    last_used_at: int | None = None  # ms


@dataclass(frozen=True, slots=True)
class StoredModel:
    """A product's thing model as stored: its canonical document and revision."""

    product_id: str
    document: Mapping[str, Any]
    revision: int
    updated_at: int  # ms


@dataclass(frozen=True, slots=True)
class DesiredValue:
    """A desired property value: versions start at 1, +1 per set, and start
    again at 1 after a deletion."""

    value: object
    version: int
    ts: int  # ms


@dataclass(frozen=True, slots=True)
class Firmware:
    """A firmware package of a product: the file is `size` bytes with these digests
    (lowercase hex); `ext_data` is the JSON object devices get as `extData`."""

    id: str
    product_id: str
    name: str
    version: str
    module: str
    size: int
    md5: str
    sha256: str
    created_at: int  # ms
    ext_data: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OtaTask:
    """An upgrade of devices of a product to one firmware package (see core/ota.py).
    `status`: RUNNING, COMPLETED or CANCELED; `rollout_per_minute` None: no limit."""

    id: str
    product_id: str
    firmware_id: str
    module: str
    version: str
    sign_method: str
    rollout_per_minute: int | None
    device_timeout_s: int
    status: str
    created_at: int  # ms
    finished_at: int | None = None


@dataclass(frozen=True, slots=True)
class OtaDevice:
    """Where one device of a task stands (states in core/ota.py). `desc` says what
    the state means (a failure's meaning, the device's words while in progress);
    `detail` keeps what the device said in its last report."""

    task_id: str
    name: str
    state: str
    step: int | None
    desc: str
    detail: str | None
    informed_at: int | None  # ms, the first inform
    updated_at: int  # ms
    finished_at: int | None  # ms, when it became final
    #: OneNET's task id of this device's part (a positive integer, unique).
    tid: int | None = None
    #: The protocol family the device takes part through ("onenet",
    #: "thingspanel"), once known: how it was informed or asked.
    protocol: str | None = None
