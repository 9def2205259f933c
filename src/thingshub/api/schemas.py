"""Request and response bodies, as documented in the OpenAPI description.

Rules:
- Field names are those of interfaces.md (`device_number`, `connectionState`,
  `lastActivityTime`, ...); times are Unix milliseconds.
- Request bodies forbid unknown fields, so a typo is a 400, not silently ignored.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from thingshub.core.model import Device, Presence, Product

T = TypeVar("T")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProductIn(Strict):
    id: str | None = Field(None, description="1-64 of [A-Za-z0-9_.-]; generated when absent.")
    name: str = Field(description="A human name.")


class ProductOut(BaseModel):
    id: str
    name: str
    created_at: int
    retention_days: int | None = Field(
        None, description="Telemetry and events older than this are deleted (null: kept)."
    )

    @classmethod
    def of(cls, p: Product) -> ProductOut:
        return cls(id=p.id, name=p.name, created_at=p.created_at, retention_days=p.retention_days)


class ProductPatch(Strict):
    retention_days: int | None = Field(
        description="Days to keep telemetry and events; null: forever."
    )


class DeviceIn(Strict):
    name: str = Field(description="Unique within the product; 1-64 of [A-Za-z0-9_.-].")
    device_number: str | None = Field(
        None, description="Globally unique ThingsPanel id; defaults to the name when free."
    )
    tags: dict[str, str] | None = Field(None, description="Flat string tags.")


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

    @classmethod
    def of(cls, d: Device, presence: Presence) -> DeviceOut:
        return cls(
            product_id=d.product_id,
            name=d.name,
            device_number=d.device_number,
            username=d.username,
            tags=dict(d.tags),
            status=d.status,
            created_at=d.created_at,
            connectionState="online" if presence.online else "offline",
            lastActivityTime=presence.last_activity,
        )


class DeviceCreated(DeviceOut):
    key: str = Field(description="Base64 device key for OneNET tokens. Shown only here.")
    password: str = Field(description="The ThingsPanel-style password. Shown only here.")


class TokenIn(Strict):
    expires_in: int = Field(3600, ge=60, le=10 * 365 * 86400, description="Seconds from now.")
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


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Malformed request"},
    401: {"model": ErrorOut, "description": "Missing or wrong API key"},
    404: {"model": ErrorOut, "description": "No such resource"},
    409: {"model": ErrorOut, "description": "Conflict with the current state"},
}
