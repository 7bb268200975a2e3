"""The edge node: carries out the sessions' commands against the room hub,
the state store, the bus, the connection registry and the peer inbox.

Transport adapters (the aiohttp WebSocket handler, later the QUIC one) own the
sockets; they hand this class raw frames (``receive``) and a ``Sink`` to write
to. Everything a room does is here once, whatever the transport.

``EdgeNode`` is the one object the adapters and the composition root use. It
keeps the connections' lifecycle, the dispatch of commands, publishing and
the room fan-out (the hot path is ``edge/roomfeed.py``'s: bus -> hub -> sockets, with
the node's one flush timer) and the online counts; it composes its parts:
- ``edge/writer.py`` (``Writer``): every write to a connection and every
  fan-out result, counted and logged in one place;
- ``edge/hello.py`` (``Hello``): the hello after the token (the per-user cap,
  the connect proxy, ``welcome``, the hand-over to the peer side);
- ``edge/rooms.py`` (``Rooms``): join (or redirect), leave, sync and the state
  reply they share, the state mode of big rooms, moving a room's members;
- ``edge/peers.py`` (``PeerDelivery``): peer messages, the inbox replay, gap
  fills and pacing, with their theory of operation;
- ``edge/history.py`` (``EdgeHistory``): the actions a room keeps, for
  ``joined`` and HTTP, and retract;
- ``edge/presence.py`` (``Presence``): the member lists of the rooms that
  keep presence, per tick, cluster-wide;
- ``edge/moderation.py`` (``Moderation``): bans, mutes, kicks, disconnects
  and closed rooms, applied on every edge;
- ``edge/proxies.py`` (``Proxies``): the backend's publish, connect and join
  hooks; ``edge/events.py`` (``MemberEvents``): room and member events.

Paths:
- action:  session validates -> ``publish_action`` stamps sender, seq and
  time, encodes msgpack once -> bus ``room.<id>`` -> ``RoomFeed.on_room_message`` on
  every edge with members -> ``Hub.broadcast`` (same bytes to every member).
- state:   session authorises -> ``write_state`` applies in the store
  (versions, compare-and-set) -> the change is published like an action,
  with CONTROL priority.
- peer:    inbox append (durable first, within the addressee's cap) ->
  ``peer_ack`` to the sender -> registry says which nodes hold the
  addressee -> bus ``node.<id>`` -> ``on_node_message`` writes to the
  addressee's local connections, in seq order with no gap (see
  edge/peers.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from edge.auth import Identity, verify_token
from edge.config import EdgeConfig
from edge.events import MemberEvents
from edge.fanout import Conn, Hub, Sink
from edge.hello import Hello
from edge.history import EdgeHistory
from edge.metrics import Metrics
from edge.moderation import Moderation
from edge.peers import PeerDelivery
from edge.presence import Presence
from edge.proxies import Proxies
from edge.roomfeed import RoomFeed
from edge.rooms import Rooms
from edge.session import Authenticate, Phase, Session
from edge.writer import Writer
from plumbing.ratelog import LogLimiter, RateLimitedLog
from room_router.bus import Bus, Subscription, node_subject, room_subject
from room_router.events import NO_EVENTS, EventSink
from room_router.gate import RoomGate
from room_router.history import HistoryStore, MemoryHistoryStore
from room_router.hooks import HookClient
from room_router.inbox import Inbox
from room_router.moderation import MemorySanctions, Sanctions
from room_router.presence import MemoryPresenceStore, PresenceStore
from room_router.ratelimit import RateLimiter, SharedRateLimiter
from room_router.registry import ConnectionRegistry
from room_router.roomconfig import RoomPolicies
from state_versions.store import StateStore
from wire.close_codes import CloseCode
from wire.codecs import Variant, encode_msgpack
from wire.decode import decode_frame
from wire.encoded import Encoded
from wire.errors import (
    FrameTooLarge,
    InternalError,
    LiveroomError,
    RateLimited,
    TooManySections,
    Unauthorized,
    UnsupportedVersion,
)
from wire.frames import REDIRECT_MOVED
from wire.incoming import (
    AckPeer,
    Join,
    Leave,
    Moderate,
    Ping,
    SendAction,
    SendPeer,
    Sync,
    WriteState,
)
from wire.outgoing import (
    ActionIds,
    action_frame,
    moderated_frame,
    online_frame,
    pong_frame,
    state_frame,
)

log = logging.getLogger("liveroom.edge")

SYSTEM_SENDER = {"id": "system", "name": "system", "role": "system"}


class EdgeNode:
    def __init__(self, *, node_id: str, config: EdgeConfig, jwt_secret: str,
                 store: StateStore, bus: Bus, registry: ConnectionRegistry,
                 inbox: Inbox, metrics: Metrics,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 shared_action_limiter: SharedRateLimiter | None = None,
                 policies: RoomPolicies | None = None,
                 history: HistoryStore | None = None,
                 presence_store: PresenceStore | None = None,
                 sanctions: Sanctions | None = None,
                 hooks: HookClient | None = None,
                 events: EventSink = NO_EVENTS) -> None:
        self.node_id = node_id
        self.config = config
        # The rooms config in force (--rooms-config, reloaded on SIGHUP).
        self.policies = policies or RoomPolicies()
        self.store = store
        self.bus = bus
        self.registry = registry
        self.inbox = inbox
        self.metrics = metrics
        self.hub = Hub(config.coalesce_window, monotonic,
                       c_send_loop=config.send_loop == "c")
        # Events to the backend (room_router/events.py; room and member ones: edge/events.py).
        self.events = events
        self.member_events = MemberEvents(node_id, events, self.policies, self.hub)
        # Failures a client can cause at will are logged through this, so
        # that a flood of them costs a bounded number of lines (plumbing/ratelog.py).
        self.errlog = RateLimitedLog(
            log, LogLimiter(config.error_log_lines, config.error_log_interval), monotonic)
        self._secret = jwt_secret
        self.clock = clock
        self._monotonic = monotonic
        self._action_limiter = RateLimiter(config.action_rate)
        self._peer_limiter = RateLimiter(config.peer_rate)
        # Slow mode (per user and room, a rate per room from its policy).
        self._slow_limiter = RateLimiter(config.action_rate)
        self.action_ids = ActionIds()
        # The per-user action limit across edges (Redis), checked after the
        # local one and before publishing: see room_router/ratelimit_redis.py.
        self._shared_action_limiter = shared_action_limiter
        self._room_subs: dict[str, Subscription] = {}
        self._seq: dict[str, int] = {}
        self._users: dict[str, set[Conn]] = {}
        # Authenticated connections per user (the cap of max_conns_per_user),
        # counted from the hello on, before the user is in _users.
        self._conns_of: dict[str, int] = {}
        self._next_cid = 0
        self._node_sub: Subscription | None = None
        # The distributed deployment sets these (liveroom.distributed): the
        # gate (see the property below); online_elsewhere holds each local
        # room's members on the OTHER live edges, so the online count is the
        # sum over the cluster.
        self.online_elsewhere: dict[str, int] = {}
        # The parts, composed: each gets what it uses, the writer's methods
        # as bound methods (no back-reference to the node).
        self.writer = Writer(metrics=metrics, errlog=self.errlog, monotonic=monotonic,
                             drop=self._drop_from_rooms)
        # The hot path: a room's messages from the bus to its members.
        self.feed = RoomFeed(hub=self.hub, config=config, writer=self.writer,
                             monotonic=monotonic)
        # Room history (edge/history.py): kept by the stamping edge.
        # (``is None``, not ``or``: an empty memory store is falsy.)
        self.history = EdgeHistory(store=history if history is not None else MemoryHistoryStore(),
                                   policies=self.policies, bus=bus, clock=clock,
                                   errlog=self.errlog, events=events)
        self.presence = Presence(node_id=node_id,
                                 store=presence_store if presence_store is not None
                                 else MemoryPresenceStore(),
                                 bus=bus, hub=self.hub, policies=self.policies,
                                 metrics=metrics, errlog=self.errlog, clock=clock,
                                 monotonic=monotonic, account=self.writer.account)
        self.rooms = Rooms(config=config, store=store, hub=self.hub, monotonic=monotonic,
                           deliver=self.writer.deliver, reply=self.writer.reply,
                           account=self.writer.account,
                           opened=self._room_opened, emptied=self._room_emptied,
                           settled=bus.settled,
                           history=self.history.for_join, presence=self.presence)
        # The backend hooks (edge/proxies.py; --backend-url).
        self.proxies = Proxies(hooks, max_comment_chars=config.max_comment_chars,
                               max_value_bytes=config.max_value_bytes, events=events)
        self.peers = PeerDelivery(config=config, inbox=inbox, registry=registry, bus=bus,
                                  metrics=metrics, errlog=self.errlog, clock=clock,
                                  monotonic=monotonic, users=self._users,
                                  deliver=self.writer.deliver, reply=self.writer.reply)
        self.moderation = Moderation(
            sanctions=sanctions if sanctions is not None else MemorySanctions(), bus=bus,
            hub=self.hub, metrics=metrics, errlog=self.errlog, clock=clock,
            monotonic=monotonic, users=self._users, deliver=self.writer.deliver,
            remove=self.rooms.remove, disconnect=self.writer.disconnect, events=events)
        self.hello = Hello(node_id=node_id, config=config, conns_of=self._conns_of,
                           writer=self.writer, proxies=self.proxies, registry=registry,
                           peers=self.peers, clock=clock)

    # -- lifecycle -------------------------------------------------------
    def start(self) -> None:
        self._node_sub = self.bus.subscribe(node_subject(self.node_id),
                                            self.peers.on_node_message)
        self.moderation.start()

    def stop(self) -> None:
        """Close every connection with SERVER_SHUTDOWN (4101: reconnect)."""
        self.feed.stop()
        for conns in list(self._users.values()):
            for conn in list(conns):
                conn.close(CloseCode.SERVER_SHUTDOWN, "server shutting down")
        if self._node_sub is not None:
            self._node_sub.unsubscribe()
            self._node_sub = None
        self.peers.stop()
        self.history.stop()
        self.presence.stop()
        self.moderation.stop()

    def verify(self, token: object, now: float) -> Identity:
        return verify_token(token, self._secret, now)

    def open(self, sink: Sink) -> tuple[Conn, Session]:
        self._next_cid += 1
        conn = Conn(self._next_cid, sink, self.config.budget)
        session = Session(self.config, self.verify, self._action_limiter,
                          self._peer_limiter, conn.rooms, self.policies, self._slow_limiter)
        self.metrics.connections.inc()
        return conn, session

    async def close(self, conn: Conn, session: Session) -> None:
        """Forget a connection whose transport has gone. Idempotent."""
        if session.phase is Phase.CLOSED:
            return
        session.close()
        conn.closed = True
        self.metrics.connections.dec()
        self._drop_from_rooms(conn)
        if conn.user:
            held = self._conns_of.pop(conn.user, 1) - 1
            if held > 0:
                self._conns_of[conn.user] = held
            conns = self._users.get(conn.user)
            if conns is not None:
                conns.discard(conn)
                if not conns:
                    del self._users[conn.user]
            await self.registry.remove(conn.user, self.node_id, conn.cid)

    def _drop_from_rooms(self, conn: Conn) -> None:
        for room in list(conn.rooms):
            self.rooms.remove(conn, room)

    def _room_emptied(self, room: str) -> None:
        sub = self._room_subs.pop(room, None)
        if sub is not None:
            sub.unsubscribe()
        self._seq.pop(room, None)
        self.moderation.room_emptied(room)
        self.metrics.rooms.set(len(self.hub.rooms))
        self.member_events.closed(room)

    # -- frames in -------------------------------------------------------
    async def receive(self, conn: Conn, session: Session, data: bytes | str,
                      variant: Variant) -> None:
        """One client frame: decode, validate, carry out. Every failure becomes
        an error frame to this connection only; nothing propagates."""
        if session.phase is Phase.AWAITING_HELLO:
            # Until a hello is accepted, each frame is answered in its own
            # variant (an error to a broken first frame reaches the client in
            # the framing of its transport); the hello's variant then stays.
            # A member, not its string: the fan-out tells variants apart by
            # identity (wire.codecs.Variant). Only until the hello is accepted.
            conn.variant = Variant(variant)
        try:
            try:
                size = len(data) if isinstance(data, bytes) else len(data.encode())
                if size > self.config.max_frame_bytes:
                    raise FrameTooLarge(
                        f"frame of {size} bytes is over the limit of "
                        f"{self.config.max_frame_bytes}", limit=self.config.max_frame_bytes)
                frame = decode_frame(data, variant, self.config.max_value_bytes)
            except LiveroomError:
                # Too large or not decodable: it never reaches the session,
                # but costs a token of the frame budget all the same (a flood
                # of garbage is refused like any other flood: rate_limited).
                session.take_frame(None, self.clock())
                raise
            self.metrics.frames_in.labels(frame["type"]).inc()
            command = session.receive(frame, self.clock())
            await self._execute(conn, session, command)
        except LiveroomError as err:
            self.writer.send_error(conn, err)
            if isinstance(err, (Unauthorized, UnsupportedVersion)) and \
                    session.phase is Phase.AWAITING_HELLO:
                if isinstance(err, UnsupportedVersion):
                    code = CloseCode.UNSUPPORTED_VERSION
                elif err.extra.get("expired"):
                    code = CloseCode.TOKEN_EXPIRED  # get a new token, then reconnect
                else:
                    code = CloseCode.AUTH_FAILED
                self.writer.close(conn, code, err.message)
        except Exception as exc:
            self.errlog.exception(f"frame:{type(exc).__name__}",
                                  "internal error handling a frame from connection %d", conn.cid)
            self.writer.send_error(conn, InternalError())

    def close_connection(self, conn: Conn, code: int, reason: str) -> None:
        """For adapters' timers (hello timeout, token expiry)."""
        self.writer.close(conn, code, reason)

    async def _execute(self, conn: Conn, session: Session, cmd: object) -> None:
        if isinstance(cmd, SendAction):
            assert session.identity is not None
            ident = session.identity
            # A muted user's action reaches no one (a local cache: no I/O).
            self.moderation.check_action(ident, cmd.room, cmd.ref, self.clock())
            if self._shared_action_limiter is not None:
                wait = await self._shared_action_limiter.check(ident.user, cmd.room)
                if wait:
                    raise RateLimited(ref=cmd.ref, retry_after=round(wait, 3))
            role = ident.role_in(cmd.room)
            if self.policies.policy(cmd.room).proxies(cmd.kind):
                # The backend approves this kind first (edge/proxies.py).
                action_id = self.action_ids.next()
                body = await self.proxies.publish(ident, role, cmd, action_id)
                self.publish_action(cmd.room, cmd.kind, body, ident.public_in(role),
                                    action_id, cmd.id)
            else:
                self.publish_action(cmd.room, cmd.kind, cmd.body, ident.public_in(role),
                                    client_id=cmd.id)
        elif isinstance(cmd, Join):
            assert session.identity is not None
            await self.moderation.check_join(session.identity, cmd.room, cmd.ref)
            if cmd.room not in conn.rooms and self.policies.policy(cmd.room).join_proxy:
                granted = await self.proxies.join(session.identity, cmd.room, cmd.ref)
                session.admit(cmd.room, granted, conn.rooms)
            member = self.presence.member(session.identity, cmd.room)
            session.charge_reply(await self.rooms.join(conn, cmd, member), self.clock())
        elif isinstance(cmd, Leave):
            self.rooms.leave(conn, cmd)
        elif isinstance(cmd, WriteState):
            await self.write_state(cmd.room, cmd.section, cmd.value, cmd.expected, ref=cmd.ref)
        elif isinstance(cmd, Sync):
            session.charge_reply(await self.rooms.sync(conn, cmd), self.clock())
        elif isinstance(cmd, SendPeer):
            await self.peers.send(conn, cmd)
        elif isinstance(cmd, AckPeer):
            await self.peers.ack(conn, cmd)
        elif isinstance(cmd, Ping):
            self.writer.reply(conn, pong_frame(cmd.t, self.clock(), cmd.ref))
        elif isinstance(cmd, Moderate):
            assert session.identity is not None
            await self.moderate(conn, session.identity, cmd)
        elif isinstance(cmd, Authenticate):
            await self.hello.authenticate(conn, session, cmd)

    async def moderate(self, conn: Conn, ident: Identity, cmd: Moderate) -> None:
        """A host's or moderator's ``moderate`` frame (docs/MODERATION.md);
        the session checked the role and membership. ``retract`` is
        history's (edge/history.py), the others edge/moderation.py's."""
        if cmd.op == "retract" and cmd.id is not None:
            await self.history.retract(cmd.room, cmd.id, ident.user)
            self.writer.reply(conn, moderated_frame(cmd.room, cmd.op, cmd.ref, action_id=cmd.id))
            return
        self.writer.reply(conn, await self.moderation.moderate(ident, cmd))

    def publish_action(self, room: str, kind: str, body: Any, sender: dict[str, Any],
                       action_id: str | None = None, client_id: str | None = None) -> int:
        """Stamp and publish an action; returns its room sequence number.
        Used by client frames and the backend API alike (``action_id``: one
        already taken, by the backend API to answer it or for a proxied
        action; ``client_id``: the sender's)."""
        seq = self._seq.get(room, 0) + 1
        if room in self.hub.rooms:
            # Kept while the room has members here (dropped when it empties),
            # so the map is bounded by the rooms this edge serves.
            self._seq[room] = seq
        self.metrics.actions.labels(kind if kind in ("comment", "gift", "like") else "custom").inc()
        action_id, ts = action_id or self.action_ids.next(), self.clock()
        payload = encode_msgpack(action_frame(room, kind, body, sender, seq, ts, action_id,
                                              client_id))
        self.bus.publish(room_subject(room), payload)
        self.history.keep(room, kind, action_id, ts, payload)
        return seq

    async def write_state(self, room: str, section: str, value: Any,
                          expected: int | None, ref: Any = None) -> tuple[int, int]:
        """Apply a state change and push it to the room; (partial, total).
        A room whose config caps its sections below the store's
        (``max_sections``) is checked here first: one more read, only for
        such rooms; writes racing on two edges may pass it by one each,
        the store's own cap (--max-sections) is the hard bound."""
        try:
            cap = self.policies.policy(room).max_sections
            if cap:
                _, versions = await self.store.versions(room)
                if section not in versions and len(versions) >= cap:
                    raise TooManySections(
                        f"room {room!r} has {len(versions)} sections, its config's maximum",
                        limit=cap)
            change = await self.store.apply(room, section, value, expected)
        except LiveroomError as err:
            err.ref = ref
            raise
        self.metrics.state_changes.inc()
        self.bus.publish(room_subject(room), encode_msgpack(state_frame(
            change.room, change.section, change.partial, change.total, change.value)))
        return change.partial, change.total

    def tick_online(self) -> None:
        """Broadcast each room's member count where it changed (a timer calls
        this every ``online_interval`` seconds)."""
        self.presence.tick()
        now = self._monotonic()
        for room, count in list(self.hub.online_changes(self.online_elsewhere)):
            self.rooms.update_state_mode(room)  # a mode changes only with the count
            enc = Encoded(online_frame(room, count))
            self.writer.account(self.hub.broadcast(room, enc, now), now)
        self.member_events.tick()

    # -- rooms (edge/rooms.py) -------------------------------------------
    @property
    def gate(self) -> RoomGate | None:
        """Whether this edge serves a room (else a join gets a redirect);
        the distributed deployment sets it (liveroom.distributed)."""
        return self.rooms.gate

    @gate.setter
    def gate(self, gate: RoomGate | None) -> None:
        self.rooms.gate = gate

    def _room_opened(self, room: str) -> None:
        """A room's first local member joined: its actions come here now."""
        self._room_subs[room] = self.bus.subscribe(room_subject(room),
                                                   self.feed.on_room_message)
        self.metrics.rooms.set(len(self.hub.rooms))
        self.member_events.opened(room)

    def redirect_room(self, room: str, urls: list[str] | tuple[str, ...],
                      reason: str = REDIRECT_MOVED) -> int:
        """Tell the room's local members to join it at ``urls`` (the room
        moved to another group) and drop them from it here; returns how many
        were told (``Rooms.redirect``)."""
        return self.rooms.redirect(room, urls, reason)

    # -- what the heartbeat re-asserts (distributed registries) ------------
    def local_connections(self) -> list[tuple[str, int]]:
        """(user, connection id) of every authenticated local connection."""
        return [(user, conn.cid) for user, conns in self._users.items() for conn in conns]

    def local_counts(self) -> dict[str, int]:
        """Each room with local members -> its local member count."""
        return {room: self.hub.count(room) for room in self.hub.rooms}
