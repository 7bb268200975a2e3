"""One Locust user's WebSocket connection to a room (``RoomConnection``), and
what every user of the load test (loadtest/locustfile.py) reports with:
``fire`` puts a request or a measurement into Locust's statistics; the URLs
(``ws_url``, ``state_url``) and the tokens (``get_token``) come from here.

Imported by the locustfile only: it needs Locust's gevent (sockets
monkey-patched), which would break asyncio code that imported it."""

from __future__ import annotations

import json
import logging
import os
import random
import struct
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import gevent
import requests
import websocket
from gevent.event import Event
from locust import events

log = logging.getLogger("liveroom.loadtest")

TOKEN_TTL = 3600  # seconds; a 4200 close (token expired) fetches a new one
CONNECT_TIMEOUT = 10.0  # connect + hello + join
MAX_BACKOFF = 10.0


def fire(request_type: str, name: str, response_time: float, length: int = 0,
         exception: BaseException | None = None) -> None:
    """Report one request (or one measurement) to Locust's stats."""
    events.request.fire(request_type=request_type, name=name, response_time=response_time,
                        response_length=length, exception=exception, context={})


def ms_since(t0: float) -> float:
    """Milliseconds of ``time.perf_counter()`` since ``t0``."""
    return (time.perf_counter() - t0) * 1000.0


class FrameError(Exception):
    """An ``error`` frame from the server, or a frame the test did not expect."""


# --------------------------------------------------------------------------
# URLs: the one place that knows where things live.
# --------------------------------------------------------------------------
def ws_url(host: str) -> str:
    """``http(s)://host[:port]`` -> ``ws(s)://host[:port]/ws``."""
    base = host.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://"):] + "/ws"
    if base.startswith("http://"):
        return "ws://" + base[len("http://"):] + "/ws"
    return base + "/ws"


def state_url(room: str, section: str | None = None) -> str:
    """The path of a room's state head (``section`` None) or of one section: the
    reads a CDN would cache. Pollers build every URL here."""
    path = f"/v1/rooms/{quote(room, safe=':')}/state"
    return path if section is None else f"{path}/{quote(section, safe=':@')}"


def get_token(host: str, user: str, role: str, room: str) -> str:
    """A token for ``user``, ``role`` in ``room`` (host and moderator are
    granted per room): minted locally when LIVEROOM_JWT_SECRET is set,
    else from ``POST /v1/dev/token`` (reported as ``POST dev-token``)."""
    rooms = None
    if role in ("host", "moderator"):
        role, rooms = "viewer", {room: role}
    secret = os.environ.get("LIVEROOM_JWT_SECRET")
    if secret:
        from edge.auth import mint_token  # the liveroom package (pip install -e .)

        return mint_token(secret, user, user, role, time.time(), TOKEN_TTL, rooms)
    t0 = time.perf_counter()
    try:
        r = requests.post(f"{host.rstrip('/')}/v1/dev/token",
                          json={"user": user, "role": role, "rooms": rooms,
                                "ttl": TOKEN_TTL}, timeout=10)
        r.raise_for_status()
        token = r.json()["token"]
    except Exception as exc:
        fire("POST", "dev-token", ms_since(t0), exception=exc)
        raise
    fire("POST", "dev-token", ms_since(t0), len(r.content))
    return str(token)


