"""The thing model over HTTP: a product's model, and on a device its properties,
services and desired values.

Errors carry OneNET's thing-model `err_code` and `err_msg`: 400 with 302 (a
value does not fit its type), 309 (no such identifier) or 313 (a bad request,
a read-only property); 404 with 305 when the product has no model; 409 with
308 (the device is offline) or 1022 (it does not listen for the request);
502 with 304 (an unusable answer); 504 with 306 (no answer in time). A model
that breaks a rule is 400 with `path`, the JSON pointer of the fault.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, StringConstraints, WithJsonSchema

from thingshub.api.deps import Things
from thingshub.api.params import ApiRoute, DeviceName, ProductId, Timeout
from thingshub.api.schemas import BODY_ERRORS, CALL_ERRORS, ERRORS, Strict
from thingshub.core.model import StoredModel

SERVICE_PATTERN = r"^\$?[A-Za-z0-9_]{1,50}$"

models = APIRouter(
    prefix="/api/v1/products/{pid}/thing-model",
    tags=["thing model"],
    responses=ERRORS,
    route_class=ApiRoute,
)
router = APIRouter(
    prefix="/api/v1/products/{pid}/devices/{name}",
    tags=["thing model"],
    responses=ERRORS,
    route_class=ApiRoute,
)
CALL = BODY_ERRORS | CALL_ERRORS
#: An identifier of the thing model (without a model: any 1-128 characters).
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128)]
#: A value for the device: any JSON value but null (checked by the model, if any).
Value = Annotated[Any, WithJsonSchema({"type": ["string", "number", "boolean", "object", "array"]})]
#: Values for the device, by identifier: a JSON object with at least one member.
Values = Annotated[dict[Identifier, Value], Body(min_length=1)]
ServiceId = Annotated[str, StringConstraints(pattern=SERVICE_PATTERN, min_length=1, max_length=51)]


class ModelOut(BaseModel):
    product_id: str
    revision: int = Field(description="Up by one each time the model is set.")
    updated_at: int
    properties: list[dict[str, Any]]
    events: list[dict[str, Any]]
    services: list[dict[str, Any]]

    @classmethod
    def of(cls, stored: StoredModel) -> ModelOut:
        doc = stored.document
        return cls(
            product_id=stored.product_id,
            revision=stored.revision,
            updated_at=stored.updated_at,
            properties=list(doc.get("properties") or []),
            events=list(doc.get("events") or []),
            services=list(doc.get("services") or []),
        )


class PropertiesGetIn(Strict):
    identifiers: list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] = Field(
        default_factory=list, description="The properties wanted ([]: all the model's)."
    )


class CallOut(BaseModel):
    call_id: str = Field(description="The command record of the call.")
    id: str = Field(description="The request's OneJSON id.")
    code: int | None = Field(description="The device's code (200: success).")
    msg: str | None = None
    data: Any = None


@models.put("", responses=BODY_ERRORS)
async def set_model(
    pid: ProductId,
    things: Things,
    body: Annotated[dict[str, Any], Body(description="A model in OneNET's export shape.")],
) -> ModelOut:
    """Set (or replace) the product's thing model; stored data is never touched."""
    return ModelOut.of(await things.set_model(pid, body))


@models.get("")
async def get_model(pid: ProductId, things: Things) -> ModelOut:
    """The product's model, canonical (aliases resolved), with its revision."""
    return ModelOut.of(await things.get_model(pid))


@models.delete("", status_code=204)
async def delete_model(pid: ProductId, things: Things) -> Response:
    """Delete the model; what devices reported stays."""
    await things.delete_model(pid)
    return Response(status_code=204)


@router.post("/properties", responses=CALL)
async def set_properties(
    pid: ProductId, name: DeviceName, things: Things, body: Values, timeout: Timeout = 5
) -> CallOut:
    """Set properties on the device (`thing/property/set`) and wait for its reply."""
    return CallOut(**await things.set_properties(pid, name, body, timeout))


@router.post("/properties/get", responses=CALL)
async def get_properties(
    pid: ProductId, name: DeviceName, things: Things, body: PropertiesGetIn, timeout: Timeout = 5
) -> CallOut:
    """Ask the device for property values (`thing/property/get`); its reply, with `data`."""
    return CallOut(**await things.get_properties(pid, name, body.identifiers, timeout))


@router.post(
    "/services/{identifier}",
    responses=CALL | {202: {"description": "An asynchronous service: published, not answered"}},
)
async def invoke_service(
    pid: ProductId,
    name: DeviceName,
    identifier: ServiceId,
    things: Things,
    body: Annotated[dict[Identifier, Value], Body(description="The service's input.")],
    timeout: Timeout = 5,
    asynchronous: Annotated[
        bool,
        Query(
            alias="async",
            description="Without a model: do not wait (the model's callType decides otherwise).",
        ),
    ] = False,
) -> Any:
    """Invoke a service (`thing/service/{identifier}/invoke`). A synchronous one answers
    with the device's reply; an asynchronous one 202 `{"call_id"}` once published, and
    the device's later reply completes its command record."""
    result = await things.invoke(pid, name, identifier, body, timeout, asynchronous)
    if set(result) == {"call_id"}:
        return JSONResponse(result, status_code=202)
    return CallOut(**result)


@router.get("/desired")
async def get_desired(pid: ProductId, name: DeviceName, things: Things) -> dict[str, Any]:
    """Desired values by identifier: `{"value", "version", "ts"}`."""
    return await things.desired(pid, name)


@router.patch("/desired", responses=BODY_ERRORS)
async def patch_desired(
    pid: ProductId,
    name: DeviceName,
    things: Things,
    body: Annotated[
        dict[Identifier, Any], Body(min_length=1, description="Values; null deletes one.")
    ],
) -> dict[str, Any]:
    """Set or delete desired values (checked like a set); pushed to the device on
    `thing/property/set` when it is online and listens."""
    return await things.patch_desired(pid, name, body)
