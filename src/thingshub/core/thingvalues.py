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

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import overload

from thingshub.core.messages import ThingValue
from thingshub.core.model import slot_setters


class ValuesAt(Sequence[ThingValue]):
    """The values of a property post at one time (`ts`; None: when received)."""

    __slots__ = ("ts", "values")

    ts: int | None
    values: Mapping[str, object]

    def __init__(self, ts: int | None, values: Mapping[str, object]) -> None:
        _SET_TS(self, ts)
        _SET_VALUES(self, values)

    def __setattr__(self, name: str, value: object) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[ThingValue]:
        ts = self.ts
        return iter([ThingValue(key, value, ts) for key, value in self.values.items()])

    @overload
    def __getitem__(self, index: int) -> ThingValue: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[ThingValue]: ...
    def __getitem__(self, index: int | slice) -> ThingValue | Sequence[ThingValue]:
        return list(self)[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ValuesAt | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ValuesAt({self.ts!r}, {self.values!r})"


_SET_TS, _SET_VALUES = slot_setters(ValuesAt, "ts", "values")
