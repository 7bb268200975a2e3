"""The QUIC adapter: WebTransport over HTTP/3 (aioquic) on ``/wt``.

Theory of operation
-------------------
A client opens a QUIC connection (ALPN h3), sends an extended CONNECT for
``/wt`` (``:protocol webtransport``) and gets 200: that request stream is the
WebTransport *session*. It then opens one bidirectional stream in the
session; that stream carries the liveroom frames, length-prefixed
(``edge.wt_framing``), exactly the frames of a WebSocket. Each session is one
``Conn`` + ``Session`` of the ``EdgeNode``: the same rooms, fan-out, state
versions, peer messages and limits serve both transports. Other streams in a
session are reset; datagrams from the client are ignored.

Writes. The hub writes pre-built bytes (``Encoded.frame(WT_*)``, one build
per variant shared by every QUIC session) to ``WtSink.write``, which queues
them on the QUIC stream (and sends lossy datagram records as datagrams) but
does not transmit. It marks the connection dirty in ``TransmitQueue``, which
runs once per loop iteration and calls ``transmit()`` once per dirty
connection: a tick that writes ten messages to a session, or to its several
sessions on one connection, costs one ``transmit()`` (packet building,
encryption, ``sendto``) per connection, not ten.

Reads. aioquic delivers events synchronously; node.receive is a coroutine
(it may wait for the store or the inbox). Each session's complete frames go
to its ``Connection`` (``edge/connection.py``, the core every transport
shares), whose one task hands them to the node in order while there are
any. aioquic cannot pause one stream, so the queue is bounded by closing: a
session with more than ``_MAX_QUEUED_FRAMES`` frames or ``max_inbound_bytes``
bytes already waiting when another frame completes is closed with 4100 (the
frame being read is bounded by the hard frame limit, the unread bytes by
QUIC flow control).

Sessions. A QUIC connection may hold ``max_wt_sessions`` sessions; one more
CONNECT is answered 429 (the WebTransport draft lets a server refuse a
session with any non-2xx status), and the connection's other sessions go on.

Closing. ``WtSink.close(code, reason)`` sends the CLOSE_WEBTRANSPORT_SESSION
capsule with the liveroom close code (the same codes as on a WebSocket) and
ends the streams. A peer that does not close the connection within the
linger is cut off.

Migration. aioquic routes packets by connection id and validates a new path
(PATH_CHALLENGE) when a client's address changes, so a client that rebinds
its UDP socket keeps its connection, hence its sessions and rooms: nothing
here is keyed by address.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import (
    DatagramReceived,
    DataReceived,
    H3Event,
    HeadersReceived,
    WebTransportStreamDataReceived,
)
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, stream_is_unidirectional
from aioquic.quic.events import ConnectionTerminated, ProtocolNegotiated, QuicEvent, StreamReset
from prometheus_client.core import CounterMetricFamily, Metric

from edge.connection import Connection
from edge.node import EdgeNode
from edge.wt_framing import FrameReader, FrameTooBig, split_records
from wire.close_codes import CloseCode
from wire.webtransport import WT_PATH, wt_close_capsule, wt_variant_of

log = logging.getLogger("liveroom.quic")

# A session whose peer does not close after our close capsule is cut off after this.
_CLOSE_LINGER_S = 5.0
# Complete frames waiting for the node, per session (and, in bytes,
# EdgeConfig.max_inbound_bytes). A client that sends faster than the node
# handles frames is closed (4100) rather than queued without bound.
_MAX_QUEUED_FRAMES = 256
# Datagrams waiting in aioquic for room in a packet, per connection. Lossy
# state is latest-wins: past this, new datagrams are dropped (the next one or
# a sync heals), so a congested path never piles them up.
_MAX_PENDING_DATAGRAMS = 64
# The error code a refused extra stream is reset with:
# WT_BUFFERED_STREAM_REJECTED of draft-ietf-webtrans-http3.
_WT_STREAM_RESET = 0x3994BD84


@dataclass(frozen=True, slots=True)
class QuicOptions:
    host: str
    port: int
    cert: str
    key: str
    cert_sha256: str
    # Test hook: the share of outgoing datagrams dropped on purpose, to show
    # that lossy state heals (LIVEROOM_TEST_DATAGRAM_LOSS). 0 in production.
    datagram_loss: float = 0.0
    # A connection that hears nothing from its peer this long is dropped
    # (the QUIC idle timeout). The edge PINGs every third of it, so a quiet
    # room does not look idle: the heartbeat of a WebSocket, done by QUIC.
    idle_timeout: float = 30.0


class DatagramStats:
    """Counts of lossy-state datagrams, as plain ints: the sink runs once per
    recipient, where a Prometheus counter's lock would cost more than the
    send. Exported at scrape time (``QuicCollector``)."""

    __slots__ = ("dropped_full", "dropped_test", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.dropped_full = 0  # the connection already had too many waiting
        self.dropped_test = 0  # the LIVEROOM_TEST_DATAGRAM_LOSS hook


class TransmitQueue:
    """One ``transmit()`` per dirty connection per loop iteration."""

    __slots__ = ("_dirty", "_handle", "_loop", "transmits")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: dict[QuicConnectionProtocol, None] = {}
        self._handle: asyncio.Handle | None = None
        self.transmits = 0  # for tests and metrics: transmit() calls made

    def mark(self, proto: QuicConnectionProtocol) -> None:
        self._dirty[proto] = None
        if self._handle is None:
            self._handle = self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._handle = None
        dirty, self._dirty = self._dirty, {}
        for proto in dirty:
            self.transmits += 1
            proto.transmit()


class WtSink:
    """The ``Sink`` of one WebTransport session."""

    __slots__ = ("_drop", "_proto", "_stats", "closed", "session_id", "stream_id")

    def __init__(self, proto: EdgeQuicProtocol, session_id: int, stream_id: int,
                 drop: Callable[[], bool] | None, stats: DatagramStats) -> None:
        self._proto = proto
        self._stats = stats
        self.session_id = session_id
        self.stream_id = stream_id
        self._drop = drop
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        proto = self._proto
        quic = proto._quic
        stream, datagrams = split_records(data)
        if stream:
            try:
                quic.send_stream_data(self.stream_id, stream)
            except Exception:
                # The peer reset the stream or asked us to stop sending: the
                # session is over. Never raise into the fan-out loop.
                self.closed = True
                proto.session_gone(self.session_id)
                return
        if datagrams:
            http = proto.http
            assert http is not None
            drop = self._drop
            stats = self._stats
            for payload in datagrams:
                if len(quic._datagrams_pending) >= _MAX_PENDING_DATAGRAMS:
                    stats.dropped_full += 1
                elif drop is not None and drop():
                    stats.dropped_test += 1
                else:
                    stats.sent += 1
                    http.send_datagram(self.session_id, payload)
        proto.queue.mark(proto)

    def buffered(self) -> int:
        """Bytes queued on the stream and not yet acknowledged by the peer
        (aioquic keeps them until the ack; pinned by the QUIC tests)."""
        stream = self._proto._quic._streams.get(self.stream_id)
        return 0 if stream is None else len(stream.sender._buffer)

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._proto.close_session(self.session_id, code, reason)


class WtSession:
    """One WebTransport session: its frame reader and, once its stream is
    open, its ``Connection`` (the ``ConnectionIO`` of that connection)."""

    __slots__ = ("core", "ended", "proto", "reader", "session_id", "sink", "stream_id")

    def __init__(self, proto: EdgeQuicProtocol, session_id: int, hard_limit: int) -> None:
        self.proto = proto
        self.session_id = session_id
        self.stream_id: int | None = None
        self.reader = FrameReader(hard_limit)
        self.core: Connection | None = None
        self.sink: WtSink | None = None
        self.ended = False

    def end(self) -> None:
        """The peer is gone (or the stream ended): the frames already read
        still reach the node, then the session ends (``finished``)."""
        if not self.ended:
            self.ended = True
            if self.core is not None:
                self.core.lost()

    # -- ConnectionIO ---------------------------------------------------------
    def resume_reading(self) -> None:
        pass  # never paused: a session with too much waiting is closed

    def finished(self) -> None:
        """The node has forgotten the connection: the session goes; one
        ended by the client gets our halves of its streams ended too (no
        capsule)."""
        proto = self.proto
        proto.sessions.pop(self.session_id, None)
        if self.sink is not None and not self.sink.closed:
            self.sink.closed = True
            proto._end_streams(self, b"")


class EdgeQuicProtocol(QuicConnectionProtocol):
    """One QUIC connection: HTTP/3 with WebTransport sessions on ``/wt``."""

    def __init__(self, quic: QuicConnection, *, node: EdgeNode, queue: TransmitQueue,
                 drop: Callable[[], bool] | None, keepalive: float, stats: DatagramStats,
                 **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self.stats = stats
        self.node = node
        self.queue = queue
        self.http: H3Connection | None = None
        self.sessions: dict[int, WtSession] = {}
        self._drop = drop
        self._linger: asyncio.TimerHandle | None = None
        self._keepalive_s = keepalive
        self._keepalive_timer: asyncio.TimerHandle | None = None

    def _keepalive(self) -> None:
        """A PING every third of the idle timeout (a timer, not a task); the
        peer's ACK keeps the connection from idling out, its absence lets it."""
        self._keepalive_timer = self._loop.call_later(self._keepalive_s, self._keepalive)
        self._quic.send_ping(0)  # uid 0: nobody waits for this one
        self.queue.mark(self)

    # -- events in ---------------------------------------------------------
    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated):
            if event.alpn_protocol in H3_ALPN:
                self.http = H3Connection(self._quic, enable_webtransport=True)
                self._keepalive_timer = self._loop.call_later(self._keepalive_s,
                                                              self._keepalive)
        elif isinstance(event, ConnectionTerminated):
            for wts in list(self.sessions.values()):
                wts.end()
            for timer in (self._linger, self._keepalive_timer):
                if timer is not None:
                    timer.cancel()
            return
        elif isinstance(event, StreamReset):
            self._stream_gone(event.stream_id)
        if self.http is not None:
            for h3_event in self.http.handle_event(event):
                self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        if isinstance(event, WebTransportStreamDataReceived):
            self._stream_data(event)
        elif isinstance(event, HeadersReceived):
            self._request(event)
        elif isinstance(event, DataReceived):
            # Capsules on the CONNECT stream; its end (with or without a close
            # capsule) ends the session.
            wts = self.sessions.get(event.stream_id)
            if wts is not None and event.stream_ended:
                wts.end()
        elif isinstance(event, DatagramReceived):
            pass  # clients send frames on the stream only

    def _request(self, event: HeadersReceived) -> None:
        assert self.http is not None
        headers = dict(event.headers)
        path = headers.get(b":path", b"").split(b"?", 1)[0]
        cfg = self.node.config
        is_session = (headers.get(b":method") == b"CONNECT"
                      and headers.get(b":protocol") == b"webtransport"
                      and path == WT_PATH.encode())
        if is_session and len(self.sessions) >= cfg.max_wt_sessions:
            # One session is what a client needs; each costs a node
            # connection and timers, so a connection gets a few, not
            # aioquic's stream limit of them.
            self.http.send_headers(event.stream_id, [(b":status", b"429")], end_stream=True)
        elif is_session:
            wts = WtSession(self, event.stream_id, cfg.max_frame_bytes * cfg.hard_frame_factor)
            self.sessions[event.stream_id] = wts
            # A session that never opens its stream never says hello either.
            self._loop.call_later(cfg.hello_timeout, self._no_stream, wts)
            self.http.send_headers(event.stream_id, [
                (b":status", b"200"),
                (b"sec-webtransport-http3-draft", b"draft02"),
            ])
        else:
            status = b"404" if headers.get(b":method") == b"CONNECT" else b"405"
            self.http.send_headers(event.stream_id, [(b":status", status)], end_stream=True)
        self.queue.mark(self)

    def _stream_data(self, event: WebTransportStreamDataReceived) -> None:
        wts = self.sessions.get(event.session_id)
        if wts is None or wts.ended:
            return
        sid = event.stream_id
        if wts.stream_id is None and not stream_is_unidirectional(sid):
            self._bind(wts, sid)
        if sid != wts.stream_id:
            # One stream per session: others are refused.
            if not stream_is_unidirectional(sid):
                self._quic.reset_stream(sid, _WT_STREAM_RESET)
                self.queue.mark(self)
            return
        core = wts.core
        assert core is not None
        try:
            frames = wts.reader.feed(event.data)
        except FrameTooBig as exc:
            self.node.close_connection(core.conn, CloseCode.MESSAGE_TOO_BIG, str(exc))
            wts.end()
            return
        limit = self.node.config.max_inbound_bytes
        for frame in frames:
            if core.queued >= _MAX_QUEUED_FRAMES or core.queued_bytes > limit:
                self.node.close_connection(core.conn, CloseCode.SLOW_CONSUMER,
                                           "too many frames waiting")
                wts.end()
                return
            # The stream cannot pause: the bound is the close above.
            core.feed(frame, wt_variant_of(frame), len(frame))
        if event.stream_ended:
            wts.end()

    def _no_stream(self, wts: WtSession) -> None:
        if wts.stream_id is None and self.sessions.get(wts.session_id) is wts:
            self._end_streams(wts, wt_close_capsule(CloseCode.HELLO_TIMEOUT,
                                                    "no stream in time"))
            del self.sessions[wts.session_id]

    def _bind(self, wts: WtSession, stream_id: int) -> None:
        """The session's first bidirectional stream becomes its connection."""
        wts.stream_id = stream_id
        wts.sink = WtSink(self, wts.session_id, stream_id, self._drop, self.stats)
        wts.core = Connection(self.node, wts.sink, wts, self._loop)

    def session_gone(self, session_id: int) -> None:
        wts = self.sessions.get(session_id)
        if wts is not None:
            wts.end()

    def _stream_gone(self, stream_id: int) -> None:
        for wts in self.sessions.values():
            if stream_id in (wts.session_id, wts.stream_id):
                wts.end()

    # -- closing ----------------------------------------------------------------
    def close_session(self, session_id: int, code: int, reason: str) -> None:
        """Close one session with a liveroom close code: the capsule on the
        CONNECT stream, then the ends of both streams."""
        http = self.http
        wts = self.sessions.get(session_id)
        if http is None or wts is None:
            return
        self._end_streams(wts, wt_close_capsule(code, reason))
        if self._linger is None:
            self._linger = self._loop.call_later(_CLOSE_LINGER_S, self._linger_over)

    def _end_streams(self, wts: WtSession, capsule: bytes) -> None:
        http = self.http
        assert http is not None
        try:
            http.send_data(wts.session_id, capsule, end_stream=True)
            if wts.stream_id is not None:
                self._quic.send_stream_data(wts.stream_id, b"", end_stream=True)
        except Exception:  # the stream is already finished or reset
            log.debug("ending session %d", wts.session_id, exc_info=True)
        self.queue.mark(self)

    def _linger_over(self) -> None:
        self._linger = None
        if any(wts.sink is not None and wts.sink.closed for wts in self.sessions.values()):
            # A session we closed is still open at the peer: cut the connection.
            self.close(error_code=0x100, reason_phrase="liveroom session closed")


