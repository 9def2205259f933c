"""The one port every device protocol implements.

Rules:
- A dialect is a pure translator between the wire and the core's messages:
  (topic, payload) -> a message (`decode`), a message -> (topic, payload)
  pairs (`encode`), a CONNECT's credentials -> a `Login` (`login`, then
  `verify` against the device found). No I/O, no clock (time is an
  argument), no state that outlives a call.
- A dialect answers only for what is its own: `login` and `decode` return
  None for what is not; `encode` returns None for a message it does not
  carry, and an empty list for one it carries but has nothing to send for
  (a verdict its protocol never announces, say).
- A dialect owns its topic families (`owns`), its topic rights
  (`may_publish`, `may_subscribe`: a device reaches only what some dialect
  grants it) and its wire tables (error codes, result formats).
- `topics(ref, kind)` names the topics on which messages of `kind` reach a
  device, so that services can ask "does it listen for this?" without
  knowing any topic (the gateway matches them against subscriptions).
- A malformed payload on a dialect's own topic is still decoded: into a
  message that says so and carries the error, so that the service answers
  the device on the protocol's own error path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from thingshub.core.messages import DeviceRef
from thingshub.core.model import Device, DeviceLookup

#: What encode produces: the (topic, payload) pairs to publish, in order.
Wire = Sequence[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Login:
    """A CONNECT's credentials as one dialect reads them."""

    dialect: str
    #: How the device is found: ("d", product id, device name) or ("u", user name).
    lookup: DeviceLookup
    #: The dialect's own part (a parsed token, a password), for `verify`.
    secret: Any


#: Whether a password is a device's (the platform keeps the hashes and the pepper).
PasswordCheck = Callable[[Device, str], bool]


class Dialect(Protocol):
    #: The protocol family: the label of its metrics and of its command records.
    name: str
    #: Topics every device may publish on, whoever it is, which this dialect
    #: decodes (ThingsPanel's `devices/telemetry`): the registry answers
    #: `may_publish` for them, and routes their messages, without asking round.
    open_topics: frozenset[str]

    def login(self, client_id: str, username: str | None, password: bytes | None) -> Login | None:
        """The credentials in this dialect's form; None if they are not in it.

        Raises Unauthorized for credentials in its form that are malformed."""
        ...

    def verify(self, login: Login, device: Device, now_s: int, password_ok: PasswordCheck) -> None:
        """Raise Unauthorized, with the reason, unless `login` admits `device` now."""
        ...

    def owns(self, topic: str) -> bool:
        """Whether a topic belongs to this dialect's families."""
        ...

    def may_publish(self, ref: DeviceRef, topic: str) -> bool: ...

    def may_subscribe(self, ref: DeviceRef, topic_filter: str) -> bool: ...

    def decode(self, ref: DeviceRef, topic: str, payload: bytes, now_ms: int) -> object | None:
        """The message a device sent on one of this dialect's topics; None if not its own."""
        ...

    def encode(self, ref: DeviceRef, message: object) -> Wire | None:
        """What carries `message` to the device; None if this dialect does not carry it."""
        ...

    def topics(self, ref: DeviceRef, kind: type) -> tuple[str, ...]:
        """The topics on which messages of `kind` reach this device (none: not carried)."""
        ...
