"""What the thing service checks before it stores or sends anything, and the OneNET
code of each refusal (core/thingmodel's codes).

Rules:
- With a model, an identifier it lacks is 309 and a value that does not fit
  its dataType is 302 (core/thingmodel/datatypes.py); an event's value is
  an object of its output params.
- Without a model, a device may post any identifier and any value the
  platform can store (core/values.py), and an application may send any
  identifier of 1-128 characters; a null is never a value (302).
- A refusal of a device's request is a ThingError (its code goes back in
  the OneJSON reply); a refusal of an application's request is an
  InvalidRequest whose wire hint is the code (the API answers 400).
- The command service's errors keep their HTTP meaning and gain OneNET's
  code as their wire hint: not subscribed 1022, offline 308, no answer in
  time 306, an unusable answer 304.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from thingshub.core import thingchecks, thingmodel, values
from thingshub.core.errors import (
    BadDeviceAnswer,
    CommandTimeout,
    DeviceOffline,
    InvalidRequest,
    NotSubscribed,
    ThingsHubError,
)


class ThingError(ThingsHubError):
    """A thing-model request refused with OneNET's `code` (also its err_code)."""

    def __init__(self, code: int, hint: str) -> None:
        super().__init__(hint, err_code=code, err_msg=thingmodel.CODES.get(code))
        self.code = code


def property_value(
    model: thingmodel.ThingModel | None,
    identifier: str,
    value: object,
    compiled: Mapping[str, thingchecks.Check] | None = None,
) -> object:
    """A posted property value as stored (ThingError 309 or 302 if refused).

    `compiled` holds the model's property checks made once (core/thingchecks.py):
    the hot path of every property post; without them the model's rules run."""
    if model is None:
        return free_value(value, identifier)
    check = compiled.get(identifier) if compiled is not None else None
    try:
        if check is not None:
            return check(value, identifier)
        prop = known_property(model, identifier)  # 309 when the model has no such property
        return thingmodel.check(prop.data_type, value, identifier)
    except thingmodel.ValueRefused as exc:
        raise ThingError(code_of(exc), exc.message) from None


def event_value(
    model: thingmodel.ThingModel | None, identifier: str, value: object
) -> tuple[object, str | None]:
    """A posted event value as stored, an object, and the event's type (the model's)."""
    if model is None:
        checked = free_value(value, identifier)
        return (checked if isinstance(checked, dict) else {"value": checked}), None
    try:
        event = model.event(identifier)
        if not isinstance(value, dict):
            raise thingmodel.ValueRefused(f"{identifier}: an event's value is an object")
        return thingmodel.check_params(event.output, value, identifier), event.event_type
    except thingmodel.ValueRefused as exc:
        raise ThingError(code_of(exc), exc.message) from None


def known_property(
    model: thingmodel.ThingModel, identifier: str, *, api: bool = False
) -> thingmodel.Property:
    """The model's property; an unknown one is 309 (a ThingError, or for the API,
    `api`, an InvalidRequest)."""
    try:
        return model.property(identifier)
    except thingmodel.ValueRefused as exc:
        if api:
            raise invalid(thingmodel.IDENTIFIER_UNKNOWN, exc.message) from None
        raise ThingError(thingmodel.IDENTIFIER_UNKNOWN, exc.message) from None


def free_value(value: object, where: str) -> object:
    """Without a model: any value the platform can store (never a null)."""
    if value is None:
        raise ThingError(thingmodel.DATA_TYPE_ERROR, f"{where}: null is not a value")
    broken = values.json_problem(value, 0, values.MAX_STRING)
    if broken:
        raise ThingError(thingmodel.DATA_TYPE_ERROR, f"{where}: {broken[1]}{values.at(broken[0])}")
    return value


def free_values(requested: Mapping[str, Any], where: str) -> dict[str, Any]:
    """What an application sends without a model: any identifier of 1-128
    characters and any value but null (it goes to the device as JSON)."""
    out = {}
    for key, value in requested.items():
        name = f"{where}.{key}" if where else key
        if not isinstance(key, str) or not 1 <= len(key) <= 128:
            raise invalid(thingmodel.BAD_REQUEST, f"{name}: identifiers are 1-128 characters")
        if value is None:
            raise invalid(thingmodel.DATA_TYPE_ERROR, f"{name}: null is not a value")
        broken = values.json_problem(value, 0, values.MAX_STRING)
        if broken:  # it is stored too (desired values, call records)
            raise invalid(thingmodel.DATA_TYPE_ERROR, f"{name}{broken[0]}: {broken[1]}")
        out[key] = value
    return out


def code_of(exc: thingmodel.ValueRefused) -> int:
    """The OneNET code of a refused value (302 unless it says otherwise)."""
    return exc.err_code if isinstance(exc.err_code, int) else thingmodel.DATA_TYPE_ERROR


def invalid(code: int, message: str) -> InvalidRequest:
    """An application's request refused (400) with OneNET's `code` as its wire hint."""
    return InvalidRequest(message, err_code=code, err_msg=thingmodel.CODES[code])


def internal(hint: str) -> ThingError:
    """The platform's failure (303): the device sends again, nothing was its fault."""
    return ThingError(thingmodel.INTERNAL_ERROR, hint)


def call_error(exc: ThingsHubError) -> ThingsHubError:
    """The command service's error with OneNET's code as its wire hint."""
    if isinstance(exc, NotSubscribed):
        code = thingmodel.SUBSCRIPTION_NOT_EXIST
    elif isinstance(exc, DeviceOffline):
        code = thingmodel.DEVICE_NOT_ONLINE
    elif isinstance(exc, CommandTimeout):
        code = thingmodel.TIMEOUT
    elif isinstance(exc, BadDeviceAnswer):
        code = thingmodel.RESP_ERROR
    else:
        return exc
    exc.err_code, exc.err_msg = code, thingmodel.CODES[code]
    return exc
