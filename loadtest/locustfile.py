"""Locust load test of a liveroom edge.

Three kinds of user, all in the stats under names a load tester can read:

- ``Viewer``: a WebSocket member of a room. It says hello, joins, and a
  reading greenlet receives everything the room sends; every ``action`` it
  receives is reported as ``WS deliver:<kind>`` with its delivery latency.
  Its tasks send a comment now and then, a like or a gift more rarely
  (``WS send:<kind>``), slowly enough to stay far under the server's action
  rate limit (5 per second per user per room, bursts of 20).
- ``Host``: one per room. It writes the ``meta``, ``scoreboard`` and ``stage``
  sections and times how long its own ``state`` push takes to come back
  (``WS state:roundtrip``); viewers time the same pushes (``WS deliver:state``).
- ``Poller``: a CDN-style HTTP client. It reads the room's head
  (``GET poll:head``) and fetches only the sections whose partial version moved
  (``GET poll:section``); ``POLL age`` is how old the fetched value was.

Latencies: a comment carries its sender's clock in its text (``lt:<time> …``),
so ``deliver:comment`` is the end-to-end time from the sender's ``send`` to the
receiver's ``recv``. Gifts and likes cannot carry a timestamp (the server
normalises their bodies), so theirs is measured from the server's ``ts`` stamp.
State values written by the Host carry ``lt`` (the Host's clock). All clocks
are ``time.time()``: on one machine they agree; across machines they must be
synchronised. While Locust's own CPU is saturated, every latency includes its
scheduling delay: watch for Locust's CPU warning.

Every ``error`` frame is a failure (``WS error:<code>``, ``rate_limited``
included), so is every close by the server (``WS close:<code>``), after which
the user reconnects (or, for 4000-4099, gives up). Tokens come from
``POST /v1/dev/token`` (the server runs with ``--dev``) or, when
``LIVEROOM_JWT_SECRET`` is set, are minted locally with it.

Environment:
    LIVEROOM_ROOM     room id (default ``loadtest``)
    LIVEROOM_ROOMS    spread the users over N rooms ``<room>-0`` .. ``<room>-<N-1>``
                      (default 1: the one room ``<room>``); one Host per room
    LIVEROOM_JWT_SECRET  mint tokens locally instead of asking ``/v1/dev/token``

Run: ``make loadtest`` (see loadtest/README.md), or
``locust -f loadtest/locustfile.py --host http://127.0.0.1:8080``.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import struct
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import gevent
import requests
import websocket
from gevent.event import Event
from locust import HttpUser, User, between, events, task

log = logging.getLogger("liveroom.loadtest")

ROOM = os.environ.get("LIVEROOM_ROOM", "loadtest")
N_ROOMS = max(1, int(os.environ.get("LIVEROOM_ROOMS", "1")))
ROOMS = [ROOM] if N_ROOMS == 1 else [f"{ROOM}-{i}" for i in range(N_ROOMS)]

TOKEN_TTL = 3600  # seconds; a 4200 close (token expired) fetches a new one
CONNECT_TIMEOUT = 10.0  # connect + hello + join
STATE_TIMEOUT = 5.0  # a Host write whose push is not back by then is a failure
MAX_BACKOFF = 10.0

WORDS = ("hello", "gg", "nice", "lol", "wow", "first", "hi all", "great stream", "👏", "🔥")
GIFTS = ("rose", "heart", "rocket", "crown")
SCENES = ("intro", "talk", "demo", "q&a", "break", "outro")
COMMENT_TAG = "lt:"


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


def get_token(host: str, user: str, role: str) -> str:
    """A token for ``user``: minted locally when LIVEROOM_JWT_SECRET is set,
    else from ``POST /v1/dev/token`` (reported as ``POST dev-token``)."""
    secret = os.environ.get("LIVEROOM_JWT_SECRET")
    if secret:
        from edge.auth import mint_token  # the liveroom package (pip install -e .)

        return mint_token(secret, user, user, role, time.time(), TOKEN_TTL)
    t0 = time.perf_counter()
    try:
        r = requests.post(f"{host.rstrip('/')}/v1/dev/token",
                          json={"user": user, "role": role, "ttl": TOKEN_TTL}, timeout=10)
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
            self.token = get_token(self.host, self.user, self.role)
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


# --------------------------------------------------------------------------
# Users
# --------------------------------------------------------------------------
_viewer_seq = itertools.count()
_host_seq = itertools.count()
_poller_seq = itertools.count()


def _uid(prefix: str) -> str:
    return f"lt-{prefix}-{uuid.uuid4().hex[:10]}"


class Viewer(User):
    """A WebSocket viewer: joins a room, receives (``deliver:*``), and sends a
    comment every few seconds, a like or a gift now and then.

    About 0.25 actions per second per viewer: far under the default limit of
    5 per second (burst 20), so any ``error:rate_limited`` is worth a look."""

    weight = 10
    wait_time = between(2, 6)

    def on_start(self) -> None:
        self.user_id = _uid("viewer")
        self.room = ROOMS[next(_viewer_seq) % len(ROOMS)]
        self.conn = RoomConnection(self.host or "", self.user_id, "viewer", self.room,
                                   self._on_frame)
        self.conn.start()

    def on_stop(self) -> None:
        self.conn.stop()

    def _on_frame(self, frame: dict[str, Any], now: float, size: int) -> None:
        if frame["type"] == "action":
            kind = str(frame.get("kind"))
            sent = frame.get("ts")
            body = frame.get("body")
            if kind == "comment" and isinstance(body, dict):
                sent = comment_time(body.get("text")) or sent
            if isinstance(sent, (int, float)):
                fire("WS", f"deliver:{kind}", max(0.0, (now - sent) * 1000.0), size)
        else:  # state: a Host's values carry its clock
            value = frame.get("value")
            if isinstance(value, dict) and isinstance(value.get("lt"), (int, float)):
                fire("WS", "deliver:state", max(0.0, (now - value["lt"]) * 1000.0), size)

    def _action(self, kind: str, body: dict[str, Any]) -> None:
        self.conn.send({"type": "action", "room": self.room, "kind": kind, "body": body},
                       f"send:{kind}")

    @task(10)
    def comment(self) -> None:
        text = f"{COMMENT_TAG}{time.time():.6f} {random.choice(WORDS)}"
        self._action("comment", {"text": text})

    @task(3)
    def like(self) -> None:
        self._action("like", {"count": random.randint(1, 5)})

    @task(1)
    def gift(self) -> None:
        self._action("gift", {"gift": random.choice(GIFTS), "count": random.randint(1, 3)})


def comment_time(text: Any) -> float | None:
    """The sender's clock in a load-test comment (``lt:<time> <words>``)."""
    if not isinstance(text, str) or not text.startswith(COMMENT_TAG):
        return None
    try:
        return float(text[len(COMMENT_TAG):].split(" ", 1)[0])
    except ValueError:
        return None


