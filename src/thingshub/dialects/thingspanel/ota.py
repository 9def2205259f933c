"""ThingsPanel's OTA wire: the inform a device gets on `ota/devices/inform/{device_number}`.

Rules:
- The inform is {"id": <task id>, "code": 200, "params": {"version",
  "size", "url", "signMethod", "sign", "module", "extData"}}, exactly as
  ThingsPanel's device protocol shows it; `sign` is the firmware's digest
  by the task's method (core/ota.py).
- Progress comes back on `ota/devices/progress` (reports.parse_progress).
"""

from __future__ import annotations

from typing import Any

from thingshub.core.messages import OtaInform
from thingshub.core.ota import sign_of


def inform_body(inform: OtaInform) -> dict[str, Any]:
    """The payload of `ota/devices/inform/{device_number}`, exactly as the spec shows."""
    firmware, sign_method = inform.firmware, inform.sign_method
    return {
        "id": inform.task_id,
        "code": 200,
        "params": {
            "version": firmware.version,
            "size": firmware.size,
            "url": inform.url,
            "signMethod": sign_method,
            "sign": sign_of(firmware, sign_method),
            "module": firmware.module,
            "extData": dict(firmware.ext_data),
        },
    }
