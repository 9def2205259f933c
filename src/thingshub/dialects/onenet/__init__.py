"""OneNET: token logins and the `$sys/{pid}/{name}/...` topics of a device.

The dialect object wires the parts: token.py (logins), topics.py (topic
rights), image.py (the image's payloads), commands.py (the commands'
codes), and the message translations below.
"""

from __future__ import annotations

from thingshub.core import commands as calls
from thingshub.core.errors import Unauthorized
from thingshub.core.jsontext import dumps
from thingshub.core.messages import (
    AnswerVerdict,
    Call,
    CallAnswer,
    DataPoints,
    DataPointsAck,
    DataPointsRefused,
    DeviceRef,
    ImageAccepted,
    ImageDelta,
    ImageGetRequest,
    ImageRejected,
    ImageSnapshot,
    ImageUpdateRefused,
    ImageUpdateRequest,
    OtaInform,
)
from thingshub.core.model import Device
from thingshub.core.shadow import ImageError
from thingshub.dialects.onenet import commands, datapoints, image, ota, topics
from thingshub.dialects.onenet import token as tokens
from thingshub.dialects.port import Login, PasswordCheck, Wire

NAME = "onenet"


#: What `encode` may carry; anything else is another dialect's.
_CARRIED = (
    DataPointsAck,
    ImageAccepted,
    ImageDelta,
    ImageSnapshot,
    ImageRejected,
    Call,
    AnswerVerdict,
    OtaInform,
)


class OneNet:
    name = NAME
    open_topics: frozenset[str] = frozenset()  # every topic names its device

    # ------------------------------------------------------------ login

    def login(self, client_id: str, username: str | None, password: bytes | None) -> Login | None:
        """A token as the password: user name = product id, client id = device name."""
        if username is None or password is None:
            return None
        try:
            text = password.decode()
        except UnicodeDecodeError:
            return None
        if not tokens.looks_like_token(text):
            return None
        return Login(NAME, ("d", username, client_id), tokens.parse_token(text))

    def verify(self, login: Login, device: Device, now_s: int, password_ok: PasswordCheck) -> None:
        token = login.secret
        if not isinstance(token, tokens.Token):
            raise Unauthorized("not a OneNET token")
        tokens.verify_device_token(token, device, now_s)

    # ------------------------------------------------------------ topics

    def owns(self, topic: str) -> bool:
        return topic.startswith(topics.ROOT)

    def may_publish(self, ref: DeviceRef, topic: str) -> bool:
        return topics.may_publish(ref.product_id, ref.name, topic)

    def may_subscribe(self, ref: DeviceRef, topic_filter: str) -> bool:
        return topics.may_subscribe(ref.product_id, ref.name, topic_filter)

    def topics(self, ref: DeviceRef, kind: type) -> tuple[str, ...]:
        own = topics.prefix(ref.product_id, ref.name)
        if kind is ImageDelta:
            return (own + "image/update/delta",)
        if kind is OtaInform:
            return (own + "ota/inform",)
        return ()

    # ------------------------------------------------------------ messages

    def decode(self, ref: DeviceRef, topic: str, payload: bytes, now_ms: int) -> object | None:
        if not topic.startswith(topics.ROOT):
            return None
        own = topics.prefix(ref.product_id, ref.name)
        if not topic.startswith(own):
            return None
        rest = topic[len(own) :]
        if rest == "image/update":
            try:
                return ImageUpdateRequest(image.parse_update(payload))
            except ImageError as exc:
                return ImageUpdateRefused(image.parse_get(payload), exc)
        if rest == "image/get":
            return ImageGetRequest(image.parse_get(payload))
        if rest == "dp/post/json":
            try:
                post_id, points = datapoints.parse(payload, now_ms)
            except datapoints.PointsError as exc:
                return DataPointsRefused(exc.id, exc)
            return DataPoints(post_id, points, now_ms)
        if rest == "ota/inform_reply":
            return ota.parse_inform_reply(payload)
        if rest.startswith("cmd/response/"):
            cmd_id = rest[len("cmd/response/") :]
            if cmd_id and "/" not in cmd_id:
                return CallAnswer(NAME, calls.COMMAND, cmd_id, payload, limit=commands.LIMIT)
        return None

    def encode(self, ref: DeviceRef, message: object) -> Wire | None:
        if not isinstance(message, _CARRIED):
            return None  # asked of every dialect in turn: say no before building topics
        own = topics.prefix(ref.product_id, ref.name)
        if isinstance(message, DataPointsAck):
            if message.error is None:
                return [
                    (own + "dp/post/json/accepted", dumps(datapoints.accepted(message.request_id)))
                ]
            body = datapoints.rejected(message.request_id, message.error.message)
            return [(own + "dp/post/json/rejected", dumps(body))]
        if isinstance(message, ImageAccepted):
            return [(own + "image/update/accepted", dumps(image.accepted(message.applied)))]
        if isinstance(message, ImageDelta):
            delta = image.delta_message(message.image)
            return [] if delta is None else [(own + "image/update/delta", dumps(delta))]
        if isinstance(message, ImageSnapshot):
            body = image.get_accepted(message.image, message.request_id)
            return [(own + "image/get/accepted", dumps(body))]
        if isinstance(message, ImageRejected):
            body = image.rejected(message.err_code, message.request_id, message.detail)
            return [(own + f"image/{message.request}/rejected", dumps(body))]
        if isinstance(message, OtaInform):
            if message.family != NAME:
                return None
            return [(own + "ota/inform", dumps(ota.inform_body(message)))]
        if isinstance(message, Call) and message.family == NAME:
            return [(own + "cmd/request/" + message.call_id, message.body)]
        if isinstance(message, AnswerVerdict) and message.family == NAME:
            answer = own + f"cmd/response/{message.call_id}/"
            code = commands.REJECTIONS.get(message.verdict)
            if code is None:
                return [(answer + "accepted", b"")]
            body = {"err_code": code, "err_msg": commands.ERR_MSG[code]}
            return [(answer + "rejected", dumps(body))]
        return None
