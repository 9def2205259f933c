"""ThingsPanel MQTT: password logins, the `devices/...` topics and gateways' `gateway/...`.

Logins: the user name and password issued at device creation, or an access
token as the user name alone. The dialect object wires the parts: topics.py
(topic rights), reports.py (the payload grammar and the response object),
gateway.py (the nested payload of gateways and `devices/register`) and the
message translations below. A request for a device of a gateway's tree
(`ViaGateway`) goes on the top gateway's `gateway/...` topic, nested down to
the device (a sub-gateway in the gateway form, gateway.nest); answers on
`gateway/.../response/...` complete calls exactly as the direct ones do.
Reports are decoded here, so a malformed one reaches the service as a
`ReportRefused` that it counts and answers. Logins use
the user name and password issued at device creation; any credentials not
in another dialect's form are taken as such, so this dialect comes last
among the logins.
"""

from __future__ import annotations

from thingshub.core import jsontext
from thingshub.core.commands import ATTRIBUTES_SET, COMMAND
from thingshub.core.errors import NotFound, ThingsHubError, Unauthorized
from thingshub.core.jsontext import dumps
from thingshub.core.messages import (
    AnswerVerdict,
    AttributesGet,
    AttributesReport,
    Call,
    CallAnswer,
    Control,
    DeviceRef,
    EventReport,
    GatewayReport,
    OtaInform,
    OtaProgress,
    OtaProgressRefused,
    PresenceNotice,
    ReportAck,
    ReportRefused,
    SubRegisterReply,
    TelemetryReport,
    ViaGateway,
)
from thingshub.core.model import Device
from thingshub.dialects.port import Login, PasswordCheck, Wire
from thingshub.dialects.thingspanel import gateway, ota, reports, topics

NAME = "thingspanel"

_ANSWERS = {
    "devices/command/response/": COMMAND,
    "devices/attributes/set/response/": ATTRIBUTES_SET,
    "gateway/command/response/": COMMAND,
    "gateway/attributes/set/response/": ATTRIBUTES_SET,
}
#: Gateway reports answered under the message id of their topic.
_GATEWAY_REPORTS = {"gateway/attributes/": "attributes", "gateway/event/": "event"}


class ThingsPanel:
    name = NAME
    open_topics = topics.OPEN

    # ------------------------------------------------------------ login

    def login(self, client_id: str, username: str | None, password: bytes | None) -> Login | None:
        """A user name and password, or an access token as the user name alone
        (no password, or an empty one), as ThingsPanel's broker takes it."""
        if username is None:
            return None
        if not password:
            return Login(NAME, ("t", username), None)
        try:
            text = password.decode()
        except UnicodeDecodeError:
            raise Unauthorized("password is not UTF-8") from None
        return Login(NAME, ("u", username), text)

    def verify(self, login: Login, device: Device, now_s: int, password_ok: PasswordCheck) -> None:
        if login.lookup[0] == "t":
            if device.access_token != login.lookup[1]:
                raise Unauthorized("wrong access token")
            return  # the token found the device: it is the whole credential
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
            dn = ref.device_number
            return (f"ota/devices/inform/{dn}", f"ota/devices/infrom/{dn}")
        return ()

    # ------------------------------------------------------------ messages

    def decode(self, ref: DeviceRef, topic: str, payload: bytes, now_ms: int) -> object | None:
        """Message ids are one topic level; a topic with more levels is not ours."""
        if topic == "devices/telemetry":
            try:
                return TelemetryReport(reports.parse_telemetry(payload, now_ms), now_ms)
            except reports.ReportError as exc:
                return ReportRefused("telemetry", None, exc, now_ms)
        if topic == "ota/devices/progress":
            try:
                return OtaProgress(reports.parse_progress(payload))
            except reports.ReportError as exc:
                return OtaProgressRefused(exc)
        for prefix, kind in _ANSWERS.items():
            if topic.startswith(prefix):
                message_id = topic[len(prefix) :]
                return _answer(kind, message_id, payload) if _one_level(message_id) else None
        if topic.startswith("gateway/") or topic == "devices/register":
            return _gateway_decode(topic, payload, now_ms)
        if topic.startswith("devices/attributes/"):
            message_id = topic[len("devices/attributes/") :]
            if not _one_level(message_id):
                return None
            try:
                return AttributesReport(message_id, reports.parse_attributes(payload), now_ms)
            except reports.ReportError as exc:
                return ReportRefused("attributes", message_id, exc, now_ms)
        if topic.startswith("devices/event/"):
            message_id = topic[len("devices/event/") :]
            if not _one_level(message_id):
                return None
            try:
                events, historical = reports.parse_event(payload, now_ms)
            except reports.ReportError as exc:
                method = reports.event_method(payload)
                return ReportRefused("event", message_id, exc, now_ms, method)
            return EventReport(message_id, events, historical, now_ms)
        return None

    def encode(self, ref: DeviceRef, message: object) -> Wire | None:
        dn = ref.device_number
        if isinstance(message, ViaGateway):
            return _via_gateway(dn, message)
        if isinstance(message, SubRegisterReply):
            body = gateway.register_response(message.ok, message.message, message.results)
            return [(f"devices/register/response/{dn}", body)]
        if isinstance(message, Call) and message.family == NAME:
            if message.kind == COMMAND:
                return [(f"devices/command/{dn}/{message.call_id}", message.body)]
            return [(f"devices/attributes/set/{dn}/{message.call_id}", message.body)]
        if isinstance(message, AnswerVerdict) and message.family == NAME:
            return []  # ThingsPanel never tells a device what became of its answer
        if isinstance(message, Control):
            return [(f"devices/telemetry/control/{dn}", dumps(message.values))]
        if isinstance(message, AttributesGet):
            return [(f"devices/attributes/get/{dn}", dumps({"keys": message.keys}))]
        if isinstance(message, ReportAck):
            tail = f"{message.kind}/response/{dn}/{message.reply_to}"
            body = dumps(_response(message))
            if message.gateway:  # and the direct form, for gateways that listen there
                return [(f"gateway/{tail}", body), (f"devices/{tail}", body)]
            return [(f"devices/{tail}", body)]
        if isinstance(message, OtaInform) and message.family == NAME:
            body = dumps(ota.inform_body(message))  # to whichever spelling it listens on
            return [(f"ota/devices/inform/{dn}", body), (f"ota/devices/infrom/{dn}", body)]
        if isinstance(message, PresenceNotice):
            return [(topics.STATUS + dn, b"1" if message.online else b"0")]
        return None


