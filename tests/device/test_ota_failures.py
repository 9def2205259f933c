"""OTA when things go wrong, against a real platform: a refused download is not retried
and is reported as a download failure (-2, OneNET's 107), a server that cannot be
reached is tried `attempts` times; OneNET's API refusing a malformed version (errno
27) and an address that is not the API raise `Rejected`; a notice that is not
one is ignored."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import RunningPlatform
from tests.device.conftest import free_port, register
from thingshub.device import Firmware, OneNetDevice, Rejected
from thingshub.device import ota as device_ota


def firmware(url: str) -> Firmware:
    return Firmware("7", "2.0", url, 10, "MD5", "0" * 32)


def test_failed_downloads_are_reported_as_such(hub: RunningPlatform) -> None:
    steps: list[tuple[int, str]] = []

    async def report(step: int, desc: str) -> None:
        steps.append((step, desc))

    async def scenario() -> None:
        refused = firmware(f"{hub.base_url}/ota/download/1/d1?token=forged")
        assert await device_ota.upgrade(refused, report, None) == device_ota.DOWNLOAD_FAILED
        assert steps[0] == (1, "downloading")
        assert steps[-1][0] == -2 and "HTTP 4" in steps[-1][1], steps

        steps.clear()
        nobody = firmware(f"http://127.0.0.1:{free_port()}/fw.bin")
        started = asyncio.get_running_loop().time()
        with pytest.raises(OSError, match="download failed"):
            await device_ota.download(nobody, report, attempts=2, retry_delay=0.05)
        assert asyncio.get_running_loop().time() - started >= 0.05 + 0.1  # tried twice

    asyncio.run(scenario())
    with pytest.raises(ValueError, match="not an OTA inform"):
        Firmware.from_thingspanel({"id": 1, "params": {"version": "2"}})


def test_onenet_api_refusals_raise_rejected(hub: RunningPlatform) -> None:
    creds = register(hub, "p1", "d1")

    async def scenario() -> None:
        dev = OneNetDevice("p1", "d1", creds.key, f"mqtt://127.0.0.1:{hub.mqtt_port}")
        ota = dev.on_ota(None, api_url=hub.base_url, version="not a version!")
        with pytest.raises(Rejected, match="invalid version format") as refused:
            await ota.check(2)
        assert refused.value.code == 27
        dev.ota_results.clear()
        ota.inform(b"not a notice")  # ignored: nothing spawned, nothing raised
        assert not dev._tasks
        elsewhere = OneNetDevice("p1", "d1", creds.key).on_ota(  # an address that is no OTA API
            None, api_url=f"{hub.base_url}/console", version="1.0", prefix="x"
        )
        with pytest.raises(Rejected):
            await elsewhere.call("GET", "/version")

    asyncio.run(scenario())
