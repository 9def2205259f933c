"""OneNET's OTA as a OneNET device performs it: the HTTP API, set off by the MQTT notice.

Rules (docs/protocols.md section 7.3):
- `OneNetDevice.on_ota(install, api_url=..., version=...)` subscribes to
  `$sys/{pid}/{name}/ota/inform` and, after every connect (when
  `check_on_connect`), reports its versions (`POST .../version`) and checks
  for a task of each type it knows a version of, as a OneNET device does at
  boot. A notice checks for a task of the notice's type and answers on
  `ota/inform_reply`.
- Versions: `version` is the application's (`s_version`, type 2),
  `module_version` the module firmware's (`f_version`, type 1); a notice of
  type 1 on a device that has no module version checks with "0". A
  successful upgrade makes the target the device's version of that type.
- A task found is carried out once (a task in hand is not started again):
  ota.upgrade downloads `{api}/{pid}/{name}/{tid}/download` with the
  device's token (resuming with Range), checks size and MD5, calls the
  install hook and reports each stage as a OneNET step on `.../{tid}/status`:
  download progress 1-99, 101 downloaded (before installing), 201 upgraded;
  107 when the download failed, 205 when the digest or size is wrong, 206
  when the install hook raised (STEPS).
- Every request carries a fresh token (`OneNetDevice.token`); an answer
  whose `errno` is not 0 raises `Rejected(errno, error)`, which ends the
  upgrade in hand (a task canceled meanwhile answers 22): the server has
  the last word on the task.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from typing import Any, Final, Protocol

from thingshub.device import ota
from thingshub.device.client import MqttClient, Rejected

log = logging.getLogger("thingshub.device")

NO_TASK: Final = 11
#: ota.upgrade's final steps -> OneNET's steps.
STEPS: Final[dict[int, int]] = {
    95: 101,  # downloaded and verified, installing
    100: 201,  # upgraded
    ota.DOWNLOAD_FAILED: 107,  # download failed: unknown error
    ota.VERIFY_FAILED: 205,  # upgrade failed: MD5 check failed
    ota.INSTALL_FAILED: 206,  # upgrade failed: unknown error
}


def onenet_step(step: int) -> int:
    """The OneNET step of one of ota.upgrade's: progress 1-90 becomes 1-99."""
    if step in STEPS:
        return STEPS[step]
    return min(99, max(1, step * 100 // 90))


class Owner(Protocol):
    """What of its `OneNetDevice` the OTA part uses (onenet.py imports this module)."""

    product_id: str
    name: str
    prefix: str
    timeout: float
    client: MqttClient
    ota_results: dict[str, int]

    def token(self) -> str: ...

    def spawn(self, work: Awaitable[Any]) -> None: ...


class OneNetOta:
    """The OTA part of one OneNET device: its versions, its checks, its upgrades."""

    def __init__(
        self,
        device: Owner,
        install: ota.Install | None,
        api_url: str,
        version: str,
        module_version: str | None,
        prefix: str,
    ) -> None:
        self.device = device
        self.install = install
        self.base = f"{api_url.rstrip('/')}/{prefix.strip('/')}/{device.product_id}/{device.name}"
        #: The versions the device runs, by OneNET task type (1 module, 2 application).
        self.versions: dict[int, str] = {2: version}
        if module_version is not None:
            self.versions[1] = module_version
        self._in_hand: set[int] = set()
        self._checking = asyncio.Lock()

    # ---------------------------------------------------------------- the HTTP API

    async def call(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        """One request of the API; its `data` (raises `Rejected` unless errno is 0)."""
        import httpx

        headers = {"Authorization": self.device.token()}
        verify = self.device.client.ssl_context or True
        async with httpx.AsyncClient(timeout=self.device.timeout, verify=verify) as http:
            r = await http.request(
                method, self.base + path, headers=headers, json=body, params=query or None
            )
        try:
            answer = r.json()
        except ValueError:
            raise Rejected(r.status_code, r.text[:200]) from None
        if answer.get("errno") != 0:
            raise Rejected(answer.get("errno", "?"), str(answer.get("error", "")))
        return answer.get("data")

    async def report_versions(self) -> None:
        body = {"f_version": self.versions.get(1), "s_version": self.versions[2]}
        await self.call("POST", "/version", {k: v for k, v in body.items() if v is not None})

    async def check(self, kind: int) -> dict[str, Any] | None:
        """The task of type `kind` for the version the device runs, None when there is none."""
        try:
            data = await self.call("GET", "/check", type=kind, version=self.versions.get(kind, "0"))
        except Rejected as exc:
            if exc.code == NO_TASK:
                return None
            raise
        return dict(data)

    # ---------------------------------------------------------------- upgrades

    async def after_connect(self) -> None:
        await self.report_versions()
        for kind in sorted(self.versions):
            await self.check_and_upgrade(kind)

    def inform(self, payload: bytes) -> None:
        """The MQTT notice: answer it, then check for a task of its type."""
        try:
            body = json.loads(payload)
            kind = int(body["params"]["type"])
        except (ValueError, KeyError, TypeError):
            log.info("device %s: not an OTA notice: %r", self.device.name, payload[:200])
            return
        reply = {"id": str(body.get("id", "")), "code": 200, "msg": "succ"}
        topic = self.device.prefix + "ota/inform_reply"
        d = self.device
        d.spawn(d.client.publish(topic, json.dumps(reply).encode(), 0, d.timeout))
        d.spawn(self.check_and_upgrade(1 if kind == 1 else 2))

    async def check_and_upgrade(self, kind: int) -> int | None:
        """Check for a task of type `kind` and carry it out; the final step of
        ota.upgrade (100 upgraded, negative failed), None when there was nothing to do."""
        async with self._checking:  # a notice and the boot check arrive together
            task = await self.check(kind)
            if task is None or int(task["tid"]) in self._in_hand:
                return None
            tid = int(task["tid"])
            self._in_hand.add(tid)
        firmware = ota.Firmware(
            task_id=str(tid),
            version=str(task["target"]),
            url=f"{self.base}/{tid}/download",
            size=int(task["size"]),
            sign_method="MD5",
            sign=str(task["md5"]).lower(),
            module="FOTA" if kind == 1 else "default",
        )

        async def report(step: int, _desc: str) -> None:
            await self.call("POST", f"/{tid}/status", {"step": onenet_step(step)})

        d = self.device
        step = await ota.upgrade(
            firmware,
            report,
            self.install,
            ssl_context=d.client.ssl_context,
            authorization=d.token,
        )
        if step == 100:
            self.versions[kind] = firmware.version
        d.ota_results[firmware.task_id] = step
        return step
