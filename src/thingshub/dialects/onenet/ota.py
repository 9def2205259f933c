"""OneNET's OTA notice: what a device subscribed to `$sys/{pid}/{name}/ota/inform` gets.

Rules (field-protocols §4.1):
- The notice is a OneJSON request `{"id", "version": "1.0", "params":
  {"tid", "type", "target", "size", "md5", "url"}}`: `id` is the tid as a
  decimal string, `type` 1 for a `FOTA` package and 2 for any other,
  `url` the task's download link (the same as ThingsPanel's).
- Compact JSON, as every OneJSON message the platform sends.
- The device's answer on `ota/inform_reply`, `{"id", "code", "msg"}`, names
  the tid in `id` (as the notice gave it); `msg` is kept to `REPLY_MSG_MAX`
  characters. An answer that is no JSON object, or whose `id` is no tid,
  still reaches the service (tid None), which counts it.
"""

from __future__ import annotations

from typing import Any

from thingshub.core import jsontext
from thingshub.core.messages import OtaInform, OtaInformReply
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


#: How much of a device's `msg` is noted.
REPLY_MSG_MAX = 200


def parse_inform_reply(payload: bytes) -> OtaInformReply:
    try:
        body = jsontext.loads(payload)
    except jsontext.JsonError:
        body = None
    if not isinstance(body, dict):
        return OtaInformReply(None, None, "")
    ident, code, msg = body.get("id"), body.get("code"), body.get("msg")
    tid = int(ident) if isinstance(ident, str) and ident.isdecimal() and len(ident) < 19 else None
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    return OtaInformReply(tid, code, msg[:REPLY_MSG_MAX] if isinstance(msg, str) else "")
