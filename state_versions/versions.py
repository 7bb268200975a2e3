"""Room state as sections with partial versions and a total version.

Theory of operation
-------------------
A room's state is a set of named sections (``meta``, ``pinned``,
``scoreboard``, ``stage``, ``stage.<agent>``...). Each section has a
*partial* version that grows by one on each change of that section; the room
has a *total* version that grows by one on every change of any section, so
``total == sum(partials)`` always holds. A client that keeps the versions it
has can ask for exactly the sections whose partial moved (``changed_since``),
and a client that sees a pushed total it did not expect knows it missed
something.

A write may carry an expected partial version (compare-and-set): it applies
only if the section is still at that version, otherwise it raises
``VersionConflict`` carrying the current version so the writer can resync.

A room has at most ``max_sections`` sections (when given): a write that
would add one more raises ``TooManySections`` and changes nothing, so what a
sync or a snapshot re-encodes stays bounded. Writing a section the room has
is always allowed.

Snapshots are immutable: the snapshot at total N never changes, so it can be
cached forever under a versioned URL.

Pure code: no I/O, no clock, no event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wire.errors import TooManySections, VersionConflict


@dataclass(frozen=True, slots=True)
class Section:
    name: str
    partial: int
    value: Any


@dataclass(frozen=True, slots=True)
class Change:
    """One applied change: the section's new partial and the room's new total."""

    room: str
    section: str
    partial: int
    total: int
    value: Any


@dataclass(frozen=True, slots=True)
class Snapshot:
    room: str
    total: int
    sections: Mapping[str, Section]

    def versions(self) -> dict[str, int]:
        return {name: s.partial for name, s in self.sections.items()}


class RoomState:
    """The state of one room. Not thread-safe; one owner applies changes."""

    __slots__ = ("_sections", "_snapshot", "room", "total")

    def __init__(self, room: str) -> None:
        self.room = room
        self.total = 0
        self._sections: dict[str, Section] = {}
        self._snapshot: Snapshot | None = None

    def apply(self, section: str, value: Any, expected: int | None = None,
              max_sections: int | None = None) -> Change:
        """Set ``section`` to ``value``. With ``expected``, only if the
        section's partial is still ``expected`` (0 means "does not exist yet");
        with ``max_sections``, only if the room has the section or room for it."""
        current = self._sections.get(section)
        partial = current.partial if current is not None else 0
        if expected is not None and expected != partial:
            raise VersionConflict(
                f"section {section!r} is at version {partial}, not {expected}",
                section=section, current=partial, total=self.total)
        if current is None and max_sections is not None and \
                len(self._sections) >= max_sections:
            raise too_many_sections(max_sections)
        partial += 1
        self.total += 1
        self._sections[section] = Section(section, partial, value)
        self._snapshot = None
        return Change(self.room, section, partial, self.total, value)

    def versions(self) -> dict[str, int]:
        return {name: s.partial for name, s in self._sections.items()}

    def get(self, section: str) -> Section | None:
        return self._sections.get(section)

    def changed_since(self, known: Mapping[str, int]) -> list[Section]:
        """The sections whose partial differs from ``known`` (missing counts as
        0), in name order so that replies are deterministic."""
        return [s for name, s in sorted(self._sections.items())
                if known.get(name, 0) != s.partial]

    def snapshot(self) -> Snapshot:
        snap = self._snapshot
        if snap is None:
            snap = self._snapshot = Snapshot(self.room, self.total, dict(self._sections))
        return snap


def too_many_sections(limit: int) -> TooManySections:
    """The refusal every store raises for a write over the sections cap."""
    return TooManySections(f"a room has at most {limit} sections", limit=limit)
