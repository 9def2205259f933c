"""The one error tree of ThingsHub.

    ThingsHubError                 base; `message` is a sentence for humans
    ├── InvalidRequest             a request breaks a rule (400)
    ├── Unauthorized               missing or wrong credentials (401)
    ├── Forbidden                  valid credentials, not allowed (403)
    ├── NotFound                   no such product, device, image, ... (404)
    ├── Conflict                   the state forbids it (409)
    │   ├── AlreadyExists          a unique name is taken
    │   └── VersionConflict        optimistic version check failed
    ├── DeviceOffline              must reach a device that is not connected (409)
    │   └── NotSubscribed          ... connected, but not listening where it must (409)
    ├── CommandTimeout             the device did not answer in time (504)
    ├── BadDeviceAnswer            the device answered something unusable (502)
    │   └── AnswerTooLarge         ... longer than the protocol allows (400, OneNET 99)
    ├── LimitExceeded              a size or rate limit (413 / 429)
    │   └── TooLarge               ... a size: the body is larger than allowed (413)
    └── Unavailable                a dependency failed (500 / 503)
        └── StorageUnreachable     ... the database is down or its disk full: it passes (503)

Rules:
- Code raises these by meaning, never an HTTP status or a protocol code.
- `err_code` carries a protocol's own code when the rule that failed has one
  (OneNET image 160-167, command 99-113, ThingsPanel's errcode strings);
  each boundary (HTTP, OneNET, ThingsPanel, MQTT) maps errors to its wire
  in one table of its own.
"""

from __future__ import annotations


class ThingsHubError(Exception):
    def __init__(
        self, message: str, *, err_code: int | str | None = None, err_msg: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.err_code = err_code
        self.err_msg = err_msg


class InvalidRequest(ThingsHubError):
    pass


class Unauthorized(ThingsHubError):
    pass


class Forbidden(ThingsHubError):
    pass


class NotFound(ThingsHubError):
    pass


class Conflict(ThingsHubError):
    pass


class AlreadyExists(Conflict):
    pass


class VersionConflict(Conflict):
    pass


class DeviceOffline(ThingsHubError):
    pass


class NotSubscribed(DeviceOffline):
    pass


class CommandTimeout(ThingsHubError):
    pass


class BadDeviceAnswer(ThingsHubError):
    pass


class AnswerTooLarge(BadDeviceAnswer):
    pass


class LimitExceeded(ThingsHubError):
    pass


class TooLarge(LimitExceeded):
    pass


class Unavailable(ThingsHubError):
    pass


class StorageUnreachable(Unavailable):
    """The database cannot be reached or written for now (stopped, connection lost,
    disk full): a fault of the world that passes, not of the request. Writes of
    device reports wait for it to pass (storage/sql/batch.py); the rest fail fast."""
