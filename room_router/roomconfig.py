"""Room configuration by namespace: ``--rooms-config FILE`` (TOML).

Theory of operation
-------------------
A file holds a ``[default]`` table and any number of ``[rooms."<pattern>"]``
tables; a pattern is a room id in which ``*`` stands for any run of room id
characters (``quiz-*``). The policy of a room is the entry of its exact id if
there is one, else the first pattern entry, in the file's order, that
matches it, else the default. An entry sets only what it names; the rest
comes from ``[default]``, whose unset settings come from the built-in
defaults below (``RoomPolicy``). Every edge of a cluster reads the same file;
``SIGHUP`` reloads it (a file that does not parse keeps the one in force and
logs why). docs/PROTOCOL.md ("Room configuration") documents each setting.

Pure: parsing and matching, no I/O beyond reading the file in ``load``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from wire.frames import CUSTOM_KIND_RE, ROOM_PATTERN_RE, room_pattern

# Entries of one file: a namespace per product area, not a row per room.
MAX_ENTRIES = 1000
# Policies remembered per room id (the lookup runs per action).
_CACHE_SIZE = 65_536


@dataclass(frozen=True, slots=True)
class RoomPolicy:
    """What a room allows and keeps. Every setting has a default that is
    liveroom's behaviour without a rooms config."""

    # Join only with a grant for the room in the token's ``rooms`` claim.
    private: bool = False
    # Keep the member list (``presence`` frames, ``joined``'s ``presence``)
    # while the room has at most ``presence_cap`` members; above, counts only.
    presence: bool = False
    presence_cap: int = 100
    # Keep the last ``history`` actions of ``history_kinds`` (0: none), each
    # for ``history_ttl`` seconds; sent on join, readable over HTTP.
    history: int = 0
    history_kinds: tuple[str, ...] = ("comment", "gift")
    history_ttl: float = 3600.0
    # Actions per user in the room (None: the edge's --action-rate/-burst).
    action_rate: float | None = None
    action_burst: int | None = None
    # A viewer may act once per ``slow_mode`` seconds (0: off); hosts,
    # moderators, agents and the backend are not slowed.
    slow_mode: float = 0.0
    # The action kinds clients may send (empty: any); agent.* and the
    # backend's actions are not restricted by it.
    kinds: tuple[str, ...] = ()
    # Sections the room may have (0: the edge's --max-sections).
    max_sections: int = 0
    # Backend hooks (docs/BACKEND.md): the action kinds the backend approves
    # before fan-out (the publish proxy), and whether it approves joins.
    publish_proxy: tuple[str, ...] = ()
    join_proxy: bool = False

    def proxies(self, kind: str) -> bool:
        return bool(self.publish_proxy) and kind in self.publish_proxy

    def allows_kind(self, kind: str) -> bool:
        return not self.kinds or kind in self.kinds

    def keeps_history_of(self, kind: str) -> bool:
        return self.history > 0 and kind in self.history_kinds

    def public(self) -> dict[str, Any]:
        """As JSON (``GET /v1/config/rooms``, ``GET /v1/rooms/{room}``)."""
        out = asdict(self)
        out["history_kinds"] = list(self.history_kinds)
        out["kinds"] = list(self.kinds)
        out["publish_proxy"] = list(self.publish_proxy)
        return out


_FIELDS = {f.name: f for f in fields(RoomPolicy)}


