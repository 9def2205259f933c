"""OneNET's OTA for devices: what its HTTP API's steps do to a device of an OTA task.

The same tasks, packages and states as core/ota.py serve both families; this
module maps OneNET's words onto them (field-protocols §4.2).

Rules:
- Errors carry OneNET's `errno` as `err_code` (ERRNO names them); the HTTP
  boundary turns them into OneNET's answer.
- `type` 1 (module firmware) is a package whose module is `FOTA` (any
  case), 2 (MCU application) any other module.
- Versions are 1-20 characters of `[A-Za-z0-9_.-]` (errno 27 otherwise).
- status: 1 QUEUED/INFORMED, 2 IN_PROGRESS downloading, 3 IN_PROGRESS
  upgrading (after step 100 or 101), 4 SUCCEEDED, 5 FAILED or TIMED_OUT,
  6 CANCELED.
- step: 0-100 download progress (IN_PROGRESS; 100 = downloaded, upgrading),
  101 downloaded (upgrading; 21 when upgrading already), 102-107 and
  202-208 FAILED with their meaning, 201 SUCCEEDED. While upgrading only
  201-208 are taken (else 17); a final device answers 20 (22 if canceled);
  a device not informed yet 17; anything else is 24. The raw step is kept.
- A download of an informed device starts its upgrade (IN_PROGRESS).
- Range, OneNET's rules: `bytes=a-b` or bare `a-b`, `a-`, `-n`, leading
  zeros allowed; start >= size -> 0; end >= size -> size - 1; start > end
  -> start = 0; `-n` with n > size, or anything unreadable -> the whole file.
- Pure: time is passed in.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Final

from thingshub.core import ota
from thingshub.core.errors import Conflict, InvalidRequest, NotFound, ThingsHubError
from thingshub.core.model import OtaDevice

PROTOCOL: Final = "onenet"

OK, AUTH, BAD_PARAMS, OTHER_DEVICE, INTERNAL = 0, 1, 2, 4, 7
NO_TASK, TIMED_OUT, BAD_STATE, FINISHED, BAD_OPERATION = 11, 12, 17, 20, 21
CANCELED, UNKNOWN_STEP, BAD_VERSION = 22, 24, 27

#: errno -> OneNET's words for it.
ERRNO: Final[dict[int, str]] = {
    OK: "succ",
    AUTH: "auth failed",
    BAD_PARAMS: "invalid parameters",
    OTHER_DEVICE: "the task is another device's",
    INTERNAL: "internal error",
    NO_TASK: "no upgrade task",
    TIMED_OUT: "the task timed out",
    BAD_STATE: "invalid task state",
    FINISHED: "the task has finished",
    BAD_OPERATION: "invalid operation",
    CANCELED: "the task was canceled",
    UNKNOWN_STEP: "unknown step",
    BAD_VERSION: "invalid version format",
}

DOWNLOADED: Final = 101
SUCCEEDED_STEP: Final = 201
#: The failure steps and what they mean.
STEP_FAILURES: Final[dict[int, str]] = {
    102: "download failed: not enough space",
    103: "download failed: out of memory",
    104: "download failed: the request timed out",
    105: "download failed: low battery",
    106: "download failed: weak signal",
    107: "download failed: unknown error",
    202: "upgrade failed: low battery",
    203: "upgrade failed: out of memory",
    204: "upgrade failed: version mismatch",
    205: "upgrade failed: MD5 check failed",
    206: "upgrade failed: unknown error",
    207: "upgrade failed: too many retries",
    208: "upgrade failed: expired",
}

_VERSION = re.compile(r"[A-Za-z0-9_.-]{1,20}")
_RANGE = re.compile(r"([0-9]*)-([0-9]*)")


def error(kind: type[ThingsHubError], errno: int) -> ThingsHubError:
    """An error of the tree carrying `errno` and its words."""
    return kind(ERRNO[errno], err_code=errno, err_msg=ERRNO[errno])


def task_type(module: str) -> int:
    return 1 if module.upper() == "FOTA" else 2


def check_type(value: str | None) -> int:
    if value not in ("1", "2"):
        raise error(InvalidRequest, BAD_PARAMS)
    return int(value)


def check_version(value: object) -> str:
    if not isinstance(value, str) or not _VERSION.fullmatch(value):
        raise error(InvalidRequest, BAD_VERSION)
    return value


def upgrading(device: OtaDevice) -> bool:
    return device.state == ota.IN_PROGRESS and device.step in (100, DOWNLOADED)


def status(device: OtaDevice) -> int:
    if device.state in (ota.QUEUED, ota.INFORMED):
        return 1
    if device.state == ota.IN_PROGRESS:
        return 3 if upgrading(device) else 2
    if device.state == ota.SUCCEEDED:
        return 4
    return 6 if device.state == ota.CANCELED else 5


def check_final(device: OtaDevice) -> None:
    """Raise 20 (22 when canceled) for a device whose part has ended."""
    if device.state == ota.CANCELED:
        raise error(Conflict, CANCELED)
    if device.state in ota.FINAL:
        raise error(Conflict, FINISHED)


def downloading(device: OtaDevice, now_ms: int) -> OtaDevice:
    """The device after asking for its file (NotFound/Conflict when it may not)."""
    check_final(device)
    if device.state == ota.QUEUED:
        raise error(NotFound, NO_TASK)
    if device.state == ota.INFORMED:
        return replace(device, state=ota.IN_PROGRESS, desc="downloading", updated_at=now_ms)
    return device


def stepped(device: OtaDevice, step: int, now_ms: int) -> OtaDevice:
    """The device after it reported `step` (errors as the module rules say)."""
    check_final(device)
    known = 0 <= step <= DOWNLOADED or step in STEP_FAILURES or step == SUCCEEDED_STEP
    if not known:
        raise error(InvalidRequest, UNKNOWN_STEP)
    if device.state == ota.QUEUED:
        raise error(Conflict, BAD_STATE)
    if upgrading(device):
        if step == DOWNLOADED:
            raise error(Conflict, BAD_OPERATION)
        if step < 200:
            raise error(Conflict, BAD_STATE)
    if step == SUCCEEDED_STEP:
        return replace(
            device,
            state=ota.SUCCEEDED,
            step=step,
            desc=ota.SUCCEEDED_DESC,
            updated_at=now_ms,
            finished_at=now_ms,
        )
    if step in STEP_FAILURES:
        return replace(
            device,
            state=ota.FAILED,
            step=step,
            desc=STEP_FAILURES[step],
            updated_at=now_ms,
            finished_at=now_ms,
        )
    desc = "upgrading" if step >= 100 else f"downloading: {step}%"
    return replace(device, state=ota.IN_PROGRESS, step=step, desc=desc, updated_at=now_ms)


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The bytes (first, last) a `Range` asks for by OneNET's rules; None: the whole file."""
    if header is None or size <= 0:
        return None
    text = header.strip()
    text = text[6:] if text.lower().startswith("bytes=") else text
    match = _RANGE.fullmatch(text.strip())
    if match is None or match.group() == "-":
        return None
    first, last = match.groups()
    if not first:
        n = int(last)
        return None if n > size else _clamped(size - n, size - 1, size)
    return _clamped(int(first), int(last) if last else size - 1, size)


def _clamped(start: int, end: int, size: int) -> tuple[int, int]:
    start = 0 if start >= size else start
    end = size - 1 if end >= size else end
    return (0 if start > end else start), end