class Host(User):
    """The host of a room (one per room): changes ``meta``, ``scoreboard`` and
    ``stage`` every second or two and times its own push coming back
    (``state:roundtrip``); a push not back within STATE_TIMEOUT is a failure."""

    fixed_count = len(ROOMS)
    wait_time = between(1, 2)

    def on_start(self) -> None:
        self.user_id = _uid("host")
        self.room = ROOMS[next(_host_seq) % len(ROOMS)]
        self.writes = itertools.count(1)
        self.pending: dict[tuple[str, int], float] = {}  # (section, n) -> perf_counter
        self.gifts = 0
        self.likes = 0
        self.conn = RoomConnection(self.host or "", self.user_id, "host", self.room,
                                   self._on_frame)
        self.conn.start()

    def on_stop(self) -> None:
        self.conn.stop()

    def _on_frame(self, frame: dict[str, Any], now: float, size: int) -> None:
        if frame["type"] == "action":
            body = frame.get("body")
            if not isinstance(body, dict):
                return
            if frame.get("kind") == "gift":
                self.gifts += int(body.get("count", 1))
            elif frame.get("kind") == "like":
                self.likes += int(body.get("count", 1))
            return
        value = frame.get("value")
        if isinstance(value, dict) and value.get("by") == self.user_id:
            t0 = self.pending.pop((str(frame.get("section")), int(value.get("n", 0))), None)
            if t0 is not None:
                fire("WS", "state:roundtrip", ms_since(t0), size)

    def _write(self, section: str, value: dict[str, Any]) -> None:
        self._expire()
        n = next(self.writes)
        value.update(by=self.user_id, n=n, lt=time.time())
        t0 = time.perf_counter()
        self.pending[(section, n)] = t0
        if not self.conn.send({"type": "state", "room": self.room, "section": section,
                               "value": value}, "send:state"):
            self.pending.pop((section, n), None)

    def _expire(self) -> None:
        now = time.perf_counter()
        for key, t0 in list(self.pending.items()):
            if now - t0 > STATE_TIMEOUT:
                del self.pending[key]
                fire("WS", "state:roundtrip", ms_since(t0),
                     exception=TimeoutError(f"no push of {key[0]} within {STATE_TIMEOUT}s"))

    @task(5)
    def stage(self) -> None:
        self._write("stage", {"scene": random.choice(SCENES), "slide": random.randint(1, 40)})

    @task(3)
    def scoreboard(self) -> None:
        self._write("scoreboard", {"gifts": self.gifts, "likes": self.likes})

    @task(1)
    def meta(self) -> None:
        self._write("meta", {"title": f"Load test {self.room}", "host": self.user_id,
                             "viewers": self.conn.members})


