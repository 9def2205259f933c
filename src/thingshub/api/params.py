"""What every route reads from a request, with the rules it really enforces,
so that validation and the OpenAPI description are one and the same.

Rules (docs/operations.md, "Limits against hostile input"):
- Integers in paths and queries, and the integer fields of JSON bodies, are
  within the signed 64-bit range (every one has bounds; a test checks the
  OpenAPI description for any that has not): outside it is 400, never a
  failure deeper down. Free-form JSON values (desired state, attributes,
  params) go to devices as JSON, under the device protocols' own rules.
- JSON bodies are read by `core.jsontext` (strict: no NaN, no lone
  surrogate), through `ApiRoute`, the route class of every router: a body
  that breaks a rule is 400 with a sentence saying which.
- Identifiers in paths are 1-64 of `[A-Za-z0-9_.-]` (core/names.py); a path
  naming something that cannot exist is 400.
- Cursors have the formats of core/cursors.py; any well-formed one is valid.
- Every route's role comes from the one table of roles.py, looked up when
  the route is built (a route without an entry fails the app's start) and
  checked first in its handler (403, or 404 for a product the key does not
  see), before the body is read or any dependency solved.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Path, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import Field
from starlette.exceptions import HTTPException

from thingshub.api import roles
from thingshub.core import cursors
from thingshub.core.jsontext import INT64_MAX, INT64_MIN, JsonError, loads_unicode

ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class ApiRequest(Request):
    """A request whose JSON body is read by core.jsontext."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = loads_unicode(await self.body())
            except JsonError as exc:
                raise HTTPException(400, f"the body is not valid JSON: {exc}") from None
        return self._json


class ApiRoute(APIRoute):
    """The route class of every API router: its requests are `ApiRequest`s, checked
    against the route's entry in the roles table first."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        needs = {method: roles.need_of(method, self.path_format) for method in self.methods or ()}

        async def handle(request: Request) -> Response:
            need = needs[request.method]  # a route is only called with its methods
            if need is not None:
                roles.check(request.scope, need)
            return await handler(ApiRequest(request.scope, request.receive, request._send))

        return handle


def _id(what: str) -> Any:
    return Path(
        pattern=ID_PATTERN,
        min_length=1,
        max_length=64,
        description=f"{what}: 1-64 of [A-Za-z0-9_.-].",
    )


#: Path identifiers.
ProductId = Annotated[str, _id("The product's id")]
DeviceName = Annotated[str, _id("The device's name")]
FirmwareId = Annotated[str, _id("The firmware package's id")]
TaskId = Annotated[str, _id("The OTA task's id")]
KeyId = Annotated[str, _id("The API key's id")]

#: Signed 64-bit integers, the widest any route takes.
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
Ms = Annotated[int, Query(ge=INT64_MIN, le=INT64_MAX, description="Unix milliseconds.")]
Limit = Annotated[int, Query(ge=1, le=1000, description="Items a page, at most.")]
Timeout = Annotated[
    int, Query(ge=1, le=30, description="Seconds to wait for the device's answer (1-30).")
]

#: Cursors: the `next` of the previous page.
KeyCursor = Annotated[
    str | None,
    Query(pattern=cursors.KEY_PATTERN, description="The `next` of the previous page."),
]
PairCursor = Annotated[
    str | None,
    Query(pattern=cursors.PAIR_PATTERN, description="The `next` of the previous page."),
]
PointCursor = Annotated[
    str | None,
    Query(pattern=cursors.POINT_PATTERN, description="The `next` of the previous page."),
]
CommandCursor = Annotated[
    str | None,
    Query(pattern=cursors.COMMAND_PATTERN, description="The `next` of the previous page."),
]
