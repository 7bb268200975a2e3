"""A connection's ``hello`` on one edge node, after the session verified the
token: the per-user connection cap, the connect proxy (``--connect-proxy``:
the backend may refuse the user or attach ``info``), the ``welcome`` with
the limits the connection runs under, the connection registry, and the
hand-over to the peer side (the inbox replay, ``PeerDelivery.attach``).

The cap's slot is taken before any await, so that hellos of one user racing
each other cannot all pass it; the node gives it back when the connection
closes (``conn.user`` is set from here on).
"""

from __future__ import annotations

from collections.abc import Callable

from edge.auth import Identity
from edge.config import EdgeConfig
from edge.fanout import Conn
from edge.peers import PeerDelivery
from edge.proxies import Proxies
from edge.session import Authenticate, Session
from edge.writer import Writer
from room_router.registry import ConnectionRegistry
from wire.close_codes import CloseCode
from wire.codecs import codec_of
from wire.decode import MAX_VALUE_DEPTH
from wire.errors import LiveroomError, Rejected, TooManyConnections
from wire.outgoing import welcome_frame, welcome_limits


class Hello:
    __slots__ = ("_clock", "_conns_of", "config", "node_id", "peers", "proxies", "registry",
                 "writer")

    def __init__(self, *, node_id: str, config: EdgeConfig, conns_of: dict[str, int],
                 writer: Writer, proxies: Proxies, registry: ConnectionRegistry,
                 peers: PeerDelivery, clock: Callable[[], float]) -> None:
        self.node_id = node_id
        self.config = config
        # Authenticated connections per user (the node's table: it gives a
        # slot back when a connection closes).
        self._conns_of = conns_of
        self.writer = writer
        self.proxies = proxies
        self.registry = registry
        self.peers = peers
        self._clock = clock

    async def authenticate(self, conn: Conn, session: Session, cmd: Authenticate) -> None:
        ident = cmd.identity
        held = self._conns_of.get(ident.user, 0)
        cap = self.config.max_conns_per_agent if ident.role == "agent" else \
            self.config.max_conns_per_user
        if held >= cap:
            err = TooManyConnections(
                f"user {ident.user!r} holds {held} connections on this edge, the maximum",
                ref=cmd.ref, limit=cap)
            self.writer.send_error(conn, err)
            self.writer.close(conn, CloseCode.TOO_MANY_CONNECTIONS, err.message)
            return
        self._conns_of[ident.user] = held + 1
        conn.user, conn.name, conn.role = ident.user, ident.name, ident.role
        if self.proxies.connects:
            proxied = await self._connect_proxy(conn, session, cmd)
            if proxied is None:
                return
            ident = proxied
        conn.identity = ident
        config = self.config
        self.writer.reply(conn, welcome_frame(
            cmd.ref, ident.public(), self.node_id, conn.cid, self._clock(),
            codec_of(conn.variant), welcome_limits(
                max_frame_bytes=config.max_frame_bytes,
                max_value_bytes=config.max_value_bytes,
                max_value_depth=MAX_VALUE_DEPTH,
                max_rooms=config.max_rooms_per_conn,
                actions_per_second=config.action_rate.per_second,
                actions_burst=config.action_rate.burst,
                frames_per_second=config.frame_rate.per_second,
                frames_burst=config.frame_rate.burst,
                max_sections=config.max_sections)))
        await self.registry.add(ident.user, self.node_id, conn.cid)
        # The peer side takes the connection from here: live copies, after
        # the inbox replay (PeerDelivery.attach).
        await self.peers.attach(conn, cmd.inbox_cursor)

    async def _connect_proxy(self, conn: Conn, session: Session,
                             cmd: Authenticate) -> Identity | None:
        """The identity with what the backend attached, or None when it
        refused (close 4010) or did not answer (close 4110)."""
        try:
            ident = await self.proxies.connect(cmd.identity)
        except LiveroomError as err:
            err.ref = cmd.ref
            self.writer.send_error(conn, err)
            code = CloseCode.CONNECT_REFUSED if isinstance(err, Rejected) \
                else CloseCode.BACKEND_UNAVAILABLE
            self.writer.close(conn, code, err.message[:120])
            return None
        if conn.closed:
            return None
        session.identity = ident
        return ident
