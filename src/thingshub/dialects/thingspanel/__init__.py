"""ThingsPanel direct-device MQTT: password logins and the `devices/...` topics.

The dialect object wires the parts: topics.py (topic rights) and the
message translations below. Logins use the user name and password issued
at device creation; any credentials not in another dialect's form are
taken as such, so this dialect comes last among the logins.
"""

from __future__ import annotations

from thingshub.core.errors import Unauthorized
from thingshub.core.jsontext import dumps
from thingshub.core.messages import (
    AttributesGet,
    AttributesReport,
    CallAnswer,
    Control,
    DeviceCall,
    DeviceRef,
    EventReport,
    OtaInform,
    OtaProgress,
    ReportReply,
    TelemetryReport,
)
from thingshub.core.model import Device
from thingshub.dialects.port import Login, PasswordCheck, Wire
from thingshub.dialects.thingspanel import topics

NAME = "thingspanel"

_ANSWERS = {
    "devices/command/response/": "command",
    "devices/attributes/set/response/": "attributes_set",
}


class ThingsPanel:
    name = NAME

    # ------------------------------------------------------------ login

    def login(self, client_id: str, username: str | None, password: bytes | None) -> Login | None:
        if username is None or password is None:
            return None
        try:
            text = password.decode()
        except UnicodeDecodeError:
            raise Unauthorized("password is not UTF-8") from None
        return Login(NAME, ("u", username), text)

    def verify(self, login: Login, device: Device, now_s: int, password_ok: PasswordCheck) -> None:
        if not isinstance(login.secret, str) or not password_ok(device, login.secret):
            raise Unauthorized("wrong user name or password")

    # ------------------------------------------------------------ topics

    def owns(self, topic: str) -> bool:
        return topic.startswith(topics.ROOTS)

    def may_publish(self, ref: DeviceRef, topic: str) -> bool:
        return topics.may_publish(ref.device_number, topic)

    def may_subscribe(self, ref: DeviceRef, topic_filter: str) -> bool:
        return topics.may_subscribe(ref.device_number, topic_filter)

    def topics(self, ref: DeviceRef, kind: type) -> tuple[str, ...]:
        if kind is OtaInform:
            return (f"ota/devices/inform/{ref.device_number}",)
        return ()

    # ------------------------------------------------------------ messages

    def decode(self, ref: DeviceRef, topic: str, payload: bytes, now_ms: int) -> object | None:
        """Message ids are one topic level; a topic with more levels is not ours."""
        if topic == "devices/telemetry":
            return TelemetryReport(payload)
        if topic == "ota/devices/progress":
            return OtaProgress(payload)
        for prefix, kind in _ANSWERS.items():
            if topic.startswith(prefix):
                message_id = topic[len(prefix) :]
                return CallAnswer(kind, message_id, payload) if _one_level(message_id) else None
        if topic.startswith("devices/attributes/"):
            message_id = topic[len("devices/attributes/") :]
            return AttributesReport(message_id, payload) if _one_level(message_id) else None
        if topic.startswith("devices/event/"):
            message_id = topic[len("devices/event/") :]
            return EventReport(message_id, payload) if _one_level(message_id) else None
        return None

    def encode(self, ref: DeviceRef, message: object) -> Wire | None:
        dn = ref.device_number
        if isinstance(message, DeviceCall):
            if message.kind == "command":
                return [(f"devices/command/{dn}/{message.message_id}", dumps(message.body))]
            return [(f"devices/attributes/set/{dn}/{message.message_id}", dumps(message.body))]
        if isinstance(message, Control):
            return [(f"devices/telemetry/control/{dn}", dumps(message.values))]
        if isinstance(message, AttributesGet):
            return [(f"devices/attributes/get/{dn}", dumps({"keys": message.keys}))]
        if isinstance(message, ReportReply):
            topic = f"devices/{message.kind}/response/{dn}/{message.message_id}"
            return [(topic, dumps(message.body))]
        if isinstance(message, OtaInform):
            return [(f"ota/devices/inform/{dn}", dumps(message.body))]
        return None


def _one_level(message_id: str) -> bool:
    return bool(message_id) and "/" not in message_id
