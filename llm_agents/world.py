"""A room's small environment: characters walking on the stage.

A character that declares ``[world]`` in its TOML walks about the stage of
every room it is seated in: it idles a while, walks to a point it picks,
idles again, and hops when the room sends a gift. Its place is written to
its own lossy section ``positions.<name>`` (``positions`` is a lossy base
name: QUIC members get it as datagrams, WebSocket members the latest value
of each coalescing tick) from a simulation tick of ``hz`` steps a second.

Why ``positions.<name>`` and not one ``positions`` for the room: a seat is
owned by one agents process per (room, character) (``llm_agents.seating``),
so two characters of one room may live in two processes; a section each
means one writer each, and neither overwrites the other's character.

The bounds that keep the fan-out unharmed: at most ``MAX_HZ`` writes a
second per character, a write only when the place changed (an idle
character writes nothing), a value of a few fixed fields, and no tick at
all while the room has no member but characters (``RoomAgent`` stops the
tick when the room empties and starts it when someone comes).

``Walker`` is pure: the tick task (``llm_agents.runtime``) calls ``step``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_agents.acting import FieldError

MAX_HZ = 30.0
IDLE, WALK, REACT = "idle", "walk", "react"


@dataclass(frozen=True, slots=True)
class WorldConfig:
    # Simulation steps (and at most writes) a second, 1..30.
    hz: float = 10.0
    # Stage widths a second.
    speed: float = 0.25
    # Seconds of idling between two walks (0: always walking).
    idle_s: float = 2.0
    # Seconds a gift's hop lasts.
    react_s: float = 1.0
    # Whether a gift in the room makes the character hop.
    gifts: bool = True


def parse_world(data: Any, path: Path) -> WorldConfig:
    if not isinstance(data, Mapping):
        raise FieldError("world", "must be a table")
    bounds = {"hz": (1.0, MAX_HZ), "speed": (0.01, 2.0), "idle_s": (0.0, 600.0),
              "react_s": (0.1, 10.0)}
    values: dict[str, Any] = {}
    for key, v in data.items():
        if key == "gifts":
            if not isinstance(v, bool):
                raise FieldError("world.gifts", "must be a boolean")
            values[key] = v
            continue
        if key not in bounds:
            raise FieldError(f"world.{key}", "is not a world field")
        lo, hi = bounds[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            raise FieldError(f"world.{key}", f"must be a number in {lo:g}..{hi:g}")
        values[key] = float(v)
    return WorldConfig(**values)


class Walker:
    """One character's place on a stage of 1 x 1 (x to the right, y up from
    the floor); deterministic for a seed, so tests can follow it."""

    def __init__(self, config: WorldConfig, seed: str, now: float,
                 start_x: float = 0.5) -> None:
        self.config = config
        self._rng = random.Random(seed)
        self.x = min(1.0, max(0.0, start_x))
        self.y = 0.0
        self.state = IDLE
        self.facing = 1
        self._target = self.x
        self._until = now + config.idle_s
        self._last = now

    def react(self, now: float) -> None:
        """A gift: hop where it stands for ``react_s``."""
        if self.config.gifts:
            self.state = REACT
            self._until = now + self.config.react_s

    def step(self, now: float) -> dict[str, Any]:
        """Advance to ``now``; the value of the character's positions section."""
        dt = max(0.0, min(now - self._last, 1.0))
        self._last = now
        cfg = self.config
        if self.state == REACT:
            left = self._until - now
            if left <= 0:
                self.state, self.y, self._until = IDLE, 0.0, now + cfg.idle_s
            else:
                phase = 1 - left / cfg.react_s
                self.y = round(0.2 * abs(math.sin(phase * 2 * math.pi)), 3)
        elif self.state == IDLE and now >= self._until:
            self.state = WALK
            self._target = round(self._rng.uniform(0.05, 0.95), 3)
            self.facing = 1 if self._target >= self.x else -1
        elif self.state == WALK:
            gap = self._target - self.x
            move = cfg.speed * dt
            if abs(gap) <= move:
                self.x = self._target
                self.state, self._until = IDLE, now + cfg.idle_s
            else:
                self.x += math.copysign(move, gap)
        return self.value()

    def value(self) -> dict[str, Any]:
        return {"x": round(self.x, 3), "y": round(self.y, 3), "state": self.state,
                "facing": self.facing}


START_X = {"left": 0.2, "center": 0.5, "right": 0.8}
