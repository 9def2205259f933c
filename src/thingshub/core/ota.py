"""OTA firmware upgrades: the per-device state machine, download tokens, rollout pace.

Rules (docs/protocols.md section 4, "OTA steps"):
- A device of a task goes QUEUED (not yet informed) -> INFORMED -> IN_PROGRESS
  (steps 1-99) -> SUCCEEDED (step 100) or FAILED (a negative step; `desc` is
  its meaning, FAILURES below), or CANCELED (its task was
  canceled, or the device deleted) or TIMED_OUT (no final report within the
  task's `device_timeout_s` of being informed). A final state never changes.
- Progress is taken from INFORMED and IN_PROGRESS devices only: a report
  whose module is not that of a running task of the device, whose step is
  not 1..100 or -1..-4, from a device whose task is not running, or from a
  device not informed yet changes nothing; it is counted under one of
  IGNORE_REASONS. A device's own words are kept in `detail`.
- A task is RUNNING until every device is final (COMPLETED) or it is
  canceled (CANCELED).
- Download tokens: HMAC-SHA256 with the server's secret over the task id,
  the device name, the firmware id and the expiry (Unix seconds), as
  `<expiry>.<hex>`. A token is good for exactly that task, device and file
  until its expiry, compared in constant time; anything else is Forbidden.
- Rollout: at most `per_minute` devices of a task are informed per minute (a
  token bucket holding at most one second's worth, at least one device; it
  starts with one). None means no limit.
- Time is always passed in (ms); nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Final

from thingshub.core import names
from thingshub.core.errors import Forbidden, InvalidRequest
from thingshub.core.model import Firmware, OtaDevice

# ---------------------------------------------------------------- states

QUEUED: Final = "QUEUED"
INFORMED: Final = "INFORMED"
IN_PROGRESS: Final = "IN_PROGRESS"
SUCCEEDED: Final = "SUCCEEDED"
FAILED: Final = "FAILED"
CANCELED: Final = "CANCELED"
TIMED_OUT: Final = "TIMED_OUT"
STATES: Final = (QUEUED, INFORMED, IN_PROGRESS, SUCCEEDED, FAILED, CANCELED, TIMED_OUT)
FINAL: Final = frozenset({SUCCEEDED, FAILED, CANCELED, TIMED_OUT})
#: States in which a device takes progress reports (and may download).
ACTIVE: Final = frozenset({INFORMED, IN_PROGRESS})

# Task statuses (CANCELED is shared with the device state of the same name).
RUNNING: Final = "RUNNING"
COMPLETED: Final = "COMPLETED"
TASK_STATUSES: Final = (RUNNING, COMPLETED, CANCELED)

SIGN_METHODS: Final = ("MD5", "SHA256")
DEFAULT_SIGN_METHOD: Final = "SHA256"

DEFAULT_DEVICE_TIMEOUT_S: Final = 3600
MIN_DEVICE_TIMEOUT_S: Final = 1
MAX_DEVICE_TIMEOUT_S: Final = 7 * 86400
MAX_ROLLOUT_PER_MINUTE: Final = 1_000_000
MAX_TASK_DEVICES: Final = 100_000

MAX_VERSION: Final = 64
MAX_FIRMWARE_NAME: Final = 128
MAX_EXT_DATA: Final = 8 * 1024  # bytes of JSON: the inform payload must stay small
#: The largest number in ext_data (JSON's safe integers: every device reads them alike).
MAX_SAFE: Final = 2**53 - 1

# Why a progress report changed nothing (metrics labels).
IGNORED_INVALID: Final = "invalid_report"
IGNORED_BAD_STEP: Final = "bad_step"
IGNORED_NO_TASK: Final = "no_task"
IGNORED_UNKNOWN_MODULE: Final = "unknown_module"
IGNORED_NOT_INFORMED: Final = "not_informed"
IGNORE_REASONS: Final = (
    IGNORED_INVALID,
    IGNORED_BAD_STEP,
    IGNORED_NO_TASK,
    IGNORED_UNKNOWN_MODULE,
    IGNORED_NOT_INFORMED,
)

CANCELED_DESC: Final = "the task was canceled"
DELETED_DESC: Final = "the device was deleted"
SUCCEEDED_DESC: Final = "upgrade succeeded"

_VERSION = re.compile(r"[\x21-\x7e]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def new_id(now_ms: int) -> str:
    """A task or firmware id: the creation time (hex ms) then randomness, so ids
    sort by creation (callers give each id of theirs a later ms than the last)."""
    return f"{now_ms:012x}{secrets.token_hex(4)}"


class IdClock:
    """Milliseconds for ids that keep increasing, even within one ms."""

    def __init__(self) -> None:
        self.last = 0

    def next(self, now_ms: int) -> int:
        self.last = max(now_ms, self.last + 1)
        return self.last


# ---------------------------------------------------------------- the device state machine


def queued(task_id: str, name: str, now_ms: int, tid: int | None = None) -> OtaDevice:
    return OtaDevice(task_id, name, QUEUED, None, "", None, None, now_ms, None, tid)


def informed(device: OtaDevice, now_ms: int) -> OtaDevice:
    """The device was told of its task (again, if it was INFORMED: the first time counts)."""
    if device.state not in (QUEUED, INFORMED):
        raise ValueError(f"a device in state {device.state} is not informed")
    return replace(
        device,
        state=INFORMED,
        informed_at=device.informed_at if device.informed_at is not None else now_ms,
        updated_at=now_ms,
    )


#: Meaning of the negative OTA steps.
FAILURES: Final[dict[int, str]] = {
    -1: "upgrade failed",
    -2: "download failed",
    -3: "verification failed",
    -4: "flash failed",
}


@dataclass(frozen=True, slots=True)
class Progress:
    """One `ota/devices/progress` report: step 1..100 (percent) or -1..-4 (FAILURES)."""

    step: int
    desc: str
    module: str

    @property
    def succeeded(self) -> bool:
        return self.step == 100

    @property
    def failed(self) -> bool:
        return self.step < 0


def progressed(device: OtaDevice, progress: Progress, now_ms: int) -> OtaDevice:
    """The device after a report (the caller checked it is ACTIVE and of its module)."""
    if device.state not in ACTIVE:
        raise ValueError(f"a device in state {device.state} takes no progress")
    detail = progress.desc or None
    if progress.step == 100:
        return replace(
            device,
            state=SUCCEEDED,
            step=100,
            desc=SUCCEEDED_DESC,
            detail=detail,
            updated_at=now_ms,
            finished_at=now_ms,
        )
    if progress.step < 0:
        return replace(
            device,
            state=FAILED,
            step=progress.step,
            desc=FAILURES[progress.step],
            detail=detail,
            updated_at=now_ms,
            finished_at=now_ms,
        )
    return replace(
        device,
        state=IN_PROGRESS,
        step=progress.step,
        desc=progress.desc,
        detail=detail,
        updated_at=now_ms,
    )


def ended(device: OtaDevice, state: str, desc: str, now_ms: int) -> OtaDevice:
    """CANCELED or TIMED_OUT (a device already final stays as it is)."""
    if state not in (CANCELED, TIMED_OUT):
        raise ValueError(f"{state} is not an end imposed by the platform")
    if device.state in FINAL:
        return device
    return replace(device, state=state, desc=desc, updated_at=now_ms, finished_at=now_ms)


def timed_out(device: OtaDevice, timeout_s: int, now_ms: int) -> OtaDevice:
    return ended(device, TIMED_OUT, f"no final report within {timeout_s} s of the inform", now_ms)


def time_left_ms(device: OtaDevice, timeout_s: int, now_ms: int) -> int | None:
    """What is left of an informed device's time (None: not under way, or not
    informed yet), between none and all of it: a wall clock set back does not
    give a device more than its whole time, nor one set forward less than none."""
    if device.state not in ACTIVE or device.informed_at is None:
        return None
    whole = timeout_s * 1000
    return min(whole, max(0, device.informed_at + whole - now_ms))


def task_status_after(devices: Iterable[OtaDevice]) -> str:
    """RUNNING while a device is not final, else COMPLETED."""
    return COMPLETED if all(d.state in FINAL for d in devices) else RUNNING


def counts(devices: Iterable[OtaDevice]) -> dict[str, int]:
    """How many devices are in each state (every state listed, zeros included)."""
    out = dict.fromkeys(STATES, 0)
    for d in devices:
        out[d.state] += 1
    return out


def ignore_reason(error: InvalidRequest) -> str:
    """The metrics label of a progress report its dialect refused."""
    return IGNORED_BAD_STEP if error.message.startswith("step") else IGNORED_INVALID


# ---------------------------------------------------------------- checking what applications send


def check_version(value: object) -> str:
    if not isinstance(value, str) or not _VERSION.fullmatch(value):
        raise InvalidRequest(
            f"version is required: 1 to {MAX_VERSION} printable characters without spaces"
        )
    return value


def check_module(value: object) -> str:
    return names.check("module", value)


def check_firmware_name(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_FIRMWARE_NAME or _CONTROL.search(value):
        raise InvalidRequest(
            f"name must be at most {MAX_FIRMWARE_NAME} characters, none of them a control"
        )
    return value


def check_ext_data(value: object, size: int) -> dict[str, Any]:
    """`extData` of the inform: a JSON object (given as `value`; `size` its bytes)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest("ext_data must be a JSON object")
    if size > MAX_EXT_DATA:
        raise InvalidRequest(f"ext_data is larger than {MAX_EXT_DATA} bytes")
    if not _safe_numbers(value):
        raise InvalidRequest(f"ext_data numbers must be within -{MAX_SAFE} to {MAX_SAFE}")
    return value


