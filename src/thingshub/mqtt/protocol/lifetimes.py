"""How long a session and its will outlive their connection.

Rules:
- Pure: times are numbers the caller passes in (`now`, seconds on its own
  monotonic clock); nothing here reads a clock or arms a timer. The server
  arms timers at the times returned.
- A 5.0 session lasts its Session Expiry Interval after its connection
  closes; a 3.1.1 one ends with it under clean session 1 and never ends
  under clean session 0. `NEVER` is never; the server's cap applies to both.
- A will is published when its delay has passed or when the session ends,
  whichever is first: at once when the session ends with the connection, or
  when the delay is 0. A session that resumes before then cancels it.
- A connection taken over leaves its session's fate to the new CONNECT
  (clean start or not): no end, no expiry; its will goes at once unless it
  has a delay and the session lives on.
"""

from __future__ import annotations

from dataclasses import dataclass

from thingshub.mqtt.codec.packets import MQTT_5, Connect

#: Session Expiry Interval value meaning "never expires".
NEVER = 0xFFFFFFFF


def session_expiry(packet: Connect, cap: int) -> tuple[int, int]:
    """The expiry interval `packet` asks for, and the one granted under `cap`
    (the server announces the granted one to a 5.0 client when they differ)."""
    if packet.protocol_level == MQTT_5:
        asked = packet.properties.session_expiry_interval or 0
    else:
        asked = 0 if packet.clean_start else NEVER
    return asked, min(asked, cap)


@dataclass(frozen=True, slots=True)
class Departure:
    """What follows when a connection with a session ends, at times on the caller's clock."""

    #: Publish the will now.
    will_now: bool = False
    #: Publish the will then, unless the session resumes before.
    will_at: float | None = None
    #: End the session now (after publishing the will).
    end_now: bool = False
    #: End the session then, unless it resumes before.
    expires_at: float | None = None


#: The plans of a session that ends with its connection (clean session 1, the
#: most common), made once: a frozen dataclass costs a call per field to build.
_END = Departure(end_now=True)
_WILL_AND_END = Departure(will_now=True, end_now=True)
_NOTHING = Departure()


def depart(
    now: float, *, expiry: int, will_delay: int | None, taken_over: bool = False
) -> Departure:
    """The plan for a session whose connection ended at `now`.

    `expiry` is the session's granted expiry interval; `will_delay` the will's
    Will Delay Interval (0 when it has none), or None when no will is to be sent.
    """
    if taken_over:
        if will_delay is None:
            return _NOTHING
        delay = 0 if expiry == 0 else min(will_delay, expiry)
        return _will(now, delay)
    if expiry == 0:
        return _END if will_delay is None else _WILL_AND_END
    expires_at = None if expiry == NEVER else now + expiry
    if will_delay is None:
        return Departure(expires_at=expires_at)
    plan = _will(now, min(will_delay, expiry))
    return Departure(plan.will_now, plan.will_at, expires_at=expires_at)


def _will(now: float, delay: int) -> Departure:
    if delay <= 0:
        return Departure(will_now=True)
    return Departure(will_at=now + delay)
