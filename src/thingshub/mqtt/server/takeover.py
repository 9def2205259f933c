"""Takeover: the newest login of a session or of an identity wins.

Rules:
- Every CONNECT is numbered as it arrives (`Link.seq`, increasing per
  server): that number, not the order in which the application's decisions
  come back, says which login is the newer.
- A session key has at most one connection (the MQTT rule): accepting a
  connection closes the one that held its session (DISCONNECT 0x8E for 5.0),
  and the new CONNECT's clean start decides whether the session goes on.
- An identity (`Accept.identity`, the application's, e.g. one device) holds
  at most one connection and one session, whatever their client ids.
  Accepting a connection closes the one that held its identity, as above,
  and ends the session that one held when its key is another: its
  subscriptions, messages in flight and queue are dropped, and its will goes
  out as when any session ends (a takeover is no normal DISCONNECT). A
  persistent session left behind by the identity, connected or not, is
  ended the same way, so an identity never piles up sessions.
- A CONNECT whose decision comes back after a newer CONNECT of the same
  session or identity was accepted has lost before it began: it is closed
  without CONNACK (5.0 has no CONNACK code for "taken over"), and the newer
  connection stays.
- An identity that logged in on another server (`evict`: a node of a
  cluster, which judged that login the newer) loses its connection and its
  session here as it would to a login here whose session key is another.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING

from thingshub.mqtt.codec.reasons import ReasonCode
from thingshub.mqtt.hooks import CloseReason

if TYPE_CHECKING:
    from thingshub.mqtt.server.ports import Link
    from thingshub.mqtt.server.session import Session


class Takeover:
    __slots__ = ("_end_session", "_held", "_sessions", "number")

    def __init__(
        self, sessions: dict[str, Session], end_session: Callable[[Session], None]
    ) -> None:
        #: The server's sessions by key, and how it ends one.
        self._sessions = sessions
        self._end_session = end_session
        #: The number of a CONNECT that has just arrived (`Link.seq`): the
        #: counter's own `__next__`, no Python frame per connect.
        self.number: Callable[[], int] = itertools.count(1).__next__
        #: identity -> the session it holds
        self._held: dict[str, Session] = {}

    def claim(self, conn: Link, key: str, identity: str | None) -> bool:
        """Make way for `conn`, about to be accepted for session `key` and
        `identity`; False if a newer login holds either (`conn` lost)."""
        existing = self._sessions.get(key)
        held = self._held.get(identity) if identity is not None else None
        for session in (existing, held):
            if session is not None and session.connection and session.connection.seq > conn.seq:
                return False
        if existing is not None and existing.connection is not None:
            existing.connection.close(
                CloseReason.TAKEN_OVER, ReasonCode.SESSION_TAKEN_OVER, send_will=True
            )
        if held is not None and held is not existing:
            if held.connection is not None:
                held.connection.close(
                    CloseReason.TAKEN_OVER, ReasonCode.SESSION_TAKEN_OVER, send_will=True
                )
            self._end_session(held)
        return True

    def evict(self, identity: str) -> bool:
        """`identity` holds a connection elsewhere now: close its connection here
        and end its session; False if it held none here."""
        held = self._held.get(identity)
        if held is None:
            return False
        if held.connection is not None:
            held.connection.close(
                CloseReason.TAKEN_OVER, ReasonCode.SESSION_TAKEN_OVER, send_will=True
            )
        self._end_session(held)
        return True

    def bind(self, session: Session, identity: str | None) -> None:
        """`session` is held by `identity` from now on."""
        if session.identity != identity:
            self.release(session)
            session.identity = identity
        if identity is not None:
            self._held[identity] = session

    def release(self, session: Session) -> None:
        """`session` has ended (or changes hands): its identity holds nothing."""
        identity = session.identity
        if identity is not None and self._held.get(identity) is session:
            del self._held[identity]

    def __len__(self) -> int:
        return len(self._held)
