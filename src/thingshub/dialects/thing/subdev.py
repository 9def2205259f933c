"""OneNET gateways on their own thing prefix: `thing/sub/...` (sub-devices' presence,
the gateway's tree, and the platform's calls to sub-devices).

Rules:
- Gateway to platform, each answered on its topic + `/reply`:
  `sub/login`, `sub/logout` (params {"productID", "deviceName"}),
  `sub/topo/add`, `sub/topo/delete` (the same plus "sasToken", the
  sub-device's OneNET token), `sub/topo/get` (params absent or {}). A wrong
  shape is 313 (OneJSON's envelope rules first, onejson.py).
- A `sasToken` is judged by the service with `check_token` (given the
  device, or None when there is none, and the time), in this order: not a
  token, an unknown version or method, or a `res` naming another device →
  1103; expired → 1104; no such device → 1107; a wrong signature → 1106.
- The gateway's `sub/topo/get/result` and `sub/topo/change_reply` are
  recorded (`GatewayNote`); an unreadable one still is, without an id.
- Platform to gateway: a call to a sub-device goes on `sub/property/set`
  {"productID", "deviceName", "params": {...}}, `sub/property/get`
  {..., "params": [...]} or `sub/service/invoke` {..., "identifier",
  "input": {...}}; a change of its tree on `sub/topo/change` {"subList":
  [{"productID", "deviceName"}]}.
- The answers come on `sub/property/set_reply`, `sub/property/get_reply`
  and `sub/service/invoke_reply`, and any of them may answer any sub-device
  call (OneNET's C SDK answers a failed set on `get_reply`): the id tells.
"""

from __future__ import annotations

import functools
from typing import Final

from thingshub.core import thingmodel
from thingshub.core.errors import Unauthorized
from thingshub.core.messages import Call, ThingRefused
from thingshub.core.model import Device
from thingshub.core.submessages import (
    LOGIN,
    LOGOUT,
    TOPO_ADD,
    TOPO_DELETE,
    TOPO_GET,
    GatewayNote,
    SubRequest,
    TopologyNotice,
)
from thingshub.dialects.onenet import token as tokens
from thingshub.dialects.thing import onejson

#: The gateway's requests, answered on the same topic + `/reply`.
REQUESTS: Final = (LOGIN, LOGOUT, TOPO_ADD, TOPO_DELETE, TOPO_GET)
#: What the gateway says that is only recorded.
NOTES: Final = ("sub/topo/get/result", "sub/topo/change_reply")
#: The gateway's answers to calls to its sub-devices.
ANSWERS: Final = ("sub/property/set_reply", "sub/property/get_reply", "sub/service/invoke_reply")
#: Where calls to sub-devices and tree changes reach a gateway.
CALLS: Final = ("sub/property/set", "sub/property/get", "sub/service/invoke")
TOPO_CHANGE: Final = "sub/topo/change"


def request(name: str, payload: bytes) -> SubRequest | ThingRefused:
    """A gateway's request on `thing/{name}` (one of REQUESTS)."""
    try:
        envelope = onejson.parse_request(payload)
        params = envelope.params
        if name == TOPO_GET:
            if params not in (None, {}):
                raise _bad("sub/topo/get takes no params", envelope.id)
            return SubRequest(name, envelope.id, None)
        device = _device(params, envelope.id)
        if name in (LOGIN, LOGOUT):
            return SubRequest(name, envelope.id, device)
        assert isinstance(params, dict)
        token = params.get("sasToken")
        if not isinstance(token, str) or not token:
            raise _bad("params needs sasToken, the sub-device's token", envelope.id)
        check = functools.partial(check_token, token, device)
        return SubRequest(name, envelope.id, device, check)
    except onejson.EnvelopeError as exc:
        return ThingRefused(name, exc.id, exc)


def _bad(message: str, request_id: str) -> onejson.EnvelopeError:
    return onejson.EnvelopeError(thingmodel.BAD_REQUEST, message, request_id)


def _device(params: object, request_id: str) -> tuple[str, str]:
    if not isinstance(params, dict):
        raise _bad("params must be an object {productID, deviceName}", request_id)
    product, name = params.get("productID"), params.get("deviceName")
    if not isinstance(product, str) or not product or not isinstance(name, str) or not name:
        raise _bad("params needs productID and deviceName", request_id)
    return product, name


def check_token(
    text: str, device: tuple[str, str], found: Device | None, now_s: int
) -> tuple[int, str] | None:
    """(code, why) if `text` does not prove `device` (`found`: it as stored) now."""
    try:
        token = tokens.parse_token(text)
    except Unauthorized as exc:
        return thingmodel.INVALID_TOKEN, exc.message
    if token.version != tokens.TOKEN_VERSION or token.method not in tokens.METHODS:
        return thingmodel.INVALID_TOKEN, "unknown token version or method"
    if token.res != tokens.resource(*device):
        return thingmodel.INVALID_TOKEN, "the token is for another device"
    if token.et <= now_s:
        return thingmodel.TOKEN_EXPIRED, "the token has expired"
    if found is None:
        return thingmodel.DEVICE_NOT_FOUND, f"{device[0]}/{device[1]} does not exist"
    try:
        tokens.verify_device_token(token, found, now_s)
    except Unauthorized as exc:
        return thingmodel.SIGN_NOT_MATCH, exc.message
    return None


def note(name: str, payload: bytes) -> GatewayNote:
    """The gateway's result or answer (one of NOTES), as sent."""
    reply = onejson.parse_reply(payload)
    if reply is None:
        return GatewayNote(name, "", None, None)
    return GatewayNote(name, reply.id, reply.code, reply.msg)


def call(kind_topic: str, target: tuple[str, str], message: Call) -> tuple[str, bytes]:
    """A call to a sub-device, as (topic after `thing/`, payload)."""
    head = onejson.compact({"productID": target[0], "deviceName": target[1]})[:-1]
    if kind_topic == "sub/service/invoke":
        params = head + b',"identifier":' + onejson.compact(message.target)
        params += b',"input":' + message.body + b"}"
    else:
        params = head + b',"params":' + message.body + b"}"
    return kind_topic, onejson.request(message.call_id, params)


def topology(notice: TopologyNotice) -> tuple[str, bytes]:
    sub_list = [{"productID": p, "deviceName": n} for p, n in notice.devices]
    return TOPO_CHANGE, onejson.request(notice.request_id, onejson.compact({"subList": sub_list}))