class QuicEdge:
    """The UDP endpoint of an edge node."""

    def __init__(self, server: QuicServer, options: QuicOptions, queue: TransmitQueue,
                 stats: DatagramStats) -> None:
        self.server = server
        self.options = options
        self.queue = queue
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        """Prometheus collector protocol: the counters, read at scrape time."""
        yield CounterMetricFamily("liveroom_quic_transmits",
                                  "transmit() calls of the QUIC write ticks "
                                  "(one per connection per tick)", value=self.queue.transmits)
        dg = CounterMetricFamily("liveroom_datagrams",
                                 "Lossy-state datagrams to QUIC sessions, by result",
                                 labels=["result"])
        dg.add_metric(["sent"], self.stats.sent)
        dg.add_metric(["dropped_full"], self.stats.dropped_full)
        dg.add_metric(["dropped_test"], self.stats.dropped_test)
        yield dg

    @property
    def port(self) -> int:
        transport = self.server._transport
        assert transport is not None
        port: int = transport.get_extra_info("sockname")[1]
        return port

    def close(self) -> None:
        self.queue.flush()
        self.server.close()


async def start_quic(node: EdgeNode, options: QuicOptions) -> QuicEdge:
    config = QuicConfiguration(
        is_client=False,
        alpn_protocols=H3_ALPN,
        # Datagrams are on (WebTransport needs them) and bounded by the
        # smallest packet size in practice, see WT_DATAGRAM_MAX.
        max_datagram_frame_size=65536,
        idle_timeout=options.idle_timeout,
    )
    config.load_cert_chain(options.cert, options.key)
    loop = asyncio.get_running_loop()
    queue = TransmitQueue(loop)
    stats = DatagramStats()
    drop: Callable[[], bool] | None = None
    if options.datagram_loss > 0:
        rng = random.Random()
        share = options.datagram_loss
        drop = lambda: rng.random() < share

    def create(quic: QuicConnection, **kwargs: Any) -> EdgeQuicProtocol:
        return EdgeQuicProtocol(quic, node=node, queue=queue, drop=drop,
                                keepalive=options.idle_timeout / 3, stats=stats, **kwargs)

    server = await serve(options.host, options.port, configuration=config,
                         create_protocol=create)
    edge = QuicEdge(server, options, queue, stats)
    node.metrics.registry.register(edge)
    return edge


__all__ = ["DatagramStats", "QuicEdge", "QuicOptions", "TransmitQueue", "start_quic"]
