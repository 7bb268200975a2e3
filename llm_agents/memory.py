"""A character's memory of a room and of each viewer: the pure part.

Theory of operation
-------------------
A character remembers per (room, character) two kinds of notes, each a
``Notes`` record: the room's (``user`` is ``""``: what it said and was told
there) and one per viewer (what was said *with* that viewer). A record is a
``summary`` (what older lines were folded into) and the newest ``entries``
(one line each: ``"Alice: my cat is Biscuit"``, ``"Quinn: lovely name!"``).

Everything is bounded, because a viewer's words end up in a prompt and on
disk (``MemoryLimits``; docs/AGENTS.md, "Memory"):

- a line is cut to ``line_chars``; a summary to ``summary_chars``;
- a record holds at most ``max_entries`` lines and ``max_bytes`` bytes of
  lines; past those the oldest lines are dropped, whatever else happens,
  so a model that is down or slow never lets a record grow;
- from ``summarise_entries`` lines (or ``summarise_bytes`` bytes) on, the
  record *wants a summary*: the service (``llm_agents.memory_service``) asks
  the character's backend to fold the summary and all but the newest
  ``keep_recent`` lines into a new summary, then ``fold`` applies it;
- a room keeps notes on at most ``users_per_room`` viewers (the least
  recently seen are forgotten first), and a record not touched for
  ``retention_days`` days is purged (0: kept forever).

``base`` counts the lines ever removed from the front of ``entries``, so a
summary that took a while (lines were dropped or added meanwhile) folds
exactly the lines it was made from, no more.

``MemoryStore`` is the persistence interface; ``InMemoryStore`` is here (for
tests), ``memory_sqlite`` and ``memory_redis`` are the durable ones.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

SUMMARY_PREFIX = "Earlier: "
DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class MemoryLimits:
    # Whether characters remember at all (``--no-agent-memory``).
    enabled: bool = True
    max_entries: int = 16
    max_bytes: int = 2048
    summarise_entries: int = 12
    summarise_bytes: int = 1536
    keep_recent: int = 4
    line_chars: int = 300
    summary_chars: int = 400
    # Tokens the model may use for a summary.
    summary_tokens: int = 120
    users_per_room: int = 1000
    retention_days: float = 30.0

    def __post_init__(self) -> None:
        if not 1 <= self.summarise_entries <= self.max_entries:
            raise ValueError("summarise_entries must be 1..max_entries")
        if not 1 <= self.summarise_bytes <= self.max_bytes:
            raise ValueError("summarise_bytes must be 1..max_bytes")
        if not 0 <= self.keep_recent < self.summarise_entries:
            raise ValueError("keep_recent must be below summarise_entries")
        if self.users_per_room < 1 or self.retention_days < 0:
            raise ValueError("users_per_room must be 1 or more, retention_days 0 or more")

    @classmethod
    def from_bounds(cls, *, enabled: bool = True, max_entries: int = 16,
                    max_bytes: int = 2048, users_per_room: int = 1000,
                    retention_days: float = 30.0) -> MemoryLimits:
        """Limits from the bounds the flags set: a summary is asked for at
        three quarters of either bound (room to spare while it is made)."""
        if not 2 <= max_entries <= 1000 or not 256 <= max_bytes <= 1_000_000:
            raise ValueError("entries must be 2..1000 and bytes 256..1000000")
        at = max(2, max_entries * 3 // 4)
        return cls(enabled=enabled, max_entries=max_entries, max_bytes=max_bytes,
                   summarise_entries=at, summarise_bytes=max_bytes * 3 // 4,
                   keep_recent=min(4, at - 1), users_per_room=users_per_room,
                   retention_days=retention_days)

    @property
    def retention_s(self) -> float:
        return self.retention_days * DAY_S


@dataclass(frozen=True, slots=True)
class Notes:
    room: str
    character: str
    user: str  # "" for the room's own notes
    summary: str = ""
    entries: tuple[str, ...] = ()
    base: int = 0
    updated: float = 0.0

    @property
    def size(self) -> int:
        return sum(len(e.encode()) for e in self.entries)

    def to_json(self) -> str:
        return json.dumps({"summary": self.summary, "entries": list(self.entries),
                           "base": self.base, "updated": self.updated})

    @classmethod
    def from_json(cls, room: str, character: str, user: str, data: str) -> Notes:
        obj: Any = json.loads(data)
        return cls(room, character, user, str(obj.get("summary", "")),
                   tuple(str(e) for e in obj.get("entries", ())), int(obj.get("base", 0)),
                   float(obj.get("updated", 0.0)))


@dataclass(frozen=True, slots=True)
class Recall:
    """What a prompt is given: the room's notes and the viewer's (either may
    be empty)."""
    room: Notes | None = None
    user: Notes | None = None
    user_name: str = ""


@dataclass(frozen=True, slots=True)
class SummaryJob:
    """Fold ``lines`` (from absolute index ``start``) and ``summary`` into one."""
    summary: str
    lines: tuple[str, ...]
    start: int


def clip(line: str, limit: int) -> str:
    line = " ".join(line.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def add_lines(notes: Notes, lines: Sequence[str], now: float, limits: MemoryLimits) -> Notes:
    """``notes`` with ``lines`` appended, then the oldest dropped until the
    hard bounds hold (a dropped line is lost, not summarised: the bound
    holds even when no model answers)."""
    entries = list(notes.entries) + [clip(x, limits.line_chars) for x in lines if x.strip()]
    size = sum(len(e.encode()) for e in entries)
    dropped = 0
    while entries and (len(entries) > limits.max_entries or size > limits.max_bytes):
        size -= len(entries.pop(0).encode())
        dropped += 1
    return replace(notes, entries=tuple(entries), base=notes.base + dropped, updated=now)


def wants_summary(notes: Notes, limits: MemoryLimits) -> bool:
    return (len(notes.entries) >= limits.summarise_entries
            or notes.size >= limits.summarise_bytes) and len(notes.entries) > limits.keep_recent


def summary_job(notes: Notes, limits: MemoryLimits) -> SummaryJob | None:
    """The lines to fold now, or None when the record does not need it."""
    if not wants_summary(notes, limits):
        return None
    n = len(notes.entries) - limits.keep_recent
    return SummaryJob(notes.summary, notes.entries[:n], notes.base)


def fold(notes: Notes, job: SummaryJob, summary: str, now: float,
         limits: MemoryLimits) -> Notes:
    """``notes`` with the job's lines replaced by ``summary``: only those of
    its lines still at the front (some may have been dropped meanwhile)."""
    end = job.start + len(job.lines)
    k = max(0, min(len(notes.entries), end - notes.base))
    return replace(notes, summary=clip(summary, limits.summary_chars),
                   entries=notes.entries[k:], base=notes.base + k, updated=now)


def summary_messages(display_name: str, job: SummaryJob, about: str,
                     limits: MemoryLimits) -> list[dict[str, str]]:
    """The request that asks the model for a new summary."""
    lines = "\n".join(job.lines)
    prior = f"Your notes so far: {job.summary}\n\n" if job.summary else ""
    return [{"role": "system",
             "content": f"You keep short notes for {display_name}, a character in a live room."},
            {"role": "user",
             "content": f"{prior}New lines of conversation {about}:\n{lines}\n\n"
                        f"Write updated notes in at most {limits.summary_chars // 6} words: "
                        "names, facts, preferences and promises worth remembering."}]


def scripted_summary(job: SummaryJob, limit: int) -> str:
    """The scripted backend's deterministic summary: the old summary and the
    lines, joined; the newest kept when it is too long."""
    text = " / ".join(([job.summary.removeprefix(SUMMARY_PREFIX)] if job.summary else [])
                      + list(job.lines))
    text = SUMMARY_PREFIX + text
    return text if len(text) <= limit else SUMMARY_PREFIX + "…" + text[-(limit - 11):]


def render(recall: Recall | None) -> str:
    """The part of a prompt memory adds (empty when there is nothing)."""
    if recall is None:
        return ""
    parts: list[str] = []
    if recall.user is not None and (recall.user.summary or recall.user.entries):
        who = recall.user_name or recall.user.user
        parts.append(f"What you remember about {who} from before:\n" + _body(recall.user))
    if recall.room is not None and (recall.room.summary or recall.room.entries):
        parts.append("What you remember of this room:\n" + _body(recall.room))
    return "\n\n".join(parts)


def _body(notes: Notes) -> str:
    return "\n".join(([notes.summary] if notes.summary else []) + list(notes.entries))


class MemoryStore(Protocol):
    """Where notes persist. ``save`` keeps at most ``users_per_room`` viewer
    records per (room, character), forgetting the least recently updated."""

    async def open(self) -> None: ...

    async def load(self, room: str, character: str, user: str) -> Notes | None: ...

    async def save(self, notes: Notes, users_per_room: int) -> None: ...

    async def purge(self, updated_before: float) -> int:
        """Forget the records not updated since ``updated_before``; how many."""
        ...

    async def close(self) -> None: ...


class InMemoryStore:
    """The same semantics in a dict, kept by nothing: for tests."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str, str], Notes] = {}

    async def open(self) -> None:
        return None

    async def load(self, room: str, character: str, user: str) -> Notes | None:
        return self.records.get((room, character, user))

    async def save(self, notes: Notes, users_per_room: int) -> None:
        self.records[(notes.room, notes.character, notes.user)] = notes
        if not notes.user:
            return
        users = sorted((n.updated, k) for k, n in self.records.items()
                       if k[0] == notes.room and k[1] == notes.character and k[2])
        for _, key in users[: max(0, len(users) - users_per_room)]:
            del self.records[key]

    async def purge(self, updated_before: float) -> int:
        old = [k for k, n in self.records.items() if n.updated < updated_before]
        for k in old:
            del self.records[k]
        return len(old)

    async def close(self) -> None:
        return None
