"""OneNET's thing model (OneJSON) on `$sys/{pid}/{name}/thing/...`: a dialect of its own.

It shares OneNET's login and topic prefix (the OneNET dialect logs devices
in and grants their subscriptions under `$sys/{pid}/{name}/`); this one
adds the thing topics' publishing rights and translations. The envelope
and its codes are onejson.py, the post grammar posts.py.

Rules:
- Device to platform: `thing/property/post`, `thing/event/post`,
  `thing/property/desired/get`, `thing/property/desired/delete`,
  `thing/pack/post`, `thing/history/post`, each answered on its own topic
  plus `/reply`; and the device's answers to the platform's requests,
  `thing/property/set_reply`, `thing/property/get_reply` and
  `thing/service/{identifier}/invoke_reply`.
- Platform to device: `thing/property/set` (also the desired values
  pushed, whose `property/set_reply` completes their `desired_push`
  record), `thing/property/get`, `thing/service/{identifier}/invoke`: a
  OneJSON request with the call's id; replies to a device's requests are
  never answered back.
- Command records of these calls have the family "thing".
- A gateway's `thing/sub/...` topics (its sub-devices' presence, its tree,
  the calls to its sub-devices, which travel as `ViaGateway` naming the
  sub-device) are subdev.py's; a gateway reaches only its own prefix.
"""

from __future__ import annotations

from thingshub.core import thingmodel
from thingshub.core.messages import (
    AnswerVerdict,
    Call,
    CallAnswer,
    DesiredDelete,
    DesiredGet,
    DeviceRef,
    ThingData,
    ThingPost,
    ThingRefused,
    ThingReply,
    ViaGateway,
)
from thingshub.core.model import Device
from thingshub.core.submessages import TopologyNotice
from thingshub.dialects.onenet import topics as onenet_topics
from thingshub.dialects.port import Login, PasswordCheck, Wire
from thingshub.dialects.thing import onejson, posts, subdev

NAME = "thing"

PROPERTY_SET, PROPERTY_GET, SERVICE, DESIRED_PUSH = (
    "property_set",
    "property_get",
    "service",
    "desired_push",
)

#: Device requests (relative to `thing/`), answered on the same topic + `/reply`.
REQUESTS = (
    "property/post",
    "event/post",
    "property/desired/get",
    "property/desired/delete",
    "pack/post",
    "history/post",
)
#: The device's answers to the platform's requests, by the kind of call they answer.
ANSWERS = {"property/set_reply": PROPERTY_SET, "property/get_reply": PROPERTY_GET}
#: Other kinds of call an answer may be for: desired values are pushed on
#: `property/set`, so the device answers them as sets (the id tells them apart).
ALSO = {PROPERTY_SET: (DESIRED_PUSH,)}
#: The gateway's topic for each kind of call to a sub-device (desired values pushed are sets).
SUB_CALLS = {
    PROPERTY_SET: "sub/property/set",
    DESIRED_PUSH: "sub/property/set",
    PROPERTY_GET: "sub/property/get",
    SERVICE: "sub/service/invoke",
}
#: Any answer of a gateway may be for any call to a sub-device (subdev.py's rules).
SUB_KINDS = (PROPERTY_SET, PROPERTY_GET, SERVICE, DESIRED_PUSH)


#: What `encode` may carry; anything else is another dialect's.
_CARRIED = (ThingReply, Call, AnswerVerdict, ViaGateway, TopologyNotice)


_ROOT = onenet_topics.ROOT


def _thing(ref: DeviceRef) -> str:
    return onenet_topics.prefix(ref.product_id, ref.name) + "thing/"


