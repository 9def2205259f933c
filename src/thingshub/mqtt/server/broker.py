"""The MQTT server: listeners, sessions, CONNECT, and the application's API.

Rules:
- One `Broker` per process, on one event loop. Every state change happens on
  that loop; nothing here blocks it.
- A session, and an identity the application gives, has at most one
  connection: the newest CONNECT takes over (takeover.py).
- A will topic (or will Response Topic) that is no topic name closes a 3.1.1
  connection without CONNACK [MQTT-3.1.4-1]; 5.0 first gets CONNACK 0x82.
- Sessions: a clean start discards what was there; otherwise the session
  resumes with its subscriptions, its in-flight messages (resent with DUP)
  and its queue. A session ends `expiry_interval` seconds after its
  connection closes (3.1.1 clean-session 0: never, unless capped).
- Wills: published when a connection ends without a normal DISCONNECT
  (keepalive expiry, network loss, protocol error, takeover, or DISCONNECT
  0x04), after the will delay or when the session ends, whichever is first;
  never if the session resumes before that.
- Keepalive: a client silent for 1.5x its keepalive is disconnected; a
  connection without CONNECT after `connect_timeout` is closed, and over TLS
  first one whose handshake takes longer (uncounted until done). While we are
  not reading from a client (throttled, see connection.py) its silence is
  ours, and does not count. Each connection's machine (mqtt/protocol) says
  when it has timed out; a sweep every `sweep_interval` asks them all.
- The public methods below the application's API are what a connection asks
  of the server (connection.py's `Host`); no module reaches into another's
  private names.
- The application's hooks are called for every decision that is its own;
  an exception in a hook is logged and counted, and only affects that client.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from ssl import SSLContext

from thingshub.mqtt.codec.packets import (
    MQTT_3_1_1,
    MQTT_5,
    Connack,
    Connect,
    Subscribe,
    Unsubscribe,
)
from thingshub.mqtt.codec.properties import EMPTY, Properties
from thingshub.mqtt.codec.reasons import ReasonCode
from thingshub.mqtt.codec.writer import encode
from thingshub.mqtt.hooks import (
    ANYONE,
    Accept,
    ClientInfo,
    CloseReason,
    Hooks,
    Message,
    OpenHooks,
    PublishOutcome,
    Refuse,
    client_info,
    connect_request,
)
from thingshub.mqtt.logs import logger
from thingshub.mqtt.protocol.lifetimes import session_expiry
from thingshub.mqtt.protocol.machine import AUTHENTICATING, CONNECTED
from thingshub.mqtt.server.census import Census
from thingshub.mqtt.server.config import BrokerConfig
from thingshub.mqtt.server.connection import Connection
from thingshub.mqtt.server.delivery import BrokerStats, Delivery
from thingshub.mqtt.server.departures import Departures
from thingshub.mqtt.server.inbound import AckBudget
from thingshub.mqtt.server.output import Output
from thingshub.mqtt.server.session import Session
from thingshub.mqtt.server.subscriptions import Subscriptions
from thingshub.mqtt.server.takeover import Takeover
from thingshub.mqtt.topics import valid_topic_name, valid_will

log = logger("thingshub.mqtt")

#: The 3.1.1 CONNACKs of an accepted connection, without and with a session present.
_CONNACK_V3 = {present: encode(Connack(0, present), MQTT_3_1_1) for present in (False, True)}


class Broker:
    def __init__(self, hooks: Hooks | None = None, config: BrokerConfig | None = None) -> None:
        self.hooks: Hooks = hooks if hooks is not None else OpenHooks()
        self.config = config or BrokerConfig()
        self.stats = BrokerStats()
        self.sessions: dict[str, Session] = {}
        self.takeover = Takeover(self.sessions, self.end_session)
        self.census = Census(self.config, self.stats)
        self._connections = self.census.open
        # Asked on every connect: bound once, with no method of ours in between.
        self.register: Callable[[Connection], bool] = self.census.add  # False: one too many
        self.unregister: Callable[[Connection], None] = self.census.remove
        self.next_seq: Callable[[], int] = self.takeover.number  # a CONNECT's number
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        #: Messages handed to the application whose acknowledgement still waits.
        self.acks = AckBudget(self.config.max_waiting_acks)
        #: Connections that received data since `activity()` was last called;
        #: kept only when the application asks for it (and calls activity()).
        self.track_activity = False
        self.active: list[Connection] = []
        self._started = False

    # ------------------------------------------------------------ lifecycle

    #: Set by `start`: plain attributes, not properties, as every packet reads them.
    loop: asyncio.AbstractEventLoop
    delivery: Delivery
    output: Output
    subscriptions: Subscriptions
    departures: Departures
    #: A CONNECTED connection ended: departures.py's, bound at start (see `Host`).
    detach: Callable[..., None]

    def _bind_loop(self) -> None:
        if not self._started:
            self._started = True
            self.loop = asyncio.get_running_loop()
            #: Connections' output, written at the end of each loop turn.
            self.output = Output(self.loop, self.stats)
            self.delivery = Delivery(self.config, self.stats, self.loop)
            self.subscriptions = Subscriptions(self.hooks, self.stats, self.delivery)
            self.departures = Departures(
                self.sessions,
                self.hooks,
                self.stats,
                self.delivery,
                self.takeover,
                self.incoming,
                self.loop,
            )
            self.detach = self.departures.detach
            self._sweeper = self.loop.create_task(self._sweep())

    async def start(
        self, host: str = "127.0.0.1", port: int = 1883, *, ssl: SSLContext | None = None
    ) -> int:
        """Listen on host:port (0 = any port), over TLS with `ssl`; returns the bound port."""
        self._bind_loop()
        server = await self.loop.create_server(
            # A partial, not a lambda: no Python frame of its own per accept.
            partial(Connection, self),
            host,
            port,
            **self.config.listen_options(ssl),
        )
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def connection(self) -> Connection:
        """A connection for a transport of the caller's (MQTT over WebSocket,
        websocket.py): it starts as an accepted socket's does, at
        `connection_made`, and is counted, limited and closed with the rest."""
        self._bind_loop()
        return Connection(self)

    @property
    def ports(self) -> list[int]:
        return [int(s.sockets[0].getsockname()[1]) for s in self._servers if s.sockets]

    async def stop(self) -> None:
        """Stop accepting, disconnect every client (0x8B for 5.0), end timers."""
        self.census.closed = True
        for server in self._servers:
            server.close()
        for conn in list(self._connections):
            conn.close(CloseReason.SHUTDOWN, ReasonCode.SERVER_SHUTTING_DOWN, send_will=False)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for task in list(self._tasks):
            task.cancel()
        for session in self.sessions.values():
            session.cancel_timers()
        await asyncio.sleep(0)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweep(self) -> None:
        interval = self.config.sweep_interval
        while True:
            await asyncio.sleep(interval)
            now = self.loop.time()
            for conn in list(self._connections):
                # Asked of every connection every second: one call for those not yet due.
                deadline = conn.machine.deadline()
                if deadline is not None and now > deadline:
                    conn.check_timeout(now)

    # ------------------------------------------------------------ the application's API

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Properties = EMPTY,
    ) -> int:
        """Publish as the server itself; returns how many sessions it went to."""
        if not valid_topic_name(topic):
            raise ValueError(f"invalid topic name {topic!r}")
        message = Message(topic, payload, qos, retain, properties)
        if properties.message_expiry_interval is not None:
            message.expires_at = self.loop.time() + properties.message_expiry_interval
        if retain:
            self.delivery.retain(message)
        return self.delivery.route(message, None)

    @property
    def subscribed(self) -> bool:
        """Whether any session holds a subscription (if not, a publish reaches nobody)."""
        return self._started and bool(self.delivery.router)

    def is_connected(self, session_key: str) -> bool:
        """Whether the session (by default keyed by client id) has a connection."""
        session = self.sessions.get(session_key)
        return session is not None and session.connection is not None

    def disconnect(
        self, session_key: str, reason_code: int = ReasonCode.ADMINISTRATIVE_ACTION
    ) -> bool:
        """Close a session's connection (its will is published); False if not connected."""
        session = self.sessions.get(session_key)
        if session is None or session.connection is None:
            return False
        session.connection.close(CloseReason.KICKED, reason_code)
        return True

    def disconnect_where(self, predicate: Callable[[ClientInfo], bool]) -> int:
        """Close every connection whose ClientInfo satisfies `predicate`."""
        n = 0
        for conn in list(self._connections):
            if (
                conn.machine.state is CONNECTED
                and conn.client is not None
                and predicate(conn.client)
            ):
                conn.close(CloseReason.KICKED, ReasonCode.ADMINISTRATIVE_ACTION)
                n += 1
        return n

    # ------------------------------------------------------------ CONNECT

    def connect(self, conn: Connection, packet: Connect) -> None:
        """Judge a CONNECT: at once when the application can answer at once (a
        cached device, an open broker), otherwise in a task while reading pauses."""
        v5 = packet.protocol_level == MQTT_5
        client_id = packet.client_id
        assigned = None
        if not client_id:
            if not v5 and not packet.clean_start:
                conn.refuse(
                    ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "empty client id, clean session 0"
                )
                return
            client_id = assigned = f"auto-{uuid.uuid4().hex}"
        if v5 and packet.properties.authentication_method is not None:
            conn.refuse(ReasonCode.BAD_AUTHENTICATION_METHOD, "enhanced authentication")
            return
        if packet.will is not None and not valid_will(packet.will):
            # No topic name at all [MQTT-4.7.1-1]: not 0x90 ("valid, not accepted").
            conn.refuse(ReasonCode.PROTOCOL_ERROR, "invalid will topic", connack=v5)
            return
        hooks = self.hooks
        if type(hooks) is OpenHooks:  # anyone in: no request to make, no call
            decision: Accept | Refuse | Awaitable[Accept | Refuse] = ANYONE
        else:
            try:
                decision = hooks.authenticate(connect_request(client_id, packet, conn))
            except Exception:
                self._authenticate_failed(conn)
                return
        # Answered at once: _decided written out (a call less per connect).
        if isinstance(decision, Accept):
            self._accept(conn, packet, client_id, assigned, decision)
            return
        if isinstance(decision, Refuse):
            self._decided(conn, packet, client_id, assigned, decision)
            return
        conn.wait_for_authentication()
        waiting = self._await_decision(conn, packet, client_id, assigned, decision)
        self._track(task := self.loop.create_task(waiting))
        conn.authenticating = task

    async def _await_decision(
        self,
        conn: Connection,
        packet: Connect,
        client_id: str,
        assigned: str | None,
        pending: Awaitable[Accept | Refuse],
    ) -> None:
        try:
            decision = await pending
        except Exception:
            self._authenticate_failed(conn)
            return
        finally:
            conn.authenticating = None
        if conn.machine.state is AUTHENTICATING:  # else the socket went away while we waited
            self._decided(conn, packet, client_id, assigned, decision)

    def _authenticate_failed(self, conn: Connection) -> None:
        self.stats.hook_errors += 1
        log.exception("authenticate hook failed for %s", conn.address)
        conn.refuse(ReasonCode.SERVER_UNAVAILABLE)

    def _decided(
        self,
        conn: Connection,
        packet: Connect,
        client_id: str,
        assigned: str | None,
        decision: Accept | Refuse,
    ) -> None:
        if isinstance(decision, Refuse):
            conn.refuse(decision.reason_code, decision.reason or "refused by authenticate")
        else:
            self._accept(conn, packet, client_id, assigned, decision)

    def _accept(
        self,
        conn: Connection,
        packet: Connect,
        client_id: str,
        assigned: str | None,
        decision: Accept,
    ) -> None:
        config = self.config
        v5 = packet.protocol_level == MQTT_5
        props = packet.properties
        now = self.loop.time()

        server_keep_alive = conn.machine.accept(packet)
        expiry, capped_expiry = session_expiry(packet, config.max_session_expiry)

        key = decision.session_key or client_id
        identity = decision.identity
        sessions = self.sessions
        existing = sessions.get(key)
        # No session of that key, no identity (most connects): no takeover to do.
        if existing is not None or identity is not None:
            if not self.takeover.claim(conn, key, identity):
                conn.refuse(
                    ReasonCode.SESSION_TAKEN_OVER, "a newer login came first", connack=False
                )
                return
            existing = sessions.get(key)  # the claim may have ended it
        session_present = False
        if existing is not None and packet.clean_start:
            self.end_session(existing)
            existing = None
        if existing is not None:
            session = existing
            session_present = True
            session.cancel_timers()
            session.pending_will = None  # resumed in time: the will is not sent
            session.protocol_level = packet.protocol_level
        else:
            session = Session(
                key,
                packet.protocol_level,
                config.max_inflight,
                config.max_queued,
                config.max_queued_bytes,
            )
            sessions[key] = session
        if identity is not None or session.identity is not None:
            self.takeover.bind(session, identity)
        session.expiry_interval = capped_expiry
        receive_max = props.receive_maximum if v5 and props.receive_maximum else 65535
        session.max_inflight = min(config.max_inflight, receive_max)

        conn.session = session
        conn.will = packet if packet.will is not None else None
        conn.client = client_info(
            client_id,
            packet.username,
            packet.protocol_level,
            conn,
            decision.principal,
            now,
            key,
            conn.seq,
        )
        session.connection = conn

        # The CONNACK leaves now, not at the loop's flush after the whole burst of
        # CONNECTs (the clients would idle meanwhile); what follows it waits for that.
        if not v5:
            conn.write_now(_CONNACK_V3[session_present])
        else:
            ack_props = Properties(
                session_expiry_interval=capped_expiry if capped_expiry != expiry else None,
                assigned_client_identifier=assigned,
                server_keep_alive=server_keep_alive,
                receive_maximum=config.receive_maximum,
                topic_alias_maximum=config.topic_alias_maximum,
                maximum_packet_size=config.max_packet_size,
            )
            conn.write_now(encode(Connack(0, session_present, ack_props), MQTT_5))
        hooks = self.hooks
        if type(hooks) is not OpenHooks:  # whose on_connect does nothing
            try:  # before activate(), which may handle packets sent after CONNECT (a DISCONNECT)
                hooks.on_connect(conn.client)
            except Exception:
                self.stats.hook_errors += 1
                log.exception("on_connect hook failed for %s", client_id)
        conn.activate()
        if session_present and session.connection is conn:
            self.delivery.resend(session)

    # ------------------------------------------------------------ PUBLISH

    def incoming(
        self, client: ClientInfo, message: Message, session: Session | None
    ) -> PublishOutcome:
        """A message from a client (or its will): authorize, hand to the application, route."""
        hooks = self.hooks
        if type(hooks) is not OpenHooks:  # which allows all and keeps nothing: no two calls
            try:
                allowed = hooks.authorize_publish(client, message.topic)
            except Exception:
                self.stats.hook_errors += 1
                log.exception("authorize_publish hook failed for %s", client.client_id)
                allowed = False
            if not allowed:
                self.stats.denied_publish += 1
                return ReasonCode.NOT_AUTHORIZED if client.protocol_level == MQTT_5 else 0
            try:
                outcome = hooks.on_publish(client, message)
            except Exception:
                self.stats.hook_errors += 1
                log.exception("on_publish hook failed for %s", client.client_id)
                return ReasonCode.UNSPECIFIED_ERROR if client.protocol_level == MQTT_5 else 0
            if outcome is not None:
                return outcome
        if message.retain:
            self.delivery.retain(message)
        n = self.delivery.route(message, client.session_key)
        if n == 0 and client.protocol_level == MQTT_5:
            return ReasonCode.NO_MATCHING_SUBSCRIBERS
        return None

    # ------------------------------------------------------------ a connection's requests

    def subscribe(self, conn: Connection, packet: Subscribe) -> None:
        self.subscriptions.subscribe(conn, packet)

    def unsubscribe(self, conn: Connection, packet: Unsubscribe) -> None:
        self.subscriptions.unsubscribe(conn, packet)

    def end_session(self, session: Session) -> None:
        self.departures.end(session)

    @property
    def waiting_acks(self) -> int:
        """Messages handed to the application whose acknowledgement still waits."""
        return self.acks.waiting

    # ------------------------------------------------------------ introspection

    def activity(self) -> list[tuple[ClientInfo, float]]:
        """The clients that sent something since the last call, each with the
        seconds since it last did. Costs nothing for idle clients: a connection
        enlists itself on its first read after a call."""
        now = self.loop.time()
        active = self.active
        self.active = []
        out = []
        for c in active:
            c.enlisted = False
            if c.machine.state is CONNECTED and c.client is not None:
                out.append((c.client, now - c.machine.last_rx))
        return out

    def connections(self) -> Iterable[ClientInfo]:
        return [
            c.client
            for c in self._connections
            if c.machine.state is CONNECTED and c.client is not None
        ]
