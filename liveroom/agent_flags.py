"""The characters' seat and memory flags (``liveroom serve`` and ``liveroom
agents``; docs/AGENTS.md, "Seats" and "Memory"), added to the agents' group
of ``liveroom.flags`` (kept apart so that the flag table stays under the
module size bound). Defaults are strings, as the environment gives them:
argparse converts them, so a bad variable is a usage error like a bad flag."""

from __future__ import annotations

import argparse
import os
from typing import Any

from llm_agents.memory import MemoryLimits
from llm_agents.seats import MAX_SEATS_TOTAL, SeatLimits

_D = SeatLimits()


def add_seat_arguments(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--agent-max-seats", type=int,
                   default=os.environ.get("LIVEROOM_AGENT_MAX_SEATS", str(_D.per_process)),
                   help="seats one agents process runs at most; a seat past every live "
                        "process's bound is refused (too_many_seats)")
    g.add_argument("--agent-max-seats-per-room", type=int,
                   default=os.environ.get("LIVEROOM_AGENT_MAX_SEATS_PER_ROOM",
                                          str(_D.per_room)),
                   help="characters seated in one room at most (too_many_seats past it)")


def seat_limits(args: argparse.Namespace) -> SeatLimits:
    for flag, value in (("--agent-max-seats", args.agent_max_seats),
                        ("--agent-max-seats-per-room", args.agent_max_seats_per_room)):
        if not 1 <= value <= MAX_SEATS_TOTAL:
            raise SystemExit(f"{flag} must be 1..{MAX_SEATS_TOTAL}")
    return SeatLimits(per_room=args.agent_max_seats_per_room,
                      per_process=args.agent_max_seats)


def _env(name: str, default: str) -> str:
    return os.environ.get(f"LIVEROOM_{name}", default)


def add_memory_arguments(g: Any) -> None:
    """The characters' memory (docs/AGENTS.md, Memory)."""
    m = MemoryLimits()
    g.add_argument("--no-agent-memory", action="store_true",
                   help="characters remember nothing between replies but the recent chat")
    g.add_argument("--agent-memory-retention-days", type=float,
                   default=_env("AGENT_MEMORY_RETENTION_DAYS", str(m.retention_days)),
                   help="days a character remembers a viewer (or a room) not seen since; "
                        "0: forever")
    g.add_argument("--agent-memory-entries", type=int,
                   default=_env("AGENT_MEMORY_ENTRIES", str(m.max_entries)),
                   help="lines kept per viewer and per room before the oldest go "
                        "(summarised by the model from three quarters of it on)")
    g.add_argument("--agent-memory-bytes", type=int,
                   default=_env("AGENT_MEMORY_BYTES", str(m.max_bytes)),
                   help="bytes of lines kept per viewer and per room")
    g.add_argument("--agent-memory-users", type=int,
                   default=_env("AGENT_MEMORY_USERS", str(m.users_per_room)),
                   help="viewers remembered per room and character (the least recently "
                        "seen are forgotten first)")


def memory_limits(args: argparse.Namespace) -> MemoryLimits:
    if args.agent_memory_retention_days < 0 or args.agent_memory_users < 1:
        raise SystemExit("--agent-memory-retention-days must be 0 (forever) or more, "
                         "--agent-memory-users 1 or more")
    try:
        return MemoryLimits.from_bounds(
            enabled=not args.no_agent_memory, max_entries=args.agent_memory_entries,
            max_bytes=args.agent_memory_bytes, users_per_room=args.agent_memory_users,
            retention_days=args.agent_memory_retention_days)
    except ValueError as err:
        raise SystemExit(f"--agent-memory-*: {err}") from None
