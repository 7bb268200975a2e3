"""A WebTransport (HTTP/3 over QUIC, aioquic) connection to an edge's ``/wt``.

``LiveroomClient`` uses it for ``https://…/wt`` URLs. It offers the part of
aiohttp's client WebSocket that ``LiveroomClient`` uses (``send_bytes``,
``send_str``, ``receive``, ``close``, ``closed``, ``close_code``), so the
client code is the same for both transports; frames and datagrams both come
out of ``receive`` as messages (binary for msgpack, text for JSON).

Certificates: like a browser's ``serverCertificateHashes``, ``cert_sha256``
pins the server's certificate by the SHA-256 of its DER bytes (the hash
``liveroom certs`` prints and ``GET /v1/quic`` serves); ``cafile`` verifies
it against a CA instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import struct
from typing import Any, Self
from urllib.parse import urlsplit

from aiohttp import WSMessage, WSMsgType
from aioquic._buffer import Buffer, BufferReadError
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection
from aioquic.h3.events import (
    DatagramReceived,
    DataReceived,
    H3Event,
    HeadersReceived,
    WebTransportStreamDataReceived,
)
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, ProtocolNegotiated, QuicEvent
from cryptography.hazmat.primitives.serialization import Encoding

from edge.wt_framing import FrameReader
from wire.codecs import WT_JSON
from wire.webtransport import WT_CLOSE_CAPSULE, wt_frame, wt_variant_of

# How long the end of the frames stream may lag the end of the session.
_STREAM_END_GRACE_S = 1.0


class _Protocol(QuicConnectionProtocol):
    def __init__(self, quic: QuicConnection, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self.http: H3Connection | None = None
        self.session_id: int | None = None
        self.stream_id: int | None = None
        self.status: asyncio.Future[int] = self._loop.create_future()
        self.inbox: asyncio.Queue[WSMessage] = asyncio.Queue()
        self.reader = FrameReader(1 << 30)
        self.capsules = b""
        self.close_code: int | None = None
        self.close_reason = ""
        # The session ends when both its streams have ended: the CONNECT
        # stream (close capsule) and the frames stream (the last frames). QUIC
        # does not order streams, so either may end first.
        self.session_ended = False
        self.stream_ended = False
        self.ended = False
        self.datagrams = 0
        # Statuses of further CONNECTs on this connection (connect_again).
        self.others: dict[int, asyncio.Future[int]] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self.http = H3Connection(self._quic, enable_webtransport=True)
        if isinstance(event, ConnectionTerminated):
            if not self.status.done():
                self.status.set_exception(ConnectionError(event.reason_phrase))
            self._end()
            return
        if self.http is not None:
            for h3_event in self.http.handle_event(event):
                self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived) and event.stream_id == self.session_id:
            status = dict(event.headers).get(b":status", b"0")
            if not self.status.done():
                self.status.set_result(int(status))
            if event.stream_ended:
                self._end()
        elif isinstance(event, HeadersReceived) and event.stream_id in self.others:
            waiter = self.others[event.stream_id]
            if not waiter.done():
                waiter.set_result(int(dict(event.headers).get(b":status", b"0")))
        elif isinstance(event, WebTransportStreamDataReceived):
            if event.stream_id == self.stream_id:
                for payload in self.reader.feed(event.data):
                    self._put(payload)
                if event.stream_ended:
                    self.stream_ended = True
                    if self.session_ended:
                        self._end()
        elif isinstance(event, DatagramReceived):
            self.datagrams += 1
            self._put(event.data)
        elif isinstance(event, DataReceived) and event.stream_id == self.session_id:
            self.capsules += event.data
            self._parse_capsules()
            if event.stream_ended:
                self.session_ended = True
                if self.stream_ended or self.stream_id is None:
                    self._end()
                else:
                    # The frames stream's end should follow; if the server
                    # never saw that stream, it will not.
                    self._loop.call_later(_STREAM_END_GRACE_S, self._end)

    def _put(self, payload: bytes) -> None:
        if wt_variant_of(payload) == WT_JSON:
            self.inbox.put_nowait(WSMessage(WSMsgType.TEXT, payload.decode(), None))
        else:
            self.inbox.put_nowait(WSMessage(WSMsgType.BINARY, payload, None))

    def _parse_capsules(self) -> None:
        while True:
            buf = Buffer(data=self.capsules)
            try:
                ctype = buf.pull_uint_var()
                length = buf.pull_uint_var()
                body = buf.pull_bytes(length)
            except BufferReadError:
                return
            self.capsules = self.capsules[buf.tell():]
            if ctype == WT_CLOSE_CAPSULE and len(body) >= 4:
                self.close_code = struct.unpack("!I", body[:4])[0]
                self.close_reason = body[4:].decode(errors="replace")

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            self.inbox.put_nowait(WSMessage(WSMsgType.CLOSE, self.close_code,
                                            self.close_reason))


class WtConnection:
    def __init__(self, proto: _Protocol, transport: asyncio.DatagramTransport,
                 addr: tuple[Any, ...]) -> None:
        self._proto = proto
        self._transport = transport
        self._addr = addr
        self._closed = False

    @classmethod
    async def open(cls, url: str, *, cert_sha256: str | None = None,
                   cafile: str | None = None, timeout: float = 5.0) -> Self:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 443
        config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN,
                                   max_datagram_frame_size=65536, server_name=host)
        if cafile is not None:
            config.load_verify_locations(cafile)
        else:
            # Pinned by hash below, as browsers do with serverCertificateHashes.
            config.verify_mode = ssl.CERT_NONE
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        found: tuple[Any, ...] = infos[0][4]
        addr = (f"::ffff:{found[0]}", found[1], 0, 0) if len(found) == 2 else found
        quic = QuicConnection(configuration=config)
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _Protocol(quic), sock=_udp_socket())
        conn = cls(proto, transport, addr)
        try:
            proto.connect(addr)
            await asyncio.wait_for(proto.wait_connected(), timeout)
            if cert_sha256 is not None:
                peer = quic.tls._peer_certificate
                got = hashlib.sha256(peer.public_bytes(Encoding.DER)).hexdigest() if peer else ""
                if got != cert_sha256.lower():
                    raise ConnectionError(f"server certificate hash {got} is not {cert_sha256}")
            http = proto.http
            assert http is not None
            session_id = quic.get_next_available_stream_id()
            proto.session_id = session_id
            http.send_headers(session_id, [
                (b":method", b"CONNECT"), (b":scheme", b"https"),
                (b":authority", f"{host}:{port}".encode()),
                (b":path", (parts.path or "/wt").encode()),
                (b":protocol", b"webtransport"),
                (b"sec-webtransport-http3-draft02", b"1"),
                (b"origin", f"https://{host}:{port}".encode()),
            ])
            proto.transmit()
            status = await asyncio.wait_for(proto.status, timeout)
            if status != 200:
                raise ConnectionError(f"WebTransport CONNECT answered {status}")
            stream_id = http.create_webtransport_stream(session_id)
            # aioquic marks a WebTransport stream only when the peer opens it;
            # ours must be marked too, or the server's frames on it would be
            # parsed as HTTP/3 frames.
            with http._get_or_create_stream(stream_id) as h3_stream:
                h3_stream.frame_type = FrameType.WEBTRANSPORT_STREAM
                h3_stream.session_id = session_id
            proto.stream_id = stream_id
            proto.transmit()  # the server binds the stream now, before any frame
        except BaseException:
            await conn.close()
            raise
        return conn

    # -- the aiohttp-like surface LiveroomClient uses ---------------------
    @property
    def closed(self) -> bool:
        return self._closed or self._proto.ended

    @property
    def close_code(self) -> int | None:
        return self._proto.close_code

    @property
    def datagrams_received(self) -> int:
        return self._proto.datagrams

    async def send_bytes(self, data: bytes) -> None:
        self.send_stream(wt_frame(data))

    async def send_str(self, data: str) -> None:
        self.send_stream(wt_frame(data.encode()))

    def send_stream(self, raw: bytes, end: bool = False) -> None:
        """Raw bytes on the session's stream (tests send malformed framing)."""
        proto = self._proto
        assert proto.stream_id is not None
        proto._quic.send_stream_data(proto.stream_id, raw, end_stream=end)
        proto.transmit()

    async def connect_again(self, path: str = "/wt", timeout: float = 5.0) -> int:
        """One more session CONNECT on this QUIC connection (the session is
        not used further); the status the edge answers (tests: the cap on
        sessions per connection)."""
        proto = self._proto
        http = proto.http
        assert http is not None
        stream_id = proto._quic.get_next_available_stream_id()
        proto.others[stream_id] = proto._loop.create_future()
        http.send_headers(stream_id, [
            (b":method", b"CONNECT"), (b":scheme", b"https"), (b":authority", b"edge"),
            (b":path", path.encode()), (b":protocol", b"webtransport"),
            (b"sec-webtransport-http3-draft02", b"1"), (b"origin", b"https://edge"),
        ])
        proto.transmit()
        return await asyncio.wait_for(proto.others[stream_id], timeout)

    async def receive(self, timeout: float | None = None) -> WSMessage:
        return await asyncio.wait_for(self._proto.inbox.get(), timeout)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        proto = self._proto
        proto.close()  # CONNECTION_CLOSE; a no-op when the connection is over
        try:
            await asyncio.wait_for(proto.wait_closed(), 2.0)
        except TimeoutError:
            pass
        self._transport.close()
        if proto._timer is not None:
            proto._timer.cancel()  # nothing more to send on a closed socket

    # -- migration -----------------------------------------------------------
    async def rebind(self) -> tuple[Any, ...]:
        """Move the connection to a new local UDP socket (a new port), as a
        phone does when it changes networks; returns the new local address.
        The server sees packets from a new address on the same connection."""
        loop = asyncio.get_running_loop()
        old = self._transport
        transport, _ = await loop.create_datagram_endpoint(lambda: self._proto,
                                                           sock=_udp_socket())
        self._transport = transport
        old.close()
        # A fresh connection id too, as RFC 9000 asks of a migrating client
        # (so an observer cannot link the two paths); then make traffic flow.
        self._proto.change_connection_id()
        self._proto._quic.send_ping(0)
        self._proto.transmit()
        sockname: tuple[Any, ...] = transport.get_extra_info("sockname")
        return sockname


def _udp_socket() -> socket.socket:
    # Dual stack, as aioquic's own client does: IPv4 servers are reached as
    # ::ffff:a.b.c.d.
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0, 0, 0))
    except BaseException:
        sock.close()
        raise
    return sock
