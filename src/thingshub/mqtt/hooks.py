"""The interface through which an application drives the MQTT server.

Rules:
- `authenticate` may answer at once (an `Accept` or `Refuse`) or with an
  awaitable of one, when it must look things up; answering at once keeps a
  connect cheap. Every other hook is called inline on the hot path and must
  not block.
- A hook never sees protocol state, only what it needs: the client
  (`ClientInfo`) and a `Message` (a client's PUBLISH is handed over as it was
  parsed: a `Publish` is a `Message`, with the packet's id and DUP flag besides,
  which a hook has no use for).
- `on_publish` decides what happens to a client's PUBLISH:
    * `None`: the server routes it to subscribers and acknowledges it now;
    * an int reason code: the application consumed it; acknowledge with that
      code now (a code >= 0x80 tells a 5.0 client it was refused);
    * an `asyncio.Future[int]`: consumed; the QoS 1 PUBACK (QoS 2 PUBREC) is
      sent, with the future's result as reason code, only when it completes.
      Acknowledgements still leave in the order the PUBLISHes arrived. A
      future that fails makes the server close a 3.1.1 connection without
      acknowledging (the client will resend) and answer 0x80 to a 5.0 client.
    * a `Settling`: as a future, for a message decided with many others at
      once: the server registers one waiter per connection and settlement,
      not a callback per message, and acknowledges the connection's messages
      of it in one go (still in arrival order).
- `authorize_subscribe` returns True to grant, False to refuse as "not
  authorized" (0x87; 0x80 for 3.1.1), or a reason code >= 0x80 to refuse with
  that code (3.1.1 clients always see 0x80).
- An exception raised by a hook is logged and counted; it never reaches
  another client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from thingshub.mqtt.codec.packets import Connect
from thingshub.mqtt.codec.packets import Message as Message  # noqa: PLC0414  # re-exported
from thingshub.mqtt.codec.properties import EMPTY, Properties
from thingshub.mqtt.codec.reasons import ReasonCode


class Peer(Protocol):
    """Whatever can tell a client's address when asked (the server's connection)."""

    @property
    def address(self) -> str: ...


class _Addressed:
    """The peer's "host:port", looked up only if asked for: it costs a system
    call per connect, and an open broker never asks."""

    __slots__ = ("_address", "_peer")

    def __init__(self, address: str | Peer) -> None:
        if isinstance(address, str):
            self._address: str | None = address
            self._peer: Peer | None = None
        else:
            self._address = None
            self._peer = address

    @property
    def address(self) -> str:
        if self._address is None:
            assert self._peer is not None
            self._address = self._peer.address
            self._peer = None
        return self._address

    def release_peer(self) -> None:
        """Forget the peer (its connection is gone): the peer is the server's
        connection, which holds this object, so keeping it would make a reference
        cycle per connection that only the cyclic collector frees. An address
        nobody asked for while connected is not looked up now (the socket is
        closed); it reads as the empty string."""
        if self._peer is not None:
            self._address = getattr(self._peer, "_address", None) or ""
            self._peer = None


class ConnectRequest(_Addressed):
    """What a client presented in CONNECT, for `authenticate`."""

    __slots__ = (
        "clean_start",
        "client_id",
        "keepalive",
        "password",
        "properties",
        "protocol_level",
        "username",
    )

    def __init__(
        self,
        client_id: str,
        username: str | None,
        password: bytes | None,
        protocol_level: int,
        clean_start: bool,
        keepalive: int,
        address: str | Peer,
        properties: Properties = EMPTY,
    ) -> None:
        self.client_id = client_id
        self.username = username
        self.password = password
        self.protocol_level = protocol_level
        self.clean_start = clean_start
        self.keepalive = keepalive
        self.properties = properties
        _Addressed.__init__(self, address)  # by name: super() costs a lookup per connect


#: An object without its __init__ (the factories below set every slot).
_new = object.__new__


def connect_request(client_id: str, packet: Connect, peer: Peer) -> ConnectRequest:
    """`ConnectRequest(...)` of `packet` (its client id `client_id`, perhaps
    assigned) for a client the server is connected to (`peer`, its connection),
    made without the type's __init__: the server makes one per connect, and a
    Python __init__ (two, with `_Addressed`'s) costs a call through the type's
    slot, dearer than the stores."""
    request = _new(ConnectRequest)
    request.client_id = client_id
    request.username = packet.username
    request.password = packet.password
    request.protocol_level = packet.protocol_level
    request.clean_start = packet.clean_start
    request.keepalive = packet.keepalive
    request.properties = packet.properties
    request._address = None
    request._peer = peer
    return request


@dataclass(frozen=True, slots=True)
class Accept:
    """Let the client in; `principal` is whatever the application wants to
    recognize it by later (it comes back in `ClientInfo.principal`).

    `session_key` names the session instead of the client id, so the
    application can scope client ids (two tenants may use the same one without
    taking over each other's session). None keeps the MQTT rule: the client id.

    `identity` makes connections exclusive beyond their client ids: at most one
    connection and one session per identity. Accepting a connection takes the
    identity over from whichever connection held it (closed, 0x8E for 5.0),
    and ends the session it held if that had another key (its will goes out as
    when any session ends). None: no such limit.
    """

    principal: Any = None
    session_key: str | None = None
    identity: str | None = None


#: Accept() as an open broker gives it to everyone (frozen: one serves all).
ANYONE = Accept()


@dataclass(frozen=True, slots=True)
class Refuse:
    """Refuse the CONNECT with a 5.0 reason code (mapped to 3.1.1 for old clients)."""

    reason_code: int = ReasonCode.NOT_AUTHORIZED
    reason: str = ""


class ClientInfo(_Addressed):
    """A connected client as the hooks see it. One object per connection.

    `session_key` is the key of its session: the client id unless
    `Accept.session_key` said otherwise. `seq` numbers connections in the
    order their CONNECTs arrived: of two, the higher is the newer login.
    """

    __slots__ = (
        "client_id",
        "connected_at",
        "principal",
        "protocol_level",
        "seq",
        "session_key",
        "username",
    )

    def __init__(
        self,
        client_id: str,
        username: str | None,
        protocol_level: int,
        address: str | Peer,
        principal: Any = None,
        connected_at: float = 0.0,
        session_key: str = "",
        seq: int = 0,
    ) -> None:
        self.client_id = client_id
        self.username = username
        self.protocol_level = protocol_level
        self.principal = principal
        self.connected_at = connected_at
        self.session_key = session_key
        self.seq = seq
        _Addressed.__init__(self, address)  # by name: super() costs a lookup per connect

    def __repr__(self) -> str:
        return (
            f"ClientInfo(client_id={self.client_id!r}, username={self.username!r}, "
            f"protocol_level={self.protocol_level}, session_key={self.session_key!r})"
        )


def client_info(
    client_id: str,
    username: str | None,
    protocol_level: int,
    peer: Peer,
    principal: Any,
    connected_at: float,
    session_key: str,
    seq: int,
) -> ClientInfo:
    """`ClientInfo(...)` for a client the server has accepted (`peer`, its
    connection), made without the type's __init__, as `connect_request` is."""
    info = _new(ClientInfo)
    info.client_id = client_id
    info.username = username
    info.protocol_level = protocol_level
    info.principal = principal
    info.connected_at = connected_at
    info.session_key = session_key
    info.seq = seq
    info._address = None
    info._peer = peer
    return info


class CloseReason(Enum):
    CLIENT_DISCONNECT = "client disconnected"
    CONNECTION_LOST = "connection lost"
    KEEPALIVE_TIMEOUT = "keepalive timeout"
    TAKEN_OVER = "session taken over"
    PROTOCOL_ERROR = "protocol error"
    KICKED = "disconnected by the server"
    SHUTDOWN = "server shutting down"


class Settling(Protocol):
    """Many messages' outcomes decided at once (e.g. one storage commit).

    The message just handed over is its member `last`; the server waits once
    per connection (`wait`), then reads each of its messages' `outcome`: a
    reason code, or the exception of a failure."""

    @property
    def last(self) -> int: ...
    @property
    def clean(self) -> bool:
        """Settled with every outcome 0 (no member failed)."""

    def wait(self, waiter: Callable[[], None]) -> None: ...
    def outcome(self, member: int) -> int | BaseException: ...


PublishOutcome = None | int | asyncio.Future[int] | Settling


class Hooks(Protocol):
    def authenticate(
        self, request: ConnectRequest
    ) -> Accept | Refuse | Awaitable[Accept | Refuse]: ...

    def authorize_publish(self, client: ClientInfo, topic: str) -> bool: ...

    def authorize_subscribe(self, client: ClientInfo, topic_filter: str) -> bool | int: ...

    def on_connect(self, client: ClientInfo) -> None: ...

    def on_publish(self, client: ClientInfo, message: Message) -> PublishOutcome: ...

    def on_subscribe(self, client: ClientInfo, granted: list[tuple[str, int]]) -> None: ...

    def on_disconnect(self, client: ClientInfo, reason: CloseReason) -> None: ...


@dataclass
class OpenHooks:
    """An open broker: anyone in, everything allowed, except subscriptions to
    the filters in `deny_subscribe` (compared as strings, as an ACL would),
    which are refused with the protocol's generic failure code (0x80).

    The server calls neither `authorize_publish` nor `on_publish` of an
    `OpenHooks` itself (two calls a message saved): to change them, subclass."""

    deny_subscribe: set[str] = field(default_factory=set)

    def authenticate(self, request: ConnectRequest) -> Accept | Refuse:
        return ANYONE

    def authorize_publish(self, client: ClientInfo, topic: str) -> bool:
        return True

    def authorize_subscribe(self, client: ClientInfo, topic_filter: str) -> bool | int:
        if topic_filter in self.deny_subscribe:
            return ReasonCode.UNSPECIFIED_ERROR
        return True

    def on_connect(self, client: ClientInfo) -> None:
        return None

    def on_publish(self, client: ClientInfo, message: Message) -> PublishOutcome:
        return None

    def on_subscribe(self, client: ClientInfo, granted: list[tuple[str, int]]) -> None:
        return None

    def on_disconnect(self, client: ClientInfo, reason: CloseReason) -> None:
        return None
