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

Each WebSocket user's connection (hello, join, the reading greenlet, resync,
reconnect), the tokens, the URLs and ``fire``: loadtest/room_connection.py.

Run: ``make loadtest`` (see loadtest/README.md), or
``locust -f loadtest/locustfile.py --host http://127.0.0.1:8080``.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import time
import uuid
from typing import Any

from locust import HttpUser, User, between, events, task

from loadtest.room_connection import RoomConnection, fire, ms_since, state_url

log = logging.getLogger("liveroom.loadtest")

ROOM = os.environ.get("LIVEROOM_ROOM", "loadtest")
N_ROOMS = max(1, int(os.environ.get("LIVEROOM_ROOMS", "1")))
ROOMS = [ROOM] if N_ROOMS == 1 else [f"{ROOM}-{i}" for i in range(N_ROOMS)]

STATE_TIMEOUT = 5.0  # a Host write whose push is not back by then is a failure

WORDS = ("hello", "gg", "nice", "lol", "wow", "first", "hi all", "great stream", "👏", "🔥")
GIFTS = ("rose", "heart", "rocket", "crown")
SCENES = ("intro", "talk", "demo", "q&a", "break", "outro")
COMMENT_TAG = "lt:"


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
