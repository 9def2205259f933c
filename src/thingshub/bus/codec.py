"""Values of the core as bytes, for what one node of a cluster asks another
(bus/calls.py): messages to devices, forwarded calls, their results, errors.

Rules:
- JSON, never pickle: a node only ever builds values of the types listed
  here (the dataclasses of core/messages.py, core/submessages.py,
  core/shadow.py, core/commands.py and the few of core/model.py they hold,
  by their registered name), so bytes from the network cannot run code.
- JSON's own values travel as themselves; everything else is a one-key
  object naming what it is: `{"$": [name, {field: value}]}` a dataclass,
  `{"b": base64}` bytes, `{"t": [...]}` a tuple, `{"d": {...}}` a dict (so
  a device's JSON can never pass for one of these), `{"e": [class, attrs]}`
  an error of the core's tree (class by name, its attributes: message,
  err_code, err_msg and those of its own that can travel), `{"m": name}`
  MISSING.
- Decoding is the exact inverse for every outbound message (a test
  round-trips each); bytes that are not such a value raise `ValueError`.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import functools
from types import ModuleType
from typing import Any

import orjson

import thingshub.core.thingmodel  # noqa: F401  (its errors join the tree)
from thingshub.core import commands, messages, model, shadow, submessages
from thingshub.core.errors import ThingsHubError


def _dataclasses(*modules: ModuleType) -> dict[str, type[Any]]:
    found: dict[str, type[Any]] = {}
    for module in modules:
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and dataclasses.is_dataclass(value)
                and value.__module__ == module.__name__
            ):
                assert value.__name__ not in found, value
                found[value.__name__] = value
    return found


TYPES = _dataclasses(messages, submessages, shadow, commands)
TYPES.update({cls.__name__: cls for cls in (model.Firmware, model.Point, model.DeviceEvent)})

ENUMS: dict[str, enum.Enum] = {"MISSING": shadow.MISSING}


@functools.cache
def _errors() -> dict[str, type[ThingsHubError]]:
    """Every error class of the core's tree, by name."""
    found: dict[str, type[ThingsHubError]] = {}
    todo: list[type[ThingsHubError]] = [ThingsHubError]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("thingshub.core."):
            found.setdefault(cls.__name__, cls)
        todo.extend(cls.__subclasses__())
    return found


def encode(value: object) -> bytes:
    return orjson.dumps(_out(value))


def decode(data: bytes) -> Any:
    try:
        return _in(orjson.loads(data))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a value of the cluster's messages: {exc}") from exc


def _attributes(exc: ThingsHubError) -> dict[str, Any]:
    """An error's attributes that can travel (all but the odd one of its own)."""
    out = {}
    for name, value in vars(exc).items():
        try:
            out[name] = _out(value)
        except TypeError:
            continue
    return out


def _out(value: object) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [_out(v) for v in value]
    if isinstance(value, dict):
        return {"d": {str(k): _out(v) for k, v in value.items()}}
    if isinstance(value, tuple):
        return {"t": [_out(v) for v in value]}
    if isinstance(value, bytes):
        return {"b": base64.b64encode(value).decode()}
    if isinstance(value, ThingsHubError):
        return {"e": [type(value).__name__, {"d": _attributes(value)}]}
    if isinstance(value, enum.Enum) and ENUMS.get(value.name) is value:
        return {"m": value.name}
    cls = type(value)
    if TYPES.get(cls.__name__) is cls:
        fields = {f.name: _out(getattr(value, f.name)) for f in dataclasses.fields(cls)}
        return {"$": [cls.__name__, fields]}
    if hasattr(value, "items"):  # a read-only mapping (a Firmware's ext_data)
        return {"d": {str(k): _out(v) for k, v in value.items()}}
    raise TypeError(f"{cls.__name__} cannot travel between nodes")


def _in(value: Any) -> Any:
    if isinstance(value, list):
        return [_in(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) != 1:
        raise ValueError("an untagged object")
    ((tag, body),) = value.items()
    if tag == "d":
        return {k: _in(v) for k, v in body.items()}
    if tag == "t":
        return tuple(_in(v) for v in body)
    if tag == "b":
        return base64.b64decode(body, validate=True)
    if tag == "$":
        name, fields = body
        return TYPES[name](**{k: _in(v) for k, v in fields.items()})
    if tag == "e":
        name, attrs = body
        return _error(str(name), _in(attrs))
    if tag == "m":
        return ENUMS[body]
    raise ValueError(f"unknown tag {tag!r}")


def _error(name: str, attrs: dict[str, Any]) -> ThingsHubError:
    """The error as raised on the other node: its class (the base one if this
    node does not know it), its message and attributes."""
    cls = _errors().get(name, ThingsHubError)
    exc = cls.__new__(cls)
    Exception.__init__(exc, str(attrs.get("message", "")))
    exc.__dict__.update(attrs)
    return exc