def _check(name: str, value: Any, where: str) -> Any:
    """``value`` for setting ``name``, checked; ValueError naming ``where``."""
    def bad(what: str) -> ValueError:
        return ValueError(f"{where}: {name} {what}")

    if name not in _FIELDS:
        raise ValueError(f"{where}: unknown setting {name!r} (known: {', '.join(_FIELDS)})")
    if name in ("private", "presence", "join_proxy"):
        if type(value) is not bool:
            raise bad("must be true or false")
        return value
    if name in ("history_kinds", "kinds", "publish_proxy"):
        if (not isinstance(value, list) or len(value) > 64
                or not all(isinstance(k, str) and CUSTOM_KIND_RE.match(k) for k in value)):
            raise bad("must be a list of at most 64 action kinds")
        return tuple(value)
    bounds: dict[str, tuple[float, float, type]] = {
        "presence_cap": (1, 10_000, int), "history": (0, 1000, int),
        "history_ttl": (1, 7 * 86_400, float), "action_rate": (0.001, 1000, float),
        "action_burst": (1, 10_000, int), "slow_mode": (0, 3600, float),
        "max_sections": (0, 100_000, int)}
    low, high, kind = bounds[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (kind is int and not isinstance(value, int)) or not low <= value <= high:
        raise bad(f"must be {'an integer' if kind is int else 'a number'} in {low:g}..{high:g}")
    return kind(value)


def _policy(table: Any, base: RoomPolicy, where: str) -> RoomPolicy:
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table")
    policy = replace(base, **{k: _check(k, v, where) for k, v in table.items()})
    if (policy.action_rate is None) != (policy.action_burst is None):
        raise ValueError(f"{where}: action_rate and action_burst go together")
    return policy


@dataclass(frozen=True, slots=True)
class Entry:
    pattern: str
    policy: RoomPolicy
    regex: re.Pattern[str] | None  # None: an exact room id


class RoomsConfig:
    """One parsed rooms config: ``policy(room)`` for any room id."""

    def __init__(self, default: RoomPolicy | None = None,
                 entries: tuple[Entry, ...] = (), source: str = "") -> None:
        self.default = default or RoomPolicy()
        self.source = source
        self._exact = {e.pattern: e.policy for e in entries if e.regex is None}
        self._patterns = tuple(e for e in entries if e.regex is not None)
        self.entries = entries
        self._cache: dict[str, RoomPolicy] = {}

    @classmethod
    def parse(cls, text: str, source: str = "") -> RoomsConfig:
        """From TOML text; ValueError saying what is wrong (with ``source``)."""
        where = source or "rooms config"
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{where}: not TOML: {exc}") from None
        unknown = set(doc) - {"default", "rooms"}
        if unknown:
            raise ValueError(f"{where}: unknown table(s) {sorted(unknown)}; "
                             "use [default] and [rooms.\"<pattern>\"]")
        default = _policy(doc.get("default", {}), RoomPolicy(), f"{where}: [default]")
        rooms = doc.get("rooms", {})
        if not isinstance(rooms, dict):
            raise ValueError(f"{where}: rooms must be tables [rooms.\"<pattern>\"]")
        if len(rooms) > MAX_ENTRIES:
            raise ValueError(f"{where}: at most {MAX_ENTRIES} room entries")
        entries = []
        for pattern, table in rooms.items():
            label = f"{where}: [rooms.{pattern!r}]"
            if not ROOM_PATTERN_RE.match(pattern):
                raise ValueError(f"{label}: a room id or pattern is 1..64 of "
                                 "[A-Za-z0-9_.:-*]")
            entries.append(Entry(pattern, _policy(table, default, label),
                                 room_pattern(pattern) if "*" in pattern else None))
        return cls(default, tuple(entries), source)

    @classmethod
    def load(cls, path: Path) -> RoomsConfig:
        """From a file; ValueError (or OSError) saying what is wrong."""
        return cls.parse(path.read_text(encoding="utf-8"), str(path))

    def policy(self, room: str) -> RoomPolicy:
        cached = self._cache.get(room)
        if cached is not None:
            return cached
        policy = self._exact.get(room)
        if policy is None:
            policy = next((e.policy for e in self._patterns
                           if e.regex is not None and e.regex.match(room)), self.default)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[room] = policy
        return policy

    def public(self) -> dict[str, Any]:
        """As JSON (``GET /v1/config/rooms``): every entry with its settings
        resolved, in the order they are matched."""
        return {"source": self.source or None, "default": self.default.public(),
                "rooms": [{"match": e.pattern, **e.policy.public()} for e in self.entries]}


class RoomPolicies:
    """The rooms config in force, replaced whole on reload; what the edge
    holds (every lookup goes through ``policy``)."""

    __slots__ = ("current", "loaded", "path", "reloads")

    def __init__(self, current: RoomsConfig | None = None, path: Path | None = None) -> None:
        self.current = current or RoomsConfig()
        self.path = path
        self.reloads = 0
        self.loaded = True

    @classmethod
    def from_file(cls, path: Path | None) -> RoomPolicies:
        """The config at ``path`` (None: the built-in defaults); ValueError
        or OSError when the file is missing or wrong."""
        return cls(RoomsConfig.load(path) if path is not None else None, path)

    def policy(self, room: str) -> RoomPolicy:
        return self.current.policy(room)

    def reload(self) -> str | None:
        """Read the file again; None when it replaced the config in force,
        else why not (the config in force stays)."""
        if self.path is None:
            return "no --rooms-config file"
        try:
            self.current = RoomsConfig.load(self.path)
        except (OSError, ValueError) as exc:
            self.loaded = False
            return str(exc)
        self.reloads += 1
        self.loaded = True
        return None

    def public(self) -> dict[str, Any]:
        return {**self.current.public(), "reloads": self.reloads,
                "last_reload_ok": self.loaded}


def policy_settings() -> Mapping[str, Any]:
    """Each setting and its built-in default (for docs and tests)."""
    return RoomPolicy().public()
