"""Events as bytes, for the NATS bus (bus/nats.py).

Rules:
- An event is one JSON object: its `kind`, the node that made it (`node`),
  and its fields by name. Nested values (points, device events) are objects;
  tuples travel as arrays and come back as tuples.
- Decoding is the exact inverse for every event of core/events.py (a test
  round-trips each); bytes that are not a known event raise `ValueError`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from thingshub.core import events
from thingshub.core.events import Event
from thingshub.core.model import DeviceEvent, Point

KINDS: dict[str, type[Any]] = {
    cls.kind: cls
    for cls in (
        events.DeviceDeleted,
        events.PresenceChanged,
        events.ImageChanged,
        events.AttributesReported,
        events.CommandFinished,
        events.TelemetryReceived,
        events.EventsReceived,
        events.OtaProgressed,
        events.DesiredChanged,
        events.TopologyChanged,
    )
}


def encode(event: Event, node: str) -> bytes:
    body: dict[str, Any] = {"kind": event.kind, "node": node}
    for f in dataclasses.fields(event):
        body[f.name] = getattr(event, f.name)
    return orjson.dumps(body)


def decode(data: bytes) -> tuple[Event, str]:
    """The event and the node that made it."""
    try:
        body = orjson.loads(data)
        cls = KINDS[body.pop("kind")]
        node = body.pop("node")
        if "points" in body:
            body["points"] = [Point(**p) for p in body["points"]]
        if "events" in body:
            body["events"] = [DeviceEvent(**e) for e in body["events"]]
        for name in ("gateway", "previous"):
            if body.get(name) is not None:
                body[name] = tuple(body[name])
        return cls(**body), str(node)
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not an event: {exc}") from exc
