"""A product's thing model (TSL): its document, and which values its data types admit.

The package holds three ideas, one module each, and names what they offer
here, so callers import `thingshub.core.thingmodel` whatever module a name
lives in:
- codes.py: OneNET's thing-model codes and the model's two errors
  (ModelError for a broken document, ValueRefused for a value, 302 or 309);
- datatypes.py: what a dataType's `specs` may say and which values each
  type admits (`check`, `check_params`);
- document.py: the model itself, its properties, events and services in
  OneNET's export shape (`parse_model`).
"""

from __future__ import annotations

from thingshub.core.thingmodel.codes import (
    BAD_REQUEST,
    CODES,
    DATA_TYPE_ERROR,
    DEVICE_NOT_FOUND,
    DEVICE_NOT_ONLINE,
    IDENTIFIER_UNKNOWN,
    INTERNAL_ERROR,
    INVALID_IDENTITY,
    INVALID_MSG_ID,
    INVALID_TOKEN,
    JSON_FORMAT_ERROR,
    NO_MODEL,
    RESP_ERROR,
    SIGN_NOT_MATCH,
    SUBSCRIPTION_NOT_EXIST,
    SUCCESS,
    TIMEOUT,
    TOKEN_EXPIRED,
    ModelError,
    ValueRefused,
)
from thingshub.core.thingmodel.datatypes import (
    ARRAY_ITEMS,
    INT_RANGES,
    MAX_STRING_LENGTH,
    NUMERIC,
    SCALARS,
    TYPES,
    DataType,
    Param,
    check,
    check_params,
)
from thingshub.core.thingmodel.document import (
    ACCESS_MODES,
    CALL_TYPES,
    EVENT_TYPES,
    MAX_POINTS,
    Event,
    Property,
    Service,
    ThingModel,
    parse_model,
)

__all__ = [
    "ACCESS_MODES",
    "ARRAY_ITEMS",
    "BAD_REQUEST",
    "CALL_TYPES",
    "CODES",
    "DATA_TYPE_ERROR",
    "DEVICE_NOT_ONLINE",
    "EVENT_TYPES",
    "IDENTIFIER_UNKNOWN",
    "INTERNAL_ERROR",
    "INT_RANGES",
    "INVALID_IDENTITY",
    "INVALID_MSG_ID",
    "JSON_FORMAT_ERROR",
    "MAX_POINTS",
    "MAX_STRING_LENGTH",
    "NO_MODEL",
    "NUMERIC",
    "RESP_ERROR",
    "SCALARS",
    "SUBSCRIPTION_NOT_EXIST",
    "SUCCESS",
    "TIMEOUT",
    "TOKEN_EXPIRED",
    "SIGN_NOT_MATCH",
    "INVALID_TOKEN",
    "DEVICE_NOT_FOUND",
    "TYPES",
    "DataType",
    "Event",
    "ModelError",
    "Param",
    "Property",
    "Service",
    "ThingModel",
    "ValueRefused",
    "check",
    "check_params",
    "parse_model",
]
