"""The canary: two honest members of a room of their own, a host over
WebSocket (msgpack) and a viewer over WebTransport (JSON) when QUIC is on;
the host sends one action and one state change every ``interval``. Both
members check every action arrives once, in order, within ``deadline``, and
that the state section they watch reaches each written value within the
deadline, never going back. The fuzzed frames never name the canary's room:
anything it sees that its own sender did not send, or anything it does not
see, is a cross-room effect.

``canary_process`` runs it in a process of its own (``CanarySpec`` says
where and who), so the fuzzers' CPU cannot make it late; the stress ring
(tests/stress/test_malformed.py) runs ``Canary`` in its own loop."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from edge.client import ClosedError, LiveroomClient
from loadtest.benchstats import percentile
from wire.codecs import JSON, MSGPACK


class CanaryReader:
    """One canary member's view: every canary action once, in order, in
    time; the watched state section never going back, in time."""

    def __init__(self, name: str, client: LiveroomClient, room: str) -> None:
        self.name, self.client, self.room = name, client, room
        self.next_i = 0  # the canary action expected next
        self.state_i = -1  # the highest canary state value seen
        self.lost = self.reordered = self.foreign = self.state_back = 0
        self.latencies: list[float] = []
        self.closed: str | None = None

    async def run(self) -> None:
        try:
            while True:
                f = await self.client.recv(timeout=3600)
                if f.get("room") != self.room:
                    continue
                if f["type"] == "action":
                    self._action(f)
                elif f["type"] == "state":
                    if f["section"] != "canary":
                        self.foreign += 1
                    elif f["value"]["i"] <= self.state_i:
                        self.state_back += 1
                    else:
                        self.state_i = f["value"]["i"]
        except ClosedError as exc:
            self.closed = f"closed {exc.code} {exc.reason}"
        except Exception as exc:  # a broken frame is a finding too
            self.closed = f"{type(exc).__name__}: {exc}"

    def _action(self, f: dict[str, Any]) -> None:
        body = f.get("body")
        if f.get("kind") != "canary" or not isinstance(body, dict) or "i" not in body:
            self.foreign += 1
            return
        i = body["i"]
        if i < self.next_i:
            self.reordered += 1
            return
        self.lost += i - self.next_i
        self.next_i = i + 1
        self.latencies.append(time.time() - body["t"])


class Canary:
    """Two honest members of a room of their own; ``sender`` (a host) sends
    an action and a state change every ``interval``; both members must see
    each in order and within ``deadline``."""

    def __init__(self, sender: LiveroomClient, receiver: LiveroomClient, room: str,
                 interval: float = 0.1, deadline: float = 2.0) -> None:
        self.room, self.interval, self.deadline = room, interval, deadline
        self.sender = sender
        self.readers = [CanaryReader("sender", sender, room),
                        CanaryReader("receiver", receiver, room)]
        self.sent_at: list[float] = []
        self.late: Counter[str] = Counter()  # reader -> deadline misses
        self.worst_late = 0.0
        self.send_errors = 0
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        for r in self.readers:
            joined = await r.client.join(self.room)
            assert joined["type"] == "joined", joined
        self._tasks = [asyncio.create_task(r.run()) for r in self.readers]
        self._tasks += [asyncio.create_task(self._send()), asyncio.create_task(self._watch())]

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        t_next = loop.time()
        while True:
            i = len(self.sent_at)
            now = time.time()
            self.sent_at.append(now)
            try:
                await self.sender.action(self.room, "canary", {"i": i, "t": now})
                await self.sender.set_state(self.room, "canary", {"i": i, "t": now})
            except Exception:
                self.send_errors += 1
                return
            t_next += self.interval
            await asyncio.sleep(max(0.0, t_next - loop.time()))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            self.check()

    def check(self) -> None:
        """Deadline misses now: the oldest action a reader still waits for,
        and the newest state value it should hold by now."""
        now = time.time()
        due = bisect.bisect_right(self.sent_at, now - self.deadline) - 1
        if due < 0:
            return
        for r in self.readers:
            waiting = [i for i in (r.next_i, r.state_i + 1) if i <= due]
            if waiting:
                oldest = min(waiting)
                self.late[r.name] += 1
                self.worst_late = max(self.worst_late, now - self.sent_at[oldest])

    async def stop(self) -> dict[str, Any]:
        # Give the last messages their deadline to arrive.
        sender = self._tasks[2]
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        last = len(self.sent_at) - 1
        loop = asyncio.get_running_loop()
        end = loop.time() + self.deadline
        while loop.time() < end and not all(
                (r.next_i > last and r.state_i >= last) or r.closed for r in self.readers):
            await asyncio.sleep(0.02)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for r in self.readers:
            if r.next_i <= last:
                r.lost += last + 1 - r.next_i
                r.next_i = last + 1
        return self.summary()

    def summary(self) -> dict[str, Any]:
        lat = sorted(x for r in self.readers for x in r.latencies)
        failures = []
        for r in self.readers:
            for what in ("lost", "reordered", "foreign", "state_back"):
                n = getattr(r, what)
                if n:
                    failures.append(f"canary {r.name}: {n} {what}")
            if r.closed:
                failures.append(f"canary {r.name}: {r.closed}")
        for name, n in self.late.items():
            failures.append(f"canary {name}: missed the {self.deadline}s deadline "
                            f"({n} checks, up to {self.worst_late:.2f}s late)")
        if self.send_errors:
            failures.append("canary sender: could not send")
        return {"sent": len(self.sent_at),
                "received": {r.name: r.next_i - r.lost for r in self.readers},
                "lost": sum(r.lost for r in self.readers),
                "reordered": sum(r.reordered for r in self.readers),
                "late_checks": sum(self.late.values()),
                "latency_ms": {"p50": _ms(_pct(lat, 0.5)), "p99": _ms(_pct(lat, 0.99)),
                               "max": _ms(lat[-1] if lat else 0.0)},
                "failures": failures}


def _pct(values: list[float], q: float) -> float:
    return percentile(values, q) if values else 0.0


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 1)


@dataclass
class CanarySpec:
    ws_url: str
    wt_url: str | None
    cert_sha256: str | None
    sender_token: str
    receiver_token: str
    room: str
    interval: float
    deadline: float


def canary_process(spec: CanarySpec, pipe: Connection) -> None:
    """The canary in a process of its own: ready, then run until told to
    stop, then the summary."""
    async def main() -> None:
        sender = await LiveroomClient.connect(spec.ws_url, spec.sender_token, codec=MSGPACK)
        if spec.wt_url:
            receiver = await LiveroomClient.connect(spec.wt_url, spec.receiver_token,
                                                    codec=JSON, cert_sha256=spec.cert_sha256)
        else:
            receiver = await LiveroomClient.connect(spec.ws_url, spec.receiver_token, codec=JSON)
        canary = Canary(sender, receiver, spec.room, spec.interval, spec.deadline)
        await canary.start()
        pipe.send("ready")
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_reader(pipe.fileno(), stop.set)
        await stop.wait()
        loop.remove_reader(pipe.fileno())
        pipe.recv()
        summary = await canary.stop()
        pipe.send(summary)
        await sender.close()
        await receiver.close()

    try:
        asyncio.run(main())
    except Exception as exc:
        pipe.send({"failures": [f"canary could not run: {type(exc).__name__}: {exc}"]})