class Poller(HttpUser):
    """A CDN-style client: reads the room's head, then only the sections whose
    partial version moved (all of them again when the store's epoch changed)."""

    weight = 2
    wait_time = between(1, 3)

    def on_start(self) -> None:
        self.room = ROOMS[next(_poller_seq) % len(ROOMS)]
        self.epoch: str | None = None
        self.versions: dict[str, int] = {}

    @task
    def poll(self) -> None:
        with self.client.get(state_url(self.room), name="poll:head",
                             catch_response=True) as r:
            if r.status_code == 404 and r.error is None:
                # The room has no state yet (its host has not written): fine.
                r.success()
                self.epoch, self.versions = None, {}
                return
            if r.status_code != 200:
                if r.error is None:  # else no answer at all: Locust reports r.error
                    r.failure(f"{r.status_code} {r.text[:200]}")
                return
            try:
                head = r.json()
                versions: dict[str, int] = head["versions"]
            except (ValueError, KeyError, TypeError) as exc:
                r.failure(f"bad head: {exc}")
                return
            r.success()
        if head.get("epoch") != self.epoch:  # versions from another epoch mean nothing
            self.epoch, self.versions = head.get("epoch"), {}
        for section in [s for s in self.versions if s not in versions]:
            del self.versions[section]
        for section, partial in sorted(versions.items()):
            if self.versions.get(section) != partial:
                self._fetch(section)

    def _fetch(self, section: str) -> None:
        with self.client.get(state_url(self.room, section), name="poll:section",
                             catch_response=True) as r:
            if r.status_code != 200:
                if r.error is None:  # else no answer at all: Locust reports r.error
                    r.failure(f"{r.status_code} {r.text[:200]}")
                return
            try:
                got = r.json()
                self.versions[section] = int(got["partial"])
            except (ValueError, KeyError, TypeError) as exc:
                r.failure(f"bad section: {exc}")
                return
            r.success()
        value = got.get("value")
        if isinstance(value, dict) and isinstance(value.get("lt"), (int, float)):
            fire("POLL", "age", max(0.0, (time.time() - value["lt"]) * 1000.0))


@events.test_start.add_listener
def _describe(environment: Any, **_: Any) -> None:
    tokens = "minted with LIVEROOM_JWT_SECRET" if os.environ.get("LIVEROOM_JWT_SECRET") \
        else "from POST /v1/dev/token"
    log.info("liveroom load test: rooms %s, tokens %s, host %s", ", ".join(ROOMS), tokens,
             environment.host)
