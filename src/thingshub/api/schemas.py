"""Request and response bodies, as documented in the OpenAPI description.

Rules:
- Field names are those of the published API (README) (`device_number`, `connectionState`,
  `lastActivityTime`, ...); times are Unix milliseconds.
- Request bodies forbid unknown fields, so a typo is a 400, not silently ignored.
- Integers are JSON Schema's: a number without a fraction (`5` or `5.0`), never
  `true` nor `"5"` (`NUMBER`).
- Each field states the rules the services enforce (lengths, patterns, ranges),
  so that what the OpenAPI description allows is what the server accepts.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StringConstraints,
)
from pydantic.json_schema import SkipJsonSchema

from thingshub.api.params import ID_PATTERN
from thingshub.core.access import ROLES
from thingshub.core.model import ApiKey, Device, Presence, Product
from thingshub.core.products import MAX_PRODUCT_NAME, MAX_RETENTION_DAYS
from thingshub.services import devices as rules

#: A string with something else than white space (Python's str.isspace()).
NOT_BLANK = "[^\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN, min_length=1, max_length=64)]
TagKey = Annotated[str, StringConstraints(min_length=1, max_length=rules.MAX_TAG_KEY)]
TagValue = Annotated[str, StringConstraints(max_length=rules.MAX_TAG_VALUE)]
AccessToken = Annotated[str, StringConstraints(pattern=r"^[!-~]{1,64}$")]
SubAddress = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,36}$"),
    Field(description="Its address among the gateway's sub-devices: 1-36 of [A-Za-z0-9_.:-]."),
]

T = TypeVar("T")


def _number(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("a number is required")
    return value


#: Makes an `int` one as JSON Schema means it (pydantic then refuses a fraction);
#: it comes after the field's bounds: `Annotated[int, Field(ge=.., le=..), NUMBER]`.
NUMBER = BeforeValidator(_number)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


ProductName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_PRODUCT_NAME,
        pattern=NOT_BLANK,
        description="A human name, not only white space.",
    ),
]


class ProductIn(Strict):
    id: Identifier | None = Field(
        None, description="1-64 of [A-Za-z0-9_.-]; generated when absent."
    )
    name: ProductName
    gateway_auto_register: StrictBool = Field(
        True, description="false: its gateways' `devices/register` is refused."
    )
    dynamic_registration: StrictBool = Field(
        False, description="true: devices may register themselves (`/mqtt/v1/devices/reg`)."
    )
    thing_model: dict[str, Any] | None = Field(
        None, description="A thing model in OneNET's export shape, set with the product."
    )


class ProductOut(BaseModel):
    id: str
    name: str
    created_at: int
    retention_days: int | None = Field(
        None, description="Telemetry and events older than this are deleted (null: kept)."
    )
    gateway_auto_register: bool = Field(
        True, description="Its gateways may create sub-devices on `devices/register`."
    )
    dynamic_registration: bool = Field(
        False, description="Its devices may register themselves with a product-level token."
    )

    @classmethod
    def of(cls, p: Product) -> ProductOut:
        return cls(
            id=p.id,
            name=p.name,
            created_at=p.created_at,
            retention_days=p.retention_days,
            gateway_auto_register=p.gateway_auto_register,
            dynamic_registration=p.dynamic_registration,
        )


class CreatedProductOut(ProductOut):
    access_key: str = Field(
        description="The product's OneNET access key (base64; signs tokens for any of its"
        " devices). Shown only here and when rotated."
    )


class AccessKeyOut(BaseModel):
    access_key: str = Field(description="The new access key; the old one no longer works.")


class ProductPatch(Strict):
    """Settings to change; a field left out keeps its value."""

    name: ProductName | SkipJsonSchema[None] = Field(None, description="A new human name.")
    retention_days: Annotated[int, Field(ge=1, le=MAX_RETENTION_DAYS), NUMBER] | None = Field(
        None, description="Days to keep telemetry and events; null: forever."
    )
    gateway_auto_register: StrictBool | SkipJsonSchema[None] = Field(
        None, description="false: its gateways' `devices/register` is refused."
    )
    dynamic_registration: StrictBool | SkipJsonSchema[None] = Field(
        None, description="true: devices may register themselves."
    )

    def changes(self) -> dict[str, object]:
        """The fields the body gives. `retention_days: null` is a change; a null
        `name` or flag is outside the schema and refused (400) by the service."""
        return {field: getattr(self, field) for field in self.model_fields_set}


_RESERVED: list[JsonValue] = [*sorted(rules.RESERVED_NUMBERS)]


class GatewayRef(Strict):
    product_id: Identifier
    name: Identifier


class GatewayIn(GatewayRef):
    sub_address: SubAddress | None = None


class GatewayOut(BaseModel):
    product_id: str
    name: str
    sub_address: str | None


class SubDeviceOut(BaseModel):
    product_id: str
    name: str
    sub_address: str | None
    connectionState: str
    lastActivityTime: int | None

    @classmethod
    def of(cls, d: Device, presence: Presence) -> SubDeviceOut:
        return cls(
            product_id=d.product_id,
            name=d.name,
            sub_address=d.sub_address,
            connectionState="online" if presence.online else "offline",
            lastActivityTime=presence.last_activity,
        )


class DeviceIn(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"dependentRequired": {"sub_address": ["gateway"]}}
    )

    name: Identifier = Field(description="Unique within the product; 1-64 of [A-Za-z0-9_.-].")
    device_number: Identifier | None = Field(
        None,
        description="Globally unique ThingsPanel id; defaults to the name when free."
        f" Not one of: {', '.join(sorted(rules.RESERVED_NUMBERS))}.",
        json_schema_extra={"not": {"enum": _RESERVED}},
    )
    tags: dict[TagKey, TagValue] | None = Field(
        None, max_length=rules.MAX_TAGS, description="Flat string tags."
    )
    access_token: AccessToken | bool | None = Field(
        None,
        description="A ThingsPanel access token (the user name of a login without password):"
        " true to generate one, or 1-64 printable ASCII characters, unique on the server.",
    )
    gateway: GatewayRef | None = Field(
        None, description="The gateway it is reached through (at most 5 levels, no cycles)."
    )
    sub_address: SubAddress | None = None


class VersionsOut(BaseModel):
    f_version: str | None = Field(None, description="The module firmware version it reported.")
    s_version: str | None = Field(None, description="The application version it reported.")


class DeviceOut(BaseModel):
    product_id: str
    name: str
    device_number: str
    username: str
    tags: dict[str, str]
    status: str
    created_at: int
    connectionState: str
    lastActivityTime: int | None
    gateway: GatewayOut | None = Field(
        None, description="The gateway it is reached through, and its address there."
    )
    versions: VersionsOut | None = Field(
        None, description="The versions it reported to OneNET's OTA API (on a single device)."
    )

    @classmethod
    def of(
        cls, d: Device, presence: Presence, versions: tuple[str | None, str | None] | None = None
    ) -> DeviceOut:
        return cls(
            versions=(
                VersionsOut(f_version=versions[0], s_version=versions[1])
                if versions is not None
                else None
            ),
            product_id=d.product_id,
            name=d.name,
            device_number=d.device_number,
            username=d.username,
            tags=dict(d.tags),
            status=d.status,
            created_at=d.created_at,
            connectionState="online" if presence.online else "offline",
            lastActivityTime=presence.last_activity,
            gateway=(
                GatewayOut(product_id=d.gateway[0], name=d.gateway[1], sub_address=d.sub_address)
                if d.gateway is not None
                else None
            ),
        )


class DeviceCreated(DeviceOut):
    key: str = Field(description="Base64 device key for OneNET tokens. Shown only here.")
    password: str = Field(description="The ThingsPanel-style password. Shown only here.")
    access_token: str | None = Field(
        None, description="Its access token, when it has one. Shown only here."
    )


class TokenIn(Strict):
    expires_in: Annotated[int, Field(ge=60, le=10 * 365 * 86400), NUMBER] = Field(
        3600, description="Seconds from now."
    )
    method: Literal["md5", "sha1", "sha256"] = "sha256"


class TokenOut(BaseModel):
    client_id: str
    username: str
    password: str = Field(description="The OneNET token, to be sent as the MQTT password.")
    expires_at: int = Field(description="Unix seconds.")


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    next: str | None


class ErrorOut(BaseModel):
    error: str
    err_code: int | None = None
    err_msg: str | None = None


class ImagePatch(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"anyOf": [{"required": ["desired"]}, {"required": ["tags"]}]},
    )

    desired: dict[str, Any] | None = Field(
        None, description="Desired values, checked as a device's update; null deletes a key."
    )
    tags: dict[TagKey, TagValue | None] | None = Field(
        None, description="Tags to set; null removes a tag."
    )
    version: Annotated[int, Field(ge=0, le=2**53 - 1), NUMBER] | None = Field(
        None, description="Apply only to this version of the image."
    )


class CallIn(Strict):
    method: str = Field(min_length=1, description="The command's method.")
    params: Any = Field(None, description="Its params (default {}).")


class AttributesGetIn(Strict):
    keys: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=list, description="The attribute names wanted ([]: all)."
    )


class KeyIn(Strict):
    name: Annotated[str, Field(min_length=1, max_length=100, pattern=NOT_BLANK)] = Field(
        description="What the key is for: 1-100 characters, not only white space."
    )
    role: Literal["admin", "operator", "reader"] = Field(
        description="reader: every GET and the live stream; operator: also registers, deletes"
        " and acts on devices; admin: everything."
    )
    products: Annotated[list[Identifier], Field(min_length=1, max_length=1000)] | None = Field(
        None, description="The products it is limited to (each must exist); absent: every one."
    )


class _KeyFields(BaseModel):
    id: str
    name: str
    role: str = Field(description=f"One of {', '.join(ROLES)}.")
    products: list[str] | None = Field(description="The products it sees; null: every one.")
    created_at: int

    @staticmethod
    def fields_of(k: ApiKey) -> dict[str, Any]:
        products = None if k.products is None else list(k.products)
        return {
            "id": k.id,
            "name": k.name,
            "role": k.role,
            "products": products,
            "created_at": k.created_at,
        }


class KeyCreated(_KeyFields):
    key: str = Field(description="The key, as `Authorization: Bearer <key>`. Shown only here.")

    @classmethod
    def of(cls, k: ApiKey, text: str) -> KeyCreated:
        return cls(**cls.fields_of(k), key=text)


class KeyOut(_KeyFields):
    last_used_at: int | None = Field(description="When it was last used (null: never).")

    @classmethod
    def of(cls, k: ApiKey) -> KeyOut:
        return cls(**cls.fields_of(k), last_used_at=k.last_used_at)


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("Malformed request"),
    401: _error("Missing or wrong API key"),
    403: _error("The key's role is not enough for this"),
    404: _error("No such resource"),
    409: _error("Conflict with the current state"),
}
#: Routes that read a body.
BODY_ERRORS: dict[int | str, dict[str, Any]] = {413: _error("The body is larger than 1 MiB")}
#: Routes that wait for a device's answer.
CALL_ERRORS: dict[int | str, dict[str, Any]] = {
    502: _error("The device answered something unusable"),
    504: _error("The device did not answer in time"),
}
#: Routes of a part a server may run without (firmware and OTA).
OPTIONAL_ERRORS: dict[int | str, dict[str, Any]] = {
    503: _error("Not available on this server"),
}


class NodeOut(BaseModel):
    id: str = Field(description="The node's id (`--node-id`)")
    started_at: int = Field(description="When the node started, ms")
    last_seen: int = Field(description="Its last heartbeat, ms")
    connections: int = Field(description="MQTT connections open on it at that beat")
    messages_in_per_s: int = Field(description="MQTT messages it received per second")


class ClusterOut(BaseModel):
    node: str = Field(description="The id of the node that answered")
    nodes: list[NodeOut] = Field(description="The live nodes, by id (a single process: itself)")