# --------------------------------------------------------------------------
# One WebSocket connection of a user, with its reading greenlet.
# --------------------------------------------------------------------------
class RoomConnection:
    """Connect, hello, join one room; a greenlet reads every frame and keeps the
    room's versions as the protocol says (sync on a gap in ``total``); actions
    and state pushes go to ``on_frame(frame, received_at, nbytes)``. After a
    close by the server it reconnects with a backoff and rejoins with ``known``.

    Locust runs on gevent with sockets monkey-patched, so the blocking
    websocket-client calls only block this greenlet. One greenlet reads; the
    user's tasks write (``send``), which gevent allows on one socket."""

    def __init__(self, host: str, user: str, role: str, room: str,
                 on_frame: Callable[[dict[str, Any], float, int], None]) -> None:
        self.host = host
        self.user = user
        self.role = role
        self.room = room
        self.on_frame = on_frame
        self.ws: websocket.WebSocket | None = None
        self.ready = Event()
        self.stopping = False
        self.token: str | None = None
        self.epoch: str | None = None
        self.versions: dict[str, int] = {}
        self.total = 0
        self.members = 0
        self._sync_sent: float | None = None
        self._reader: gevent.Greenlet | None = None

    # -- lifecycle --------------------------------------------------------
    def start(self, wait: float = CONNECT_TIMEOUT) -> bool:
        self._reader = gevent.spawn(self._run)
        return self.ready.wait(wait)

    def stop(self) -> None:
        self.stopping = True
        self.ready.clear()
        if self._reader is not None:
            self._reader.kill(block=True, timeout=5)
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                ws.close(timeout=1)
            except Exception:
                pass

    def send(self, frame: dict[str, Any], name: str) -> bool:
        """Send one frame, reported as ``WS <name>`` (the time the send took)."""
        ws = self.ws
        if ws is None or not self.ready.is_set():
            return False
        data = json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
        t0 = time.perf_counter()
        try:
            ws.send(data)
        except Exception as exc:
            fire("WS", name, ms_since(t0), exception=exc)
            return False
        fire("WS", name, ms_since(t0), len(data))
        return True

    def _run(self) -> None:
        backoff = 0.5
        while not self.stopping:
            t0 = time.perf_counter()
            try:
                ws = self._connect()
            except Exception as exc:
                if self.stopping:
                    return
                fire("WS", "connect", ms_since(t0), exception=exc)
                if isinstance(exc, FrameError) and "unauthorized" in str(exc):
                    self.token = None
                gevent.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = 0.5
            code, reason = self._read(ws)
            self.ready.clear()
            self.ws = None
            ws.shutdown()
            if self.stopping:
                return
            fire("WS", f"close:{code}", 0.0, exception=ConnectionError(f"{code} {reason}"))
            if 4000 <= code < 4100:  # the same request would fail the same way
                log.error("%s: closed %s %s; giving up", self.user, code, reason)
                return
            if 4200 <= code < 4300:
                self.token = None
            gevent.sleep(random.uniform(0.5, 2.0))

    def _connect(self) -> websocket.WebSocket:
        """Connect, hello, join; reports ``WS connect`` and ``WS join``."""
        if self.token is None:
            self.token = get_token(self.host, self.user, self.role, self.room)
        t0 = time.perf_counter()
        ws = websocket.create_connection(ws_url(self.host), timeout=CONNECT_TIMEOUT,
                                         skip_utf8_validation=True)
        try:
            ws.send(json.dumps({"type": "hello", "token": self.token, "v": 1, "ref": "h"}))
            self._await(ws, "welcome", "h")
            fire("WS", "connect", ms_since(t0))
            t1 = time.perf_counter()
            join: dict[str, Any] = {"type": "join", "room": self.room, "ref": "j"}
            if self.epoch is not None and self.versions:
                join.update(known=self.versions, epoch=self.epoch)
            ws.send(json.dumps(join))
            self._apply_snapshot(self._await(ws, "joined", "j"))
            fire("WS", "join", ms_since(t1))
        except BaseException:
            ws.shutdown()
            raise
        ws.settimeout(None)  # the reader blocks until a frame or a close
        self.ws = ws
        self.ready.set()
        return ws

    def _await(self, ws: websocket.WebSocket, ftype: str, ref: str) -> dict[str, Any]:
        """Read until the reply ``ftype`` with ``ref`` (or its error)."""
        while True:
            opcode, payload = ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise ConnectionError(f"closed before {ftype}: {close_code(payload)[0]}")
            for frame in unbatch(json.loads(payload)):
                if frame.get("ref") == ref:
                    if frame.get("type") == ftype:
                        return frame
                    raise FrameError(f"{frame.get('code')}: {frame.get('message')}")

    # -- reading ----------------------------------------------------------
    def _read(self, ws: websocket.WebSocket) -> tuple[int, str]:
        """Read frames until the connection ends; its close code and reason."""
        while True:
            try:
                opcode, payload = ws.recv_data()
            except websocket.WebSocketConnectionClosedException:
                return 1006, "connection lost"
            except OSError as exc:
                return 1006, str(exc)
            now = time.time()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return close_code(payload)
            try:
                frames = unbatch(json.loads(payload))
            except ValueError as exc:
                fire("WS", "bad-frame", 0.0, exception=exc)
                continue
            size = len(payload) // len(frames) if frames else 0
            for frame in frames:
                self._handle(frame, now, size)
            self._check_versions()

    def _handle(self, frame: dict[str, Any], now: float, size: int) -> None:
        ftype = frame.get("type")
        if ftype == "state":
            section, partial = frame.get("section"), frame.get("partial")
            if isinstance(section, str) and isinstance(partial, int):
                if partial > self.versions.get(section, 0):
                    self.versions[section] = partial
                self.total = max(self.total, int(frame.get("total") or 0))
            self.on_frame(frame, now, size)
        elif ftype == "action":
            self.on_frame(frame, now, size)
        elif ftype == "online":
            self.members = int(frame.get("count") or 0)
        elif ftype == "sync":
            self._apply_snapshot(frame)
            if self._sync_sent is not None:
                fire("WS", "sync", ms_since(self._sync_sent), size)
                self._sync_sent = None
        elif ftype == "error":
            code = frame.get("code", "unknown")
            fire("WS", f"error:{code}", 0.0, size,
                 exception=FrameError(f"{code}: {frame.get('message')}"))

    def _apply_snapshot(self, reply: dict[str, Any]) -> None:
        """A ``joined`` or ``sync`` reply is authoritative."""
        self.epoch = reply.get("epoch")
        self.versions = dict(reply.get("versions") or {})
        self.total = int(reply.get("total") or 0)
        if "members" in reply:
            self.members = int(reply["members"])

    def _check_versions(self) -> None:
        """After each WebSocket frame: a sum of partials below ``total`` means a
        missed state change; ask for what moved."""
        if self._sync_sent is None and sum(self.versions.values()) < self.total:
            self._sync_sent = time.perf_counter()
            frame: dict[str, Any] = {"type": "sync", "room": self.room,
                                     "known": self.versions, "ref": "s"}
            if self.epoch is not None:
                frame["epoch"] = self.epoch
            if not self.send(frame, "send:sync"):
                self._sync_sent = None


def unbatch(obj: Any) -> list[dict[str, Any]]:
    """The frames of one WebSocket message: a ``batch`` frame holds several."""
    if not isinstance(obj, dict):
        raise ValueError("a frame must be a map")
    if obj.get("type") == "batch":
        return [f for f in obj.get("frames") or () if isinstance(f, dict)]
    return [obj]


def close_code(payload: bytes) -> tuple[int, str]:
    """The code and reason of a close frame's payload (1005: none given)."""
    if len(payload) < 2:
        return 1005, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")
