"""Characters: who an agent is, read from TOML files.

A character file names the agent (its user id in the room), its persona (the
system prompt), what it reacts to, how often and how long it may speak, the
state sections it owns and its model backend. ``load_character`` checks every
field and reports a bad one as ``CharacterError`` naming the file and the
field, so a typo in a character never surfaces later as a strange reply.

The shipped characters live in ``llm_agents/characters/``; ``--characters DIR``
adds a user-supplied directory (a file there replaces a shipped character of
the same ``name``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_agents.acting import Acting, FieldError, parse_acting
from llm_agents.world import WorldConfig, parse_world
from wire.frames import CUSTOM_KIND_RE, SECTION_RE, USER_RE

SHIPPED_DIR = Path(__file__).parent / "characters"
BACKENDS = ("default", "scripted", "embedded", "openai")
# What a scripted character says, per trigger kind (llm_agents.policy).
SCRIPT_KEYS = ("mention", "question", "gift", "silence", "state", "event", "interaction")


class CharacterError(ValueError):
    """A character file is unreadable or one of its fields is invalid. Not a
    wire error (no client sent it): it stops the agents role at start."""

    def __init__(self, path: Path | str, field_name: str, message: str) -> None:
        self.path = str(path)
        self.field = field_name
        super().__init__(f"{path}: field {field_name!r}: {message}")


@dataclass(frozen=True, slots=True)
class Reacts:
    mentions: bool = True
    questions: bool = False
    gifts: bool = False
    # Speak after this many seconds without any action in the room (0: never).
    silence_s: float = 0.0
    # Speak every this many seconds whatever happens (a commentator; 0: never).
    every_s: float = 0.0
    # State sections whose changes the character comments on.
    sections: tuple[str, ...] = ()
    # Custom action kinds (e.g. "game.score") the character comments on.
    kinds: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Character:
    name: str
    display_name: str
    persona: str
    backend: str = "default"
    model: str = ""
    cooldown_s: float = 5.0
    max_reply_tokens: int = 60
    max_reply_chars: int = 400
    reacts: Reacts = field(default_factory=Reacts)
    owns: tuple[str, ...] = ()
    stage: Mapping[str, Any] = field(default_factory=dict)
    scripted: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    decline: str = "I need a short break, back soon!"
    source: str = ""
    # What its replies may change on its stage (llm_agents.acting), if anything.
    acting: Acting | None = None
    # Its walk about the stage (llm_agents.world); None: it stands still.
    world: WorldConfig | None = None

    @property
    def stage_section(self) -> str:
        return f"stage.{self.name}"


def _get(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: Path,
         default: Any = None, *, prefix: str = "") -> Any:
    value = data.get(key, default)
    name = prefix + key
    if value is None:
        raise CharacterError(path, name, "is required")
    # bool is an int: a number field must not take true/false.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise CharacterError(path, name, f"must be {_kind_name(kind)}, not a boolean")
    if not isinstance(value, kind):
        raise CharacterError(path, name, f"must be {_kind_name(kind)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
             list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def parse_character(data: Mapping[str, Any], path: Path | str = "<character>") -> Character:
    """A Character from a decoded TOML table; CharacterError names the field."""
    p = Path(path)
    known = {"name", "display_name", "persona", "backend", "model", "cooldown_s",
             "max_reply_tokens", "max_reply_chars", "reacts", "owns", "stage", "scripted",
             "decline", "acting", "world"}
    for key in data:
        if key not in known:
            raise CharacterError(p, key, "is not a character field")
    name = _get(data, "name", str, p)
    if not USER_RE.match(name):
        raise CharacterError(p, "name", "must be 1..64 of [A-Za-z0-9_.:@-] (a user id)")
    display = _get(data, "display_name", str, p, name)
    if not 0 < len(display) <= 64:
        raise CharacterError(p, "display_name", "must be 1..64 characters")
    persona = _get(data, "persona", str, p)
    if not persona.strip() or len(persona) > 4000:
        raise CharacterError(p, "persona", "must be 1..4000 characters")
    backend = _get(data, "backend", str, p, "default")
    if backend not in BACKENDS:
        raise CharacterError(p, "backend", f"must be one of {', '.join(BACKENDS)}")
    model = _get(data, "model", str, p, "")
    cooldown = float(_get(data, "cooldown_s", (int, float), p, 5.0))
    if not 0 <= cooldown <= 3600:
        raise CharacterError(p, "cooldown_s", "must be 0..3600 seconds")
    max_tokens = _get(data, "max_reply_tokens", int, p, 60)
    if not 1 <= max_tokens <= 2048:
        raise CharacterError(p, "max_reply_tokens", "must be 1..2048")
    max_chars = _get(data, "max_reply_chars", int, p, 400)
    if not 1 <= max_chars <= 4000:
        raise CharacterError(p, "max_reply_chars", "must be 1..4000")
    reacts = _reacts(_get(data, "reacts", dict, p, {}), p)
    owns = _get(data, "owns", list, p, [f"stage.{name}"])
    for i, section in enumerate(owns):
        # The edge lets an agent write only stage.<its user id>
        # (edge.session.may_write_section): a file claiming more is wrong.
        if section != f"stage.{name}":
            raise CharacterError(p, f"owns[{i}]", f"an agent may own only 'stage.{name}'")
    stage = _get(data, "stage", dict, p, {})
    scripted_raw = _get(data, "scripted", dict, p, {})
    scripted: dict[str, tuple[str, ...]] = {}
    for key, lines in scripted_raw.items():
        if key not in SCRIPT_KEYS:
            raise CharacterError(p, f"scripted.{key}", f"must be one of {', '.join(SCRIPT_KEYS)}")
        if isinstance(lines, str):
            lines = [lines]
        if not isinstance(lines, list) or not lines or not all(
                isinstance(x, str) and x.strip() for x in lines):
            raise CharacterError(p, f"scripted.{key}", "must be a non-empty list of strings")
        scripted[key] = tuple(lines)
    decline = _get(data, "decline", str, p, "I need a short break, back soon!")
    try:
        acting = parse_acting(data["acting"], p) if "acting" in data else None
        world = parse_world(data["world"], p) if "world" in data else None
    except FieldError as err:
        raise CharacterError(p, err.field, err.message) from None
    return Character(name=name, display_name=display, persona=persona.strip(),
                     backend=backend, model=model, cooldown_s=cooldown,
                     max_reply_tokens=max_tokens, max_reply_chars=max_chars, reacts=reacts,
                     owns=tuple(owns), stage=dict(stage), scripted=scripted, decline=decline,
                     source=str(path), acting=acting, world=world)


def _reacts(data: Mapping[str, Any], p: Path) -> Reacts:
    known = {"mentions", "questions", "gifts", "silence_s", "every_s", "sections", "kinds"}
    for key in data:
        if key not in known:
            raise CharacterError(p, f"reacts.{key}", "is not a reacts field")
    pre = "reacts."
    silence = float(_get(data, "silence_s", (int, float), p, 0.0, prefix=pre))
    if not 0 <= silence <= 86400:
        raise CharacterError(p, "reacts.silence_s", "must be 0..86400 seconds")
    every = float(_get(data, "every_s", (int, float), p, 0.0, prefix=pre))
    if not 0 <= every <= 86400:
        raise CharacterError(p, "reacts.every_s", "must be 0..86400 seconds")
    sections = _get(data, "sections", list, p, [], prefix=pre)
    for i, s in enumerate(sections):
        if not isinstance(s, str) or not SECTION_RE.match(s):
            raise CharacterError(p, f"reacts.sections[{i}]", "must be a section name")
    kinds = _get(data, "kinds", list, p, [], prefix=pre)
    for i, k in enumerate(kinds):
        if not isinstance(k, str) or not CUSTOM_KIND_RE.match(k) or k in ("comment", "gift") \
                or k.startswith("agent."):
            raise CharacterError(p, f"reacts.kinds[{i}]",
                                 "must be a custom action kind (not comment, gift or agent.*)")
    return Reacts(
        kinds=tuple(kinds),
        mentions=_get(data, "mentions", bool, p, True, prefix=pre),
        questions=_get(data, "questions", bool, p, False, prefix=pre),
        gifts=_get(data, "gifts", bool, p, False, prefix=pre),
        silence_s=silence, every_s=every, sections=tuple(sections))


def load_character(path: Path) -> Character:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise CharacterError(path, "-", f"cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CharacterError(path, "-", f"not valid TOML: {exc}") from None
    return parse_character(data, path)


def load_characters(dirs: Iterable[Path]) -> dict[str, Character]:
    """Every ``*.toml`` of ``dirs`` in order, by name; a later directory's
    character replaces an earlier one of the same name."""
    out: dict[str, Character] = {}
    for d in dirs:
        if not d.is_dir():
            raise CharacterError(d, "-", "is not a directory")
        for path in sorted(d.glob("*.toml")):
            c = load_character(path)
            out[c.name] = c
    return out
