"""The dialects a platform speaks, asked in turn.

Rules:
- Order matters only for logins: the first dialect whose form the
  credentials are in takes them (OneNET's token form is recognisable;
  ThingsPanel takes any user name and password, so it comes last).
  `register` puts a new dialect first, before the catch-alls.
- Every other question goes to every dialect: a device may publish or
  subscribe where any dialect allows it; a message is decoded by the
  dialect that owns its topic and encoded by the one that carries its type.
- A message no dialect carries is a programming error (TypeError), never
  something a device caused.
- A dialect's `open_topics` any device may publish on, asked of nobody; and
  such a topic that no other dialect owns goes straight to its dialect's
  decode (the answers are those of asking round: the hot path, without
  asking round).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from thingshub.core.messages import DeviceRef
from thingshub.core.topics import topic_matches
from thingshub.dialects.port import Dialect, Login, Wire


class Registry:
    def __init__(self, dialects: Iterable[Dialect] = ()) -> None:
        self._dialects: list[Dialect] = []
        self._all: tuple[Dialect, ...] = ()
        self._open: frozenset[str] = frozenset()  # every dialect's open topics
        self._routes: dict[str, Dialect] = {}  # open topics no other dialect owns
        for dialect in dialects:
            self._add(dialect, len(self._dialects))

    def register(self, dialect: Dialect) -> None:
        """Speak `dialect` too; its login form is tried before the others'."""
        self._add(dialect, 0)

    def _add(self, dialect: Dialect, at: int) -> None:
        if any(d.name == dialect.name for d in self._dialects):
            raise ValueError(f"a dialect named {dialect.name!r} is already registered")
        self._dialects.insert(at, dialect)
        self._all = dialects = tuple(self._dialects)
        # A plug-in dialect written before `open_topics` has none: it is asked round.
        opened: list[tuple[Dialect, frozenset[str]]] = [
            (d, getattr(d, "open_topics", frozenset())) for d in dialects
        ]
        self._open = frozenset(t for _, topics in opened for t in topics)
        self._routes = {
            topic: d
            for d, topics in opened
            for topic in topics
            if not any(other.owns(topic) for other in dialects if other is not d)
        }

    def __iter__(self) -> Iterator[Dialect]:
        return iter(self._all)

    def get(self, name: str) -> Dialect:
        for dialect in self._all:
            if dialect.name == name:
                return dialect
        raise KeyError(name)

    # ------------------------------------------------------------ logins

    def login(self, client_id: str, username: str | None, password: bytes | None) -> Login | None:
        for dialect in self._all:
            login = dialect.login(client_id, username, password)
            if login is not None:
                return login
        return None

    # ------------------------------------------------------------ topics

    def family(self, topic: str) -> str:
        """The dialect a topic belongs to, for metrics ("other" if none)."""
        for dialect in self._all:
            if dialect.owns(topic):
                return dialect.name
        return "other"

    def may_publish(self, ref: DeviceRef, topic: str) -> bool:
        if topic in self._open:
            return True
        for dialect in self._all:  # noqa: SIM110 - every PUBLISH asks: a loop, not a generator
            if dialect.may_publish(ref, topic):
                return True
        return False

    def may_subscribe(self, ref: DeviceRef, topic_filter: str) -> bool:
        return any(d.may_subscribe(ref, topic_filter) for d in self._all)

    def covers(self, ref: DeviceRef, filters: Iterable[str], kind: type) -> bool:
        """Whether one of `filters` matches a topic on which `kind` reaches the device."""
        topics = [t for d in self._all for t in d.topics(ref, kind)]
        return any(topic_matches(f, t) for f in filters for t in topics)

    # ------------------------------------------------------------ messages

    def decode(
        self, ref: DeviceRef, topic: str, payload: bytes, now_ms: int
    ) -> tuple[Dialect, object] | None:
        routed = self._routes.get(topic)
        if routed is not None:
            message = routed.decode(ref, topic, payload, now_ms)
            return None if message is None else (routed, message)
        for dialect in self._all:
            message = dialect.decode(ref, topic, payload, now_ms)
            if message is not None:
                return dialect, message
        return None

    def encode(self, ref: DeviceRef, message: object) -> tuple[Dialect, Wire]:
        for dialect in self._all:
            wire = dialect.encode(ref, message)
            if wire is not None:
                return dialect, wire
        raise TypeError(f"no dialect carries {type(message).__name__}")


def default_registry() -> Registry:
    """OneNET (its thing model first: it owns part of OneNET's topics) and ThingsPanel."""
    from thingshub.dialects.onenet import OneNet
    from thingshub.dialects.thing import Thing
    from thingshub.dialects.thingspanel import ThingsPanel

    return Registry([Thing(), OneNet(), ThingsPanel()])
