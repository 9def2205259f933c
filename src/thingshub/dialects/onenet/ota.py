"""OneNET's OTA notice: what a device subscribed to `$sys/{pid}/{name}/ota/inform` gets.

Rules (field-protocols §4.1):
- The notice is a OneJSON request `{"id", "version": "1.0", "params":
  {"tid", "type", "target", "size", "md5", "url"}}`: `id` is the tid as a
  decimal string, `type` 1 for a `FOTA` package and 2 for any other,
  `url` the task's download link (the same as ThingsPanel's).
- Compact JSON, as every OneJSON message the platform sends.
"""

from __future__ import annotations

from typing import Any

from thingshub.core.messages import OtaInform
from thingshub.core.onenet_ota import task_type


def inform_body(inform: OtaInform) -> dict[str, Any]:
    firmware = inform.firmware
    return {
        "id": str(inform.tid),
        "version": "1.0",
        "params": {
            "tid": inform.tid,
            "type": task_type(firmware.module),
            "target": firmware.version,
            "size": firmware.size,
            "md5": firmware.md5,
            "url": inform.url,
        },
    }
