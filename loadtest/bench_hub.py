"""In-process benchmark of the fan-out hub (``edge.fanout.Hub``): no sockets,
no event loop, only the hub's own work.

    python -m loadtest.bench_hub --rooms 10 --members 1000 --per-tick 10 --duration 1

prints one JSON line on stdout: one result per scenario, for each wire
variant (``--codecs``), with and without coalescing, with and without
shedding. It sits beside the hub as centrifuge keeps its broadcast benchmark
beside its hub: ``loadtest.bench_fanout`` measures the whole edge over
loopback (kernel and client included); this measures what the hub itself
costs per delivery, so a change to ``edge/fanout.py`` or ``wire/encoded.py``
can be judged in a second, on any machine, without pinning.

Theory of operation
-------------------
N rooms of M members, each member a ``Conn`` on a fake sink that counts what
it is handed. Time is simulated: tick k is at ``k * tick`` seconds (``tick``
is the coalescing window, 5 ms by default). Each tick offers ``--per-tick``
fresh actions to every room (likes, comments and gifts in turn, each a new
``Encoded``, so encoding once per variant is part of the cost), then runs
the hub's timer (``flush``), and the slow sinks read.

- *coalescing* on: the hub's window is the tick, so a busy room's messages
  of one tick go out as one ``batch`` frame per connection; off (window 0):
  one write per message per connection.
- *shedding* on: half the members are slow readers, a quarter around
  ``budget * 0.3`` unsent bytes (likes shed) and a quarter around
  ``budget * 0.6`` (comments shed too); their backlog moves up and down
  between ticks, as a reader that still reads, so they are degraded, never
  closed. The hub then builds one frame per shedding level and variant.

Figures: ``us_per_delivery`` is the wall time of the tick loop over the
deliveries (one message reaching one member; a shed message is not one),
``deliveries_per_s`` its inverse, ``writes`` the sink writes, and
``frames_built`` the distinct frames the hub built, counted in a separate
pass of ``COUNT_TICKS`` ticks before the measured ones (recording each frame would cost as much as
the write it counts) and scaled to the measured ticks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from edge.fanout import Budget, Conn, Hub
from wire.codecs import JSON, MSGPACK
from wire.encoded import Encoded
from wire.frames import COMMENT, GIFT, LIKE, action_priority
from wire.outgoing import action_frame

KINDS = (LIKE, COMMENT, GIFT)
SENDER = {"id": "bench", "name": "bench", "role": "host"}
# Ticks of the untimed pass that counts the frames built (after one tick
# that warms the rooms up: a quiet room's first message goes out alone).
COUNT_TICKS = 4
# Slow readers (shedding on): their backlog as a share of the budget, and
# how far it moves between ticks.
SLOW_LEVELS = (0.3, 0.6)
WOBBLE = 0.02


class Tally:
    """What the sinks of one scenario were handed."""

    __slots__ = ("bytes", "frames", "writes")

    def __init__(self) -> None:
        self.writes = 0
        self.bytes = 0
        # Set in the counting pass only: the distinct frames by id, each
        # held so that its id is not reused by a later frame.
        self.frames: dict[int, bytes] | None = None


class FakeSink:
    """A transport end that reads everything at once: nothing stays unsent.
    It is its own ``stream`` (edge.fanout.Stream), as a WebSocket sink is, so
    the hub takes its fast path as it does for real connections."""

    __slots__ = ("pending", "stream", "tally")

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.pending = 0
        self.stream = self

    def write(self, data: bytes) -> None:
        tally = self.tally
        tally.writes += 1
        tally.bytes += len(data)
        if tally.frames is not None:
            tally.frames[id(data)] = data

    def buffered(self) -> int:
        return self.pending

    def get_write_buffer_size(self) -> int:
        return self.pending

    def is_closing(self) -> bool:
        return False

    def close(self, code: int, reason: str) -> None:
        pass

    def read(self, tick: int) -> None:
        pass


class SlowSink(FakeSink):
    """A reader that keeps about ``level`` unsent bytes: a bit more on even
    ticks, a bit less on odd ones, so it is shedding but never stalled
    (``Conn.deliver``: a backlog that never shrinks is closed)."""

    __slots__ = ("high", "low")

    def __init__(self, tally: Tally, level: int, wobble: int) -> None:
        super().__init__(tally)
        self.high = level + wobble
        self.low = level - wobble
        self.pending = self.high

    def read(self, tick: int) -> None:
        self.pending = self.low if tick & 1 else self.high


@dataclass(frozen=True, slots=True)
class Scenario:
    codec: str
    coalesce: bool
    shedding: bool


def build(sc: Scenario, rooms: int, members: int, budget: Budget,
          window: float) -> tuple[Hub, list[FakeSink], Tally]:
    tally = Tally()
    hub = Hub(window if sc.coalesce else 0.0)
    sinks: list[FakeSink] = []
    for r in range(rooms):
        for m in range(members):
            sink: FakeSink
            if sc.shedding and m % 4 < len(SLOW_LEVELS):
                share = SLOW_LEVELS[m % 4]
                sink = SlowSink(tally, int(budget.bytes * share), int(budget.bytes * WOBBLE))
            else:
                sink = FakeSink(tally)
            conn = Conn(r * members + m, sink, budget)
            conn.variant = sc.codec
            hub.join(conn, f"room-{r}")
            sinks.append(sink)
    return hub, sinks, tally


def run_ticks(hub: Hub, sinks: list[FakeSink], rooms: list[str], per_tick: int,
              tick_s: float, first: int, ticks: int | None, until: float,
              pad: str) -> tuple[int, int, int, int]:
    """Ticks from ``first``: ``ticks`` of them, or until ``until`` on the
    perf_counter clock. Returns (ticks, messages, dropped, closed)."""
    k = first
    messages = dropped = closed = 0
    seq = 0
    while True:
        now = k * tick_s
        for room in rooms:
            for _ in range(per_tick):
                seq += 1
                kind = KINDS[seq % len(KINDS)]
                enc = Encoded(action_frame(room, kind, {"p": pad}, SENDER, seq, now, f"b-{seq:x}"),
                              action_priority(kind))
                res = hub.offer(room, enc, now)
                if not isinstance(res, float):
                    dropped += res.dropped
                    closed += len(res.closed) + len(res.failed)
                messages += 1
        if hub.window:
            res = hub.flush(now + hub.window)  # the hub's timer, at the window's end
            dropped += res.dropped
            closed += len(res.closed) + len(res.failed)
        for sink in sinks:
            sink.read(k)
        k += 1
        if (ticks is not None and k - first >= ticks) or (
                ticks is None and time.perf_counter() >= until):
            return k - first, messages, dropped, closed


def run_scenario(sc: Scenario, args: argparse.Namespace) -> dict[str, Any]:
    budget = Budget(bytes=args.budget)
    hub, sinks, tally = build(sc, args.rooms, args.members, budget, args.window)
    rooms = list(hub.rooms)
    pad = "x" * args.payload_bytes
    run_ticks(hub, sinks, rooms, args.per_tick, args.window, 0, 1, 0.0, pad)
    # Counting pass: the distinct frames the hub builds per tick.
    tally.frames = {}
    run_ticks(hub, sinks, rooms, args.per_tick, args.window, 1, COUNT_TICKS, 0.0, pad)
    frames_per_tick = len(tally.frames) / COUNT_TICKS
    tally.frames = None
    tally.writes = tally.bytes = 0
    # The measured pass, on from where the counting pass left the hub.
    t0 = time.perf_counter()
    ticks, messages, dropped, closed = run_ticks(
        hub, sinks, rooms, args.per_tick, args.window, 1 + COUNT_TICKS, None,
        t0 + args.duration, pad)
    wall = time.perf_counter() - t0
    deliveries = messages * args.members - dropped
    return {
        "codec": sc.codec, "coalesce": sc.coalesce, "shedding": sc.shedding,
        "ticks": ticks, "messages": messages, "deliveries": deliveries, "shed": dropped,
        "closed": closed, "writes": tally.writes, "bytes_written": tally.bytes,
        "wall_s": round(wall, 4),
        "us_per_delivery": round(wall * 1e6 / deliveries, 4) if deliveries else None,
        "deliveries_per_s": round(deliveries / wall, 1) if wall > 0 else None,
        "us_per_write": round(wall * 1e6 / tally.writes, 4) if tally.writes else None,
        "messages_per_write": round(deliveries / tally.writes, 2) if tally.writes else None,
        "frames_built": round(frames_per_tick * ticks),
        "frames_built_per_tick": frames_per_tick,
    }


def scenarios(codecs: list[str]) -> list[Scenario]:
    return [Scenario(codec, coalesce, shedding) for codec in codecs
            for coalesce in (True, False) for shedding in (False, True)]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_hub",
                                description="In-process fan-out hub benchmark: prints one "
                                            "JSON line.")
    p.add_argument("--rooms", type=int, default=10)
    p.add_argument("--members", type=int, default=1000, help="members per room")
    p.add_argument("--per-tick", type=int, default=10, help="messages per room per tick")
    p.add_argument("--duration", type=float, default=1.0, help="measured seconds per scenario")
    p.add_argument("--window", type=float, default=0.005,
                   help="the tick and, with coalescing, the hub's window (seconds)")
    p.add_argument("--payload-bytes", type=int, default=100,
                   help="padding in each message body")
    p.add_argument("--budget", type=int, default=Budget().bytes,
                   help="each connection's outbound budget (bytes)")
    p.add_argument("--codecs", default=f"{JSON},{MSGPACK}",
                   help="comma-separated wire variants, one set of scenarios each")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    if any(c not in (JSON, MSGPACK) for c in codecs) or not codecs:
        raise SystemExit(f"--codecs: {JSON} and/or {MSGPACK}")
    if min(args.rooms, args.members, args.per_tick) < 1 or args.duration <= 0 \
            or args.window <= 0:
        raise SystemExit("need --rooms, --members, --per-tick >= 1, --duration and "
                         "--window > 0")
    out = {"rooms": args.rooms, "members": args.members, "per_tick": args.per_tick,
           "window_s": args.window, "payload_bytes": args.payload_bytes,
           "budget": args.budget, "duration_s": args.duration,
           "scenarios": [run_scenario(sc, args) for sc in scenarios(codecs)]}
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
