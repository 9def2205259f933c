"""The OpenAPI description: what FastAPI derives from the routes, finished.

Rules:
- Malformed requests are 400 here (errors.py), never FastAPI's 422: its 422
  answers and their schemas are taken out.
- `SafeJson` is any JSON value whose numbers are within JSON's safe integers
  (±(2^53 - 1)), for free-form values the server stores as they are
  (a firmware package's ext_data).
- Every operation under `/api/` needs the API key as a bearer token; the
  guard (guard.py) checks it, and this description says so.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from thingshub.api.guard import API_PREFIX
from thingshub.api.security import KEY_SCHEME
from thingshub.core.ota import MAX_SAFE

SAFE_JSON: dict[str, Any] = {
    "description": f"Any JSON value whose numbers are within -{MAX_SAFE} to {MAX_SAFE}.",
    "anyOf": [
        {"type": "null"},
        {"type": "boolean"},
        {"type": "string"},
        {"type": "number", "minimum": -MAX_SAFE, "maximum": MAX_SAFE},
        {"type": "array", "items": {"$ref": "#/components/schemas/SafeJson"}},
        {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/SafeJson"}},
    ],
}


def install(app: FastAPI) -> None:
    derive = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = derive()
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
                if path.startswith(API_PREFIX):
                    operation["security"] = [{"HTTPBearer": []}]
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})["HTTPBearer"] = KEY_SCHEME
        schemas = components.setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["SafeJson"] = SAFE_JSON
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
