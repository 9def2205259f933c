"""OneNET's thing-model codes, and the two errors of the thing model.

Rules:
- The codes are OneNET's (OneJSON replies, and the HTTP API's `err_code`);
  CODES gives each its words, the `msg` of a reply.
- A model document that breaks a rule raises ModelError, with `path` a JSON
  pointer to the fault.
- A refused value raises ValueRefused whose message names the identifier
  and the rule ("temp: 130 > max 125"); its wire hint is OneNET's 302
  "data type error". An identifier absent from the model is 309.
"""

from __future__ import annotations

from typing import Final

from thingshub.core.errors import InvalidRequest

#: OneNET's thing-model codes (OneJSON replies, and the HTTP API's `err_code`):
#: the errors' wire hints, and their words.
SUCCESS: Final = 200
JSON_FORMAT_ERROR: Final = 301
DATA_TYPE_ERROR: Final = 302
INTERNAL_ERROR: Final = 303
RESP_ERROR: Final = 304
NO_MODEL: Final = 305
TIMEOUT: Final = 306
INVALID_IDENTITY: Final = 307
DEVICE_NOT_ONLINE: Final = 308
IDENTIFIER_UNKNOWN: Final = 309
INVALID_MSG_ID: Final = 312
BAD_REQUEST: Final = 313
SUBSCRIPTION_NOT_EXIST: Final = 1022
INVALID_TOKEN: Final = 1103
TOKEN_EXPIRED: Final = 1104
SIGN_NOT_MATCH: Final = 1106
DEVICE_NOT_FOUND: Final = 1107
CODES: Final[dict[int, str]] = {
    SUCCESS: "success",
    JSON_FORMAT_ERROR: "json format error",
    DATA_TYPE_ERROR: "data type error",
    INTERNAL_ERROR: "internal error",
    RESP_ERROR: "resp error",
    NO_MODEL: "no thing-model",
    TIMEOUT: "timeout",
    INVALID_IDENTITY: "invalid pid or devName",
    DEVICE_NOT_ONLINE: "device not online",
    IDENTIFIER_UNKNOWN: "identifier not exist",
    INVALID_MSG_ID: "invalid msg id",
    BAD_REQUEST: "bad request",
    SUBSCRIPTION_NOT_EXIST: "subscription not exist",
    INVALID_TOKEN: "invalid token",
    TOKEN_EXPIRED: "token expired",
    SIGN_NOT_MATCH: "sign not match",
    DEVICE_NOT_FOUND: "device not found",
}


class ModelError(InvalidRequest):
    """The model document breaks a rule; `path` is a JSON pointer to where."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or '/'}: {message}")
        self.path = path
        self.detail = message


class ValueRefused(InvalidRequest):
    """A value does not fit its data type (302) or names no identifier of the model (309)."""

    def __init__(self, message: str, err_code: int = DATA_TYPE_ERROR) -> None:
        super().__init__(message, err_code=err_code)
