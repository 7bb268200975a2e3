"""A room's state as a client holds it: section values, partial versions,
the total and the epoch, kept by the rules of PROTOCOL.md ("Using the
versions", "Epochs"). Pure: no I/O; it says when a ``sync`` is needed and
the room object sends it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class RoomState:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.versions: dict[str, int] = {}
        self.total = 0
        self.epoch: str | None = None
        self._behind = False  # a frame showed a total the versions do not add up to

    def snapshot(self, frame: dict[str, Any]) -> list[str]:
        """Apply a ``joined`` or ``sync`` reply (authoritative); the sections
        whose value it brought. Another epoch than the one held: forget
        everything first (the versions are not comparable)."""
        epoch = frame.get("epoch")
        if epoch != self.epoch:
            self.values.clear()
            self.versions.clear()
            self.epoch = epoch
        changed = []
        for entry in frame.get("sections", ()):
            self.values[entry["section"]] = entry["value"]
            changed.append(entry["section"])
        self.versions = {k: int(v) for k, v in frame.get("versions", {}).items()}
        for gone in set(self.values) - set(self.versions):
            del self.values[gone]
        self.total = int(frame.get("total", 0))
        self._behind = False
        return changed

    def apply(self, frame: dict[str, Any]) -> bool:
        """Apply a pushed ``state`` frame; whether it changed a value (an old
        frame, its partial not above the one held, changes nothing)."""
        section, partial = frame["section"], int(frame["partial"])
        total = int(frame["total"])
        if total < self.total:
            # Totals only grow within an epoch: the store started over.
            self._behind = True
        if partial <= self.versions.get(section, 0):
            return False
        self.values[section] = frame["value"]
        self.versions[section] = partial
        self.total = max(self.total, total)
        return True

    def needs_sync(self) -> bool:
        """Checked after a whole transport frame (a ``batch`` included): a
        change to some section was missed, or the store started over."""
        return self._behind or sum(self.versions.values()) != self.total

    def resume_args(self) -> tuple[dict[str, int] | None, str | None]:
        """``known`` and ``epoch`` for a ``join`` or ``sync``."""
        return (dict(self.versions) or None), self.epoch


class SeenIds:
    """The ids of the last ``size`` actions of a room: an action seen twice
    (in ``joined.history`` and live, or on two connections while a token is
    renewed) reaches the application once."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def first_time(self, action_id: Any) -> bool:
        if not isinstance(action_id, str):
            return True
        if action_id in self._ids:
            return False
        self._ids[action_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True
