"""Firmware upgrades as a device performs them, whatever protocol informed it.

Rules (docs/protocols.md section 4.8):
- `upgrade(firmware, report, install)` downloads the file over HTTP(S),
  resuming with `Range: bytes=N-` after a broken transfer (up to `attempts`
  tries), checks its size and digest, calls the user's `install(firmware,
  data)` hook and reports each stage through `report(step, desc)`: 1-90 while
  downloading (every 10%), 95 before installing, 100 once installed; -2 when
  the download failed, -3 when the digest or size is wrong, -4 when the
  install hook raised. It returns the final step.
- A protocol only translates: ThingsPanel's inform becomes a `Firmware`
  (`Firmware.from_thingspanel`) and its `report` publishes on
  `ota/devices/progress`; OneNET's check answer becomes one too, its
  `report` posts OneNET's steps and its download carries the device's token
  (`authorization`), in device/onenet_ota.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("thingshub.device")

Report = Callable[[int, str], Awaitable[None]]
Install = Callable[["Firmware", bytes], Any]

DOWNLOAD_FAILED = -2
VERIFY_FAILED = -3
INSTALL_FAILED = -4


@dataclass(frozen=True, slots=True)
class Firmware:
    """One upgrade offered to the device."""

    task_id: str
    version: str
    url: str
    size: int
    sign_method: str  # "MD5" or "SHA256"
    sign: str  # lowercase hex digest
    module: str = "default"
    ext_data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_thingspanel(cls, inform: dict[str, Any]) -> Firmware:
        """The firmware of a ThingsPanel inform; ValueError when it is not one."""
        try:
            params = inform["params"]
            return cls(
                task_id=str(inform["id"]),
                version=str(params["version"]),
                url=str(params["url"]),
                size=int(params["size"]),
                sign_method=str(params["signMethod"]).upper(),
                sign=str(params["sign"]).lower(),
                module=str(params["module"]),
                ext_data=dict(params.get("extData") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an OTA inform: {exc!r}") from None

    def digest(self, data: bytes) -> str:
        method = hashlib.md5 if self.sign_method == "MD5" else hashlib.sha256
        return method(data).hexdigest()


async def download(
    firmware: Firmware,
    report: Report,
    *,
    attempts: int = 5,
    ssl_context: ssl.SSLContext | None = None,
    retry_delay: float = 0.5,
    authorization: Callable[[], str] | None = None,
) -> bytes:
    """The file, resumed with Range after a broken transfer; raises OSError when every
    attempt failed. `authorization` gives each request's `Authorization` header (a
    fresh token: a long download outlives none)."""
    import httpx

    data = bytearray()
    reported = 0
    failure: Exception | None = None
    verify: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
    async with httpx.AsyncClient(timeout=30, verify=verify) as http:
        for attempt in range(attempts):
            headers = {"Range": f"bytes={len(data)}-"} if data else {}
            if authorization is not None:
                headers["Authorization"] = authorization()
            try:
                async with http.stream("GET", firmware.url, headers=headers) as response:
                    if response.status_code not in (200, 206):
                        body = (await response.aread())[:200].decode(errors="replace")
                        raise OSError(f"HTTP {response.status_code}: {body}")
                    if response.status_code == 200 and data:  # the server ignored Range
                        data.clear()
                    async for chunk in response.aiter_raw():
                        data += chunk
                        done = len(data) * 90 // max(firmware.size, 1)
                        if done >= reported + 10 and done < 90:
                            reported = done - done % 10
                            await report(max(reported, 1), "downloading")
                if len(data) >= firmware.size:
                    return bytes(data)
                failure = OSError(f"transfer ended at {len(data)} of {firmware.size} bytes")
            except (httpx.HTTPError, OSError) as exc:
                failure = exc
                if isinstance(exc, OSError) and str(exc).startswith("HTTP 4"):
                    break  # a refused download (a spent or forged link) is not retried
            log.info("OTA %s: attempt %d: %s", firmware.task_id, attempt + 1, failure)
            await asyncio.sleep(retry_delay * (attempt + 1))
    raise OSError(f"download failed: {failure}")


async def upgrade(
    firmware: Firmware,
    report: Report,
    install: Install | None,
    *,
    attempts: int = 5,
    ssl_context: ssl.SSLContext | None = None,
    authorization: Callable[[], str] | None = None,
) -> int:
    """Download, verify, install, reporting all the way; the final step sent."""
    await report(1, "downloading")
    try:
        data = await download(
            firmware,
            report,
            attempts=attempts,
            ssl_context=ssl_context,
            authorization=authorization,
        )
    except OSError as exc:
        await report(DOWNLOAD_FAILED, str(exc))
        return DOWNLOAD_FAILED
    digest = firmware.digest(data)
    if len(data) != firmware.size or digest != firmware.sign:
        why = f"{firmware.sign_method} {digest} of {len(data)} bytes, expected {firmware.sign}"
        await report(VERIFY_FAILED, f"verification failed: {why}")
        return VERIFY_FAILED
    await report(95, "installing")
    if install is not None:
        try:
            result = install(firmware, data)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            await report(INSTALL_FAILED, f"install failed: {exc}")
            return INSTALL_FAILED
    await report(100, f"upgraded to {firmware.version}")
    return 100
