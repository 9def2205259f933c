"""A thing-model property post's values at one time, as decoded: `ValuesAt`.

Why: the common property post ({"<id>": {"value": v, "time": t}, ...}, every
entry at the same time or none) was decoded into a `ThingValue` per value,
checked into a `Point` per value, and encoded from those points. Its values
are kept here as the post's own identifier -> value mapping and one time, so
the thing service checks them into a mapping of its own and hands the storage
a `PointsAt` (core/model.py), whose rows it encodes straight: no object per
value on the way, as on ThingsPanel's telemetry path.

Rules:
- `ts` is the entries' one time (Unix ms), or None when none carries one
  (the platform's reception time applies, as for a `ThingValue`).
- Read as a sequence it is the `ThingValue`s a tuple would hold, in the
  mapping's order, and it compares equal to such a tuple or list.
- Frozen: `values` is the post's own (nobody else holds it).
"""

from __future__ import annotations

from thingshub.core.messages import ThingValue
from thingshub.core.model import ValuesAtTime


class ValuesAt(ValuesAtTime[ThingValue]):
    """The values of a property post at one time (`ts`; None: when received)."""

    __slots__ = ()

    def _item(self, key: str, value: object) -> ThingValue:
        return ThingValue(key, value, self.ts)