class Thing:
    name = NAME
    open_topics: frozenset[str] = frozenset()  # every topic names its device

    def login(self, client_id: str, username: str | None, password: bytes | None) -> Login | None:
        return None  # OneNET's login admits thing-model devices

    def verify(self, login: Login, device: Device, now_s: int, password_ok: PasswordCheck) -> None:
        raise AssertionError("the thing dialect takes no logins")  # pragma: no cover

    # ------------------------------------------------------------ topics

    def owns(self, topic: str) -> bool:
        if not topic.startswith(onenet_topics.ROOT):
            return False
        levels = topic.split("/", 4)
        return len(levels) > 3 and levels[3] == "thing"

    def may_publish(self, ref: DeviceRef, topic: str) -> bool:
        if not topic.startswith(onenet_topics.ROOT):
            return False  # another family's topic (ThingsPanel's telemetry): no prefix built
        own = f"{_ROOT}{ref.product_id}/{ref.name}/thing/"  # `_thing`, asked of every PUBLISH
        if not topic.startswith(own):
            return False
        rest = topic[len(own) :]
        if rest in REQUESTS or rest in ANSWERS:
            return True
        if rest.startswith("sub/"):
            return rest in subdev.REQUESTS or rest in subdev.NOTES or rest in subdev.ANSWERS
        return _service_answer(rest) is not None

    def may_subscribe(self, ref: DeviceRef, topic_filter: str) -> bool:
        return False  # OneNET's rights grant everything under the device's own prefix

    def topics(self, ref: DeviceRef, kind: type) -> tuple[str, ...]:
        own = _thing(ref)
        if kind is Call:
            return (own + "property/set", own + "property/get", own + "service/+/invoke")
        if kind is ViaGateway:
            return tuple(own + topic for topic in subdev.CALLS)
        if kind is TopologyNotice:
            return (own + subdev.TOPO_CHANGE,)
        return ()

    # ------------------------------------------------------------ messages

    def decode(self, ref: DeviceRef, topic: str, payload: bytes, now_ms: int) -> object | None:
        if not topic.startswith(onenet_topics.ROOT):
            return None
        own = f"{_ROOT}{ref.product_id}/{ref.name}/thing/"  # `_thing`, without its two calls
        if not topic.startswith(own):
            return None
        rest = topic[len(own) :]
        if rest in REQUESTS:
            return _request(rest, payload, now_ms)
        kind = ANSWERS.get(rest)
        if kind is not None:
            return _answer(kind, None, payload)
        service = _service_answer(rest)
        if service is not None:
            return _answer(SERVICE, service, payload)
        if rest in subdev.REQUESTS:
            return subdev.request(rest, payload)
        if rest in subdev.NOTES:
            return subdev.note(rest, payload)
        if rest in subdev.ANSWERS:
            return _answer(PROPERTY_GET, None, payload, SUB_KINDS)
        return None

    def encode(self, ref: DeviceRef, message: object) -> Wire | None:
        if not isinstance(message, _CARRIED):
            return None  # asked of every dialect in turn: say no before building topics
        own = _thing(ref)
        if isinstance(message, ThingReply):
            body = onejson.reply(message.request_id, message.code, message.hint, message.data)
            return [(own + message.request + "/reply", body)]
        if isinstance(message, Call) and message.family == NAME:
            body = onejson.request(message.call_id, message.body)
            if message.kind == SERVICE:
                return [(own + f"service/{message.target}/invoke", body)]
            if message.kind == PROPERTY_GET:
                return [(own + "property/get", body)]
            return [(own + "property/set", body)]  # a set, or desired values pushed
        if isinstance(message, AnswerVerdict) and message.family == NAME:
            return []  # replies are never answered
        if isinstance(message, ViaGateway):
            call = message.message
            if not isinstance(call, Call) or call.family != NAME or message.target is None:
                return None  # not a thing call to a sub-device: another dialect's
            topic, body = subdev.call(SUB_CALLS[call.kind], message.target, call)
            return [(own + topic, body)]
        if isinstance(message, TopologyNotice):
            topic, body = subdev.topology(message)
            return [(own + topic, body)]
        return None


def _service_answer(rest: str) -> str | None:
    """The service identifier of `service/{identifier}/invoke_reply`, else None."""
    if not rest.startswith("service/") or not rest.endswith("/invoke_reply"):
        return None
    identifier = rest[len("service/") : -len("/invoke_reply")]
    return identifier if identifier and "/" not in identifier else None


def _request(request: str, payload: bytes, now_ms: int) -> object:
    try:
        envelope = onejson.parse_request(payload)
        params, request_id = envelope.params, envelope.id
        data: tuple[ThingData, ...]
        if request == "property/post":
            data = (ThingData(None, posts.properties(params, request_id), ()),)
            return ThingPost(request, request_id, data, now_ms)
        if request == "event/post":
            data = (ThingData(None, (), posts.values(params, request_id)),)
            return ThingPost(request, request_id, data, now_ms)
        if request in ("pack/post", "history/post"):
            data = posts.pack(params, request_id, historical=request == "history/post")
            return ThingPost(request, request_id, data, now_ms)
        if request == "property/desired/get":
            return DesiredGet(request_id, posts.desired_get(params, request_id))
        return DesiredDelete(request_id, posts.desired_delete(params, request_id))
    except onejson.EnvelopeError as exc:
        return ThingRefused(request, exc.id, exc)


def _answer(
    kind: str, service: str | None, payload: bytes, also: tuple[str, ...] | None = None
) -> CallAnswer:
    also = ALSO.get(kind, ()) if also is None else also
    reply = onejson.parse_reply(payload)
    if reply is None:
        return CallAnswer(NAME, kind, "", payload, problem="the reply has no usable id", also=also)
    if reply.code is None:
        return CallAnswer(
            NAME,
            kind,
            reply.id,
            payload,
            problem="the device's reply has no integer code",
            problem_code=thingmodel.RESP_ERROR,
            also=also,
        )
    body = {"id": reply.id, "code": reply.code, "msg": reply.msg, "data": reply.data}
    return CallAnswer(NAME, kind, reply.id, payload, body=body, also=also)
