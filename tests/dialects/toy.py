"""A device protocol that exists only in the tests: proof that a dialect plugs in
through the registry, with no change anywhere in `src/`.

The "toy" protocol:
- Login: user name `toy:{product}/{device}`, password the device key (base64),
  any client id.
- A device publishes a bare number on `toy/{product}/{device}/temp` (stored as
  telemetry `temp`); anything else there is refused and counted.
- Calls reach it on `toy/{product}/{device}/call/{id}`; it answers on
  `toy/{product}/{device}/answer/{id}` with any bytes (at most 16).
- It may subscribe only under its own `toy/{product}/{device}/`.
"""

from __future__ import annotations

import hmac

from thingshub.core.commands import AnswerLimit
from thingshub.core.errors import InvalidRequest, Unauthorized
from thingshub.core.messages import (
    AnswerVerdict,
    Call,
    CallAnswer,
    DeviceRef,
    ReportRefused,
    TelemetryReport,
)
from thingshub.core.model import Device, Point
from thingshub.core.topics import filter_within
from thingshub.dialects.port import Login, PasswordCheck, Wire

NAME = "toy"
LIMIT = AnswerLimit(16, 1, "answer too long")


def prefix(ref: DeviceRef) -> str:
    return f"toy/{ref.product_id}/{ref.name}/"


class Toy:
    name = NAME
    open_topics: frozenset[str] = frozenset()

    def login(self, client_id: str, username: str | None, password: bytes | None) -> Login | None:
        if username is None or not username.startswith("toy:") or password is None:
            return None
        product_id, _, name = username[len("toy:") :].partition("/")
        return Login(NAME, ("d", product_id, name), password)

    def verify(self, login: Login, device: Device, now_s: int, password_ok: PasswordCheck) -> None:
        if not hmac.compare_digest(login.secret, device.key.encode()):
            raise Unauthorized("wrong toy key")

    def owns(self, topic: str) -> bool:
        return topic.startswith("toy/")

    def may_publish(self, ref: DeviceRef, topic: str) -> bool:
        own = prefix(ref)
        return topic == own + "temp" or (
            topic.startswith(own + "answer/") and "/" not in topic[len(own + "answer/") :]
        )

    def may_subscribe(self, ref: DeviceRef, topic_filter: str) -> bool:
        return filter_within(topic_filter, prefix(ref) + "#")

    def topics(self, ref: DeviceRef, kind: type) -> tuple[str, ...]:
        return (prefix(ref) + "call/+",) if kind is Call else ()

    def decode(self, ref: DeviceRef, topic: str, payload: bytes, now_ms: int) -> object | None:
        own = prefix(ref)
        if topic == own + "temp":
            try:
                value = float(payload.decode())
            except (UnicodeDecodeError, ValueError):
                error = InvalidRequest("a toy temperature is a bare number", err_code="NaN")
                return ReportRefused("telemetry", None, error, now_ms)
            return TelemetryReport([Point("temp", now_ms, value)], now_ms)
        if topic.startswith(own + "answer/"):
            return CallAnswer(NAME, "command", topic[len(own + "answer/") :], payload, limit=LIMIT)
        return None

    def encode(self, ref: DeviceRef, message: object) -> Wire | None:
        if isinstance(message, Call) and message.family == NAME:
            return [(prefix(ref) + "call/" + message.call_id, message.body)]
        if isinstance(message, AnswerVerdict) and message.family == NAME:
            return []
        return None
