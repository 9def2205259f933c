"""A product's thing model (TSL): its document of properties, events and services.

Rules:
- A model has properties, events and services, in OneNET's export shape:
  properties {identifier, name, accessMode "r"|"rw", dataType, desc?,
  functionType?, required?}; events {identifier, name, eventType
  "info"|"alert"|"error", outputData [param]}; services {identifier, name,
  callType "s"|"a", input [param], output [param]}; a param is
  {identifier, name, dataType} (datatypes.py). A missing list is empty.
- Accepted aliases, stored in the canonical form: an event's `type` for
  `eventType` (and `output` for `outputData`); a service's `inputData` /
  `outputData` for `input` / `output`, `callType` "sync"/"async" for
  "s"/"a". Other keys (`profile`, `functionMode`, ...) are kept as sent and
  ignored. Spec values keep their JSON type (OneNET exports numbers as
  strings).
- The model is refused (ModelError, with a JSON pointer to the fault) when
  an identifier does not match `^$?[A-Za-z0-9_]{1,50}$`, is used twice
  among properties, events and services, or twice in one list of params;
  when there are more than `max_points` function points (100); or when a
  dataType breaks a rule of datatypes.py.
- Looking up an identifier the model lacks raises ValueRefused, 309.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from thingshub.core import values
from thingshub.core.thingmodel.codes import IDENTIFIER_UNKNOWN, ModelError, ValueRefused
from thingshub.core.thingmodel.datatypes import (
    DataType,
    Param,
    identifier_of,
    name_of,
    object_at,
    parse_data_type,
    parse_params,
)

MAX_POINTS: Final = 100
ACCESS_MODES: Final = ("r", "rw")
EVENT_TYPES: Final = ("info", "alert", "error")
CALL_TYPES: Final = {"s": "s", "a": "a", "sync": "s", "async": "a"}


@dataclass(frozen=True, slots=True)
class Property:
    identifier: str
    name: str
    access_mode: str
    data_type: DataType

    @property
    def writable(self) -> bool:
        return self.access_mode == "rw"


@dataclass(frozen=True, slots=True)
class Event:
    identifier: str
    name: str
    event_type: str
    output: tuple[Param, ...]


@dataclass(frozen=True, slots=True)
class Service:
    identifier: str
    name: str
    call_type: str  # "s" (the caller waits) or "a" (answered later)
    input: tuple[Param, ...]
    output: tuple[Param, ...]


@dataclass(frozen=True, slots=True)
class ThingModel:
    """A checked model and its canonical document (what is stored and shown)."""

    properties: Mapping[str, Property]
    events: Mapping[str, Event]
    services: Mapping[str, Service]
    document: Mapping[str, Any]

    def property(self, identifier: str) -> Property:
        found = self.properties.get(identifier)
        if found is None:
            raise ValueRefused(f"{identifier}: no such property", IDENTIFIER_UNKNOWN)
        return found

    def event(self, identifier: str) -> Event:
        found = self.events.get(identifier)
        if found is None:
            raise ValueRefused(f"{identifier}: no such event", IDENTIFIER_UNKNOWN)
        return found

    def service(self, identifier: str) -> Service:
        found = self.services.get(identifier)
        if found is None:
            raise ValueRefused(f"{identifier}: no such service", IDENTIFIER_UNKNOWN)
        return found


def parse_model(document: object, *, max_points: int = MAX_POINTS) -> ThingModel:
    """Check a model document; the model with its canonical document, or ModelError."""
    if not isinstance(document, dict):
        raise ModelError("", "a thing model is a JSON object of properties, events, services")
    canonical: dict[str, Any] = dict(document)
    lists: dict[str, list[Any]] = {}
    for key in ("properties", "events", "services"):
        value = document.get(key, [])
        if value is None:
            value = []
        if not isinstance(value, list):
            raise ModelError(f"/{key}", "must be a list")
        lists[key] = value
    total = sum(len(v) for v in lists.values())
    if total > max_points:
        raise ModelError("", f"{total} function points; at most {max_points} are allowed")
    seen: dict[str, str] = {}
    properties: dict[str, Property] = {}
    events: dict[str, Event] = {}
    services: dict[str, Service] = {}
    docs: dict[str, list[dict[str, Any]]] = {"properties": [], "events": [], "services": []}
    for index, raw in enumerate(lists["properties"]):
        path = f"/properties/{index}"
        item = object_at(raw, path)
        identifier = identifier_of(item, path, seen)
        mode = item.get("accessMode", "rw")
        if mode not in ACCESS_MODES:
            raise ModelError(f"{path}/accessMode", 'must be "r" or "rw"')
        data_type, type_doc = parse_data_type(item.get("dataType"), f"{path}/dataType")
        properties[identifier] = Property(identifier, name_of(item, identifier), mode, data_type)
        docs["properties"].append({**item, "accessMode": mode, "dataType": type_doc})
    for index, raw in enumerate(lists["events"]):
        path = f"/events/{index}"
        item = object_at(raw, path)
        identifier = identifier_of(item, path, seen)
        item = _alias(item, "type", "eventType")
        item = _alias(item, "output", "outputData")
        event_type = item.get("eventType", "info")
        if event_type not in EVENT_TYPES:
            raise ModelError(f"{path}/eventType", 'must be "info", "alert" or "error"')
        output, output_doc = parse_params(item.get("outputData"), f"{path}/outputData")
        events[identifier] = Event(identifier, name_of(item, identifier), event_type, output)
        docs["events"].append({**item, "eventType": event_type, "outputData": output_doc})
    for index, raw in enumerate(lists["services"]):
        path = f"/services/{index}"
        item = object_at(raw, path)
        identifier = identifier_of(item, path, seen)
        item = _alias(item, "inputData", "input")
        item = _alias(item, "outputData", "output")
        call_type = CALL_TYPES.get(str(item.get("callType", "s")))
        if call_type is None:
            raise ModelError(f"{path}/callType", 'must be "s" or "a" ("sync" or "async")')
        inputs, input_doc = parse_params(item.get("input"), f"{path}/input")
        outputs, output_doc = parse_params(item.get("output"), f"{path}/output")
        services[identifier] = Service(
            identifier, name_of(item, identifier), call_type, inputs, outputs
        )
        docs["services"].append(
            {**item, "callType": call_type, "input": input_doc, "output": output_doc}
        )
    canonical.update(docs)
    # The document is stored as it came, unknown keys included: last, once every
    # rule has had its say at its own pointer, refuse what no store can hold
    # (integers past 64 bits, lone surrogates, deep nesting) wherever it sits.
    broken = values.json_problem(canonical, 0, None)
    if broken:
        raise ModelError("", f"{broken[0]}: {broken[1]}")
    return ThingModel(properties, events, services, canonical)


def _alias(item: dict[str, Any], alias: str, canonical: str) -> dict[str, Any]:
    """`item` with `alias` renamed `canonical` (unless both are there: the canonical wins)."""
    if alias in item and canonical not in item:
        return {(canonical if k == alias else k): v for k, v in item.items()}
    return item