def _safe_numbers(value: object) -> bool:
    """Whether every number in `value` is within ±MAX_SAFE (stored and sent as it is)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool | str) or item is None:
            continue
        if isinstance(item, int | float):
            if not -MAX_SAFE <= item <= MAX_SAFE:
                return False
        elif isinstance(item, dict):
            stack.extend(item.values())
        else:
            assert isinstance(item, list)  # nothing else is JSON
            stack.extend(item)
    return True


def check_sign_method(value: object) -> str:
    if value is None:
        return DEFAULT_SIGN_METHOD
    if not isinstance(value, str) or value.upper() not in SIGN_METHODS:
        raise InvalidRequest("sign_method must be MD5 or SHA256")
    return value.upper()


def check_rollout(value: object) -> int | None:
    """Devices informed per minute at most (None: all at once)."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 1 <= value <= MAX_ROLLOUT_PER_MINUTE
    ):
        raise InvalidRequest(
            f"rollout_per_minute must be a whole number from 1 to {MAX_ROLLOUT_PER_MINUTE}"
        )
    return value


def check_device_timeout(value: object) -> int:
    if value is None:
        return DEFAULT_DEVICE_TIMEOUT_S
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not MIN_DEVICE_TIMEOUT_S <= value <= MAX_DEVICE_TIMEOUT_S
    ):
        raise InvalidRequest(
            f"device_timeout_s must be a whole number of seconds from {MIN_DEVICE_TIMEOUT_S}"
            f" to {MAX_DEVICE_TIMEOUT_S}"
        )
    return value