def _gateway_decode(topic: str, payload: bytes, now_ms: int) -> object | None:
    """A gateway's report or registration; None for a topic that is neither."""
    if topic == "devices/register":
        return gateway.parse_register(payload)
    kind, reply_to = "telemetry", None
    if topic != "gateway/telemetry":
        for prefix, report_kind in _GATEWAY_REPORTS.items():
            if topic.startswith(prefix) and _one_level(topic[len(prefix) :]):
                kind, reply_to = report_kind, topic[len(prefix) :]
                break
        else:
            return None
    try:
        nodes = gateway.parse(kind, payload, now_ms)
    except reports.ReportError as exc:
        return ReportRefused(kind, reply_to, exc, now_ms, gateway=True)
    return GatewayReport(kind, reply_to, tuple(nodes), now_ms)


def _via_gateway(dn: str, via: ViaGateway) -> Wire | None:
    """A request for a device of a gateway's tree, on the top gateway's topics."""
    message, path, sub_gateway = via.message, via.path, via.gateway
    if isinstance(message, Control):
        body = gateway.nest(path, message.values, sub_gateway)
        return [(f"gateway/telemetry/control/{dn}", dumps(body))]
    if isinstance(message, AttributesGet):
        body = gateway.nest(path, message.keys, sub_gateway)
        return [(f"gateway/attributes/get/{dn}", dumps(body))]
    if message.family != NAME:
        return None  # another family's call: not carried in this form
    content = jsontext.loads(message.body)  # the platform's own JSON
    if message.kind == COMMAND:
        topic = f"gateway/command/{dn}/{message.call_id}"
    else:
        topic = f"gateway/attributes/set/{dn}/{message.call_id}"
    return [(topic, dumps(gateway.nest(path, content, sub_gateway)))]


def _answer(kind: str, message_id: str, payload: bytes) -> CallAnswer:
    """An answer: a response object, kept as sent (reports.parse_answer's rules)."""
    try:
        body = reports.parse_answer(payload)
    except reports.ReportError as exc:
        problem = f"the device's answer is not a response object: {exc.message}"
        return CallAnswer(NAME, kind, message_id, payload, problem=problem)
    return CallAnswer(NAME, kind, message_id, payload, body=body)


def _one_level(message_id: str) -> bool:
    return bool(message_id) and "/" not in message_id


def _response(ack: ReportAck) -> dict[str, object]:
    """The response object answering a report: success, or the errcode of why not."""
    now_s = ack.at // 1000
    if ack.error is None:
        message = None if ack.note is None else f"success; {ack.note}"
        return reports.response(True, now_s=now_s, message=message, method=ack.method)
    errcode, message = failure(ack.error)
    return reports.response(False, now_s=now_s, errcode=errcode, message=message, method=ack.method)


def failure(error: ThingsHubError) -> tuple[str, str]:
    """(errcode, sentence) of a report that was not stored: the device's fault
    (its report broke a rule) or the platform's (INTERNAL)."""
    if isinstance(error, reports.ReportError):
        return error.errcode, error.message
    if isinstance(error, NotFound):
        return reports.INTERNAL, "the device no longer exists"
    return reports.INTERNAL, "the platform could not store the report"