def check_targets(devices: object, everything: object) -> list[str] | None:
    """The device names a task targets, in order and without repeats; None for all."""
    if everything is not None and not isinstance(everything, bool):
        raise InvalidRequest("all must be true or false")
    if everything is True:
        if devices is not None:
            raise InvalidRequest('give either "devices" or "all": true, not both')
        return None
    if devices is None:
        raise InvalidRequest('say which devices: "devices": [names] or "all": true')
    if not isinstance(devices, list) or not devices:
        raise InvalidRequest("devices must be a non-empty list of device names")
    if len(devices) > MAX_TASK_DEVICES:
        raise InvalidRequest(f"a task targets at most {MAX_TASK_DEVICES} devices")
    return list(dict.fromkeys(names.check("devices[]", d) for d in devices))


# ---------------------------------------------------------------- the inform


def sign_of(firmware: Firmware, method: str) -> str:
    return firmware.md5 if method == "MD5" else firmware.sha256


# ---------------------------------------------------------------- download tokens


def _mac(secret: bytes, task_id: str, device: str, firmware_id: str, expires_s: int) -> str:
    message = f"ota-download\n{task_id}\n{device}\n{firmware_id}\n{expires_s}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign_token(secret: bytes, task_id: str, device: str, firmware_id: str, expires_s: int) -> str:
    return f"{expires_s}.{_mac(secret, task_id, device, firmware_id, expires_s)}"


def verify_token(
    secret: bytes, token: str | None, task_id: str, device: str, firmware_id: str, now_ms: int
) -> None:
    """Return if `token` is good for this download now; Forbidden otherwise."""
    if not token:
        raise Forbidden("a download token is required")
    expiry, sep, mac = token.partition(".")
    if not sep or not expiry.isdigit() or len(expiry) > 12:
        raise Forbidden("the download token is malformed")
    expected = _mac(secret, task_id, device, firmware_id, int(expiry))
    if not hmac.compare_digest(expected.encode(), mac.encode()):
        raise Forbidden("the download token is not valid for this download")
    if now_ms >= int(expiry) * 1000:
        raise Forbidden("the download token has expired")


def token_expiry(informed_at_ms: int, timeout_s: int, max_lifetime_s: int) -> int:
    """The expiry (Unix s) of a device's token: the end of its time to finish,
    at most `max_lifetime_s` after the inform. Its task's end also ends it."""
    return (informed_at_ms // 1000) + min(timeout_s, max_lifetime_s) + 1


# ---------------------------------------------------------------- rollout pace


class Rollout:
    """How many devices of a task may be informed now (see the module rules)."""

    def __init__(self, per_minute: int | None, now_ms: int) -> None:
        self.per_minute = per_minute
        self.capacity = 1.0 if per_minute is None else max(1.0, per_minute / 60)
        self._tokens = 1.0
        self._at = now_ms

    def _refill(self, per_minute: int, now_ms: int) -> None:
        if now_ms > self._at:
            gained = (now_ms - self._at) * per_minute / 60_000
            self._tokens = min(self.capacity, self._tokens + gained)
            self._at = now_ms

    def available(self, now_ms: int) -> bool:
        if self.per_minute is None:
            return True
        self._refill(self.per_minute, now_ms)
        return self._tokens >= 1 - 1e-9

    def take(self, now_ms: int) -> None:
        if self.per_minute is None:
            return
        self._refill(self.per_minute, now_ms)
        self._tokens = max(0.0, self._tokens - 1)
