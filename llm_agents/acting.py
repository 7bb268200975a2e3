"""Acting on the stage: the structured part of a character's reply.

A character that declares ``[acting]`` in its TOML may change its own stage
section (``stage.<name>``) with a reply: its mood, an emote, its position.
Each field lists the values it may take, and from that list comes the JSON
schema the model's output is constrained to (``reply_schema``): the model
answers ``{"stage": {...}, "say": "..."}`` through the backend's
structured output (``response_format`` with a JSON schema in the OpenAI API;
vLLM and llama.cpp both compile it to a grammar), the stage first so it is
decided before the words stream.

What comes back is a model's output, so it is checked again here
(``validate_stage``) whatever the backend promised: a table, known fields
only, each value one of the field's values, small once encoded. A bad stage
part is refused (logged and counted by the runtime) and the reply's words
still go out: acting is a garnish, never a reason to lose a reply.

``ReplyJson`` pulls the ``say`` string out of the streamed JSON as it
arrives, so the words stream to the room as plain text does, and keeps the
``stage`` object's raw text to parse at the end.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Bounds of a character's acting declaration, and so of what a reply may
# write: at most MAX_FIELDS fields of MAX_VALUES values each.
MAX_FIELDS = 6
MAX_VALUES = 16
MAX_VALUE_CHARS = 32
# The encoded stage part of one reply (the fields above fit well within it).
MAX_STAGE_BYTES = 512
# Tokens a structured reply may spend on its JSON around the words (the
# stage object, the keys and quotes), on top of the character's reply limit.
STAGE_TOKENS = 32
FIELD_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
VALUE_RE = re.compile(r"^[A-Za-z0-9 _.!?-]{1,32}$")
# Kept by the runtime in the stage section: a reply may not write them.
RESERVED_FIELDS = frozenset({"name", "speaking"})
# Trigger kinds a scripted stage change may be declared for.
SCRIPTED_KINDS = ("mention", "question", "gift", "silence", "state", "event")


class StageRefused(ValueError):
    """The stage part of a reply is not one the character may write; the
    ``reason`` is a metric label (a fixed word, never the model's text)."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(detail)


@dataclass(frozen=True, slots=True)
class Acting:
    # Field -> the values it may take, in the order the TOML lists them.
    fields: Mapping[str, tuple[str, ...]]
    # Trigger kind -> the stage change the scripted backend makes on it. Not
    # checked against ``fields`` at load: the scripted backend plays the
    # model, and what it says is validated as a model's output would be.
    scripted: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StageChange:
    """A backend's stage part of a reply, as it came (unvalidated): the
    decoded ``stage`` object, or ``error`` when it could not be decoded."""

    value: Any
    error: str | None = None


class FieldError(ValueError):
    """A bad field of a character's ``[acting]`` or ``[world]`` table;
    ``llm_agents.character`` reports it as its ``CharacterError``."""

    def __init__(self, name: str, message: str) -> None:
        self.field = name
        self.message = message
        super().__init__(f"field {name!r}: {message}")


def _err(path: Path, name: str, message: str) -> Exception:
    return FieldError(name, message)


def parse_acting(data: Any, path: Path) -> Acting:
    """``[acting]``: a ``fields`` table (field -> list of values) and an
    optional ``scripted`` table (trigger kind -> stage change)."""
    if not isinstance(data, Mapping):
        raise _err(path, "acting", "must be a table")
    for key in data:
        if key not in ("fields", "scripted"):
            raise _err(path, f"acting.{key}", "is not an acting field")
    raw = data.get("fields")
    if not isinstance(raw, Mapping) or not 0 < len(raw) <= MAX_FIELDS:
        raise _err(path, "acting.fields", f"must be a table of 1..{MAX_FIELDS} fields")
    fields: dict[str, tuple[str, ...]] = {}
    for name, values in raw.items():
        where = f"acting.fields.{name}"
        if not FIELD_RE.match(name) or name in RESERVED_FIELDS:
            raise _err(path, where, "must be 1..32 of [a-z0-9_] and not name or speaking")
        if not isinstance(values, list) or not 0 < len(values) <= MAX_VALUES or not all(
                isinstance(v, str) and VALUE_RE.match(v) for v in values):
            raise _err(path, where, f"must be a list of 1..{MAX_VALUES} values "
                       f"of 1..{MAX_VALUE_CHARS} of [A-Za-z0-9 _.!?-]")
        fields[name] = tuple(dict.fromkeys(values))
    scripted_raw = data.get("scripted", {})
    if not isinstance(scripted_raw, Mapping):
        raise _err(path, "acting.scripted", "must be a table")
    scripted: dict[str, dict[str, Any]] = {}
    for kind, change in scripted_raw.items():
        where = f"acting.scripted.{kind}"
        if kind not in SCRIPTED_KINDS:
            raise _err(path, where, f"must be one of {', '.join(SCRIPTED_KINDS)}")
        if not isinstance(change, Mapping) or len(change) > MAX_FIELDS:
            raise _err(path, where, f"must be a table of at most {MAX_FIELDS} entries")
        scripted[kind] = dict(change)
    return Acting(fields=fields, scripted=scripted)


def reply_schema(acting: Acting) -> dict[str, Any]:
    """The JSON schema of a reply with a stage part. Every stage field is
    required in what the model is asked for (a grammar with optional
    properties lets a small model ramble); ``validate_stage`` takes a subset,
    so a scripted change may name one field only."""
    stage = {"type": "object",
             "properties": {k: {"type": "string", "enum": list(v)}
                            for k, v in acting.fields.items()},
             "required": list(acting.fields), "additionalProperties": False}
    return {"type": "object",
            # Not empty: a small model otherwise settles for "say": "".
            "properties": {"stage": stage, "say": {"type": "string", "minLength": 8}},
            "required": ["stage", "say"], "additionalProperties": False}


def acting_hint(acting: Acting) -> str:
    """The line of the prompt that tells the model the shape of its answer."""
    options = "; ".join(f"{k}: one of {', '.join(v)}" for k, v in acting.fields.items())
    return ('Answer in JSON with "stage" (how you look now) and "say" (what you say '
            f'to the room). In "stage" choose {options}.')


def validate_stage(acting: Acting, change: StageChange) -> dict[str, str]:
    """The fields a reply's stage part sets, or ``StageRefused``."""
    if change.error is not None:
        raise StageRefused("undecodable", change.error)
    value = change.value
    if not isinstance(value, Mapping):
        raise StageRefused("not_a_table", "the stage part is not an object")
    try:
        size = len(json.dumps(value, separators=(",", ":")).encode())
    except (TypeError, ValueError):
        raise StageRefused("not_a_table", "the stage part does not encode") from None
    if size > MAX_STAGE_BYTES:
        raise StageRefused("too_big", f"the stage part is {size} bytes (max {MAX_STAGE_BYTES})")
    out: dict[str, str] = {}
    for key, v in value.items():
        allowed = acting.fields.get(key) if isinstance(key, str) else None
        if allowed is None:
            raise StageRefused("unknown_field", f"{str(key)[:40]!r} is not a stage field")
        if not isinstance(v, str) or v not in allowed:
            raise StageRefused("bad_value", f"{str(v)[:40]!r} is not a value of {key!r}")
        out[key] = v
    return out


class ReplyJson:
    """The ``say`` text of a streamed ``{"stage": ..., "say": ...}`` reply,
    chunk by chunk, and its ``stage`` object at the end.

    A small scanner, not a JSON parser: it tracks strings (with escapes) and
    nesting depth, so it finds the top-level ``stage`` and ``say`` members
    wherever the chunks split them; the stage's raw text is decoded by
    ``json`` at the end. A reply cut by the token limit keeps the words it
    had (and the stage, which comes first)."""

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = False
        self._escape = ""  # the pending escape sequence inside a string
        self._key: list[str] = []
        self._last_key = ""
        self._expect_value = False
        self._target = ""  # "say" or "stage" while inside that member's value
        self._stage: list[str] = []
        self._stage_depth = 0
        self.stage_text = ""
        self.raw_chars = 0
        self._high = ""  # a high surrogate waiting for its low half

    def feed(self, chunk: str) -> str:
        out: list[str] = []
        self.raw_chars += len(chunk)
        for ch in chunk:
            self._step(ch, out)
        return "".join(out)

    def _step(self, ch: str, out: list[str]) -> None:
        if self._target == "stage" and len(self._stage) <= 4 * MAX_STAGE_BYTES:
            self._stage.append(ch)
        if self._in_string:
            self._string_char(ch, out)
            return
        if ch == '"':
            self._in_string = True
            if self._depth == 1 and self._expect_value and self._last_key == "say":
                self._target = "say"
            elif self._depth == 1 and not self._expect_value:
                self._key = []
                self._target = "key"
        elif ch in "{[":
            if self._depth == 1 and self._expect_value and self._last_key == "stage":
                self._target = "stage"
                self._stage = [ch]
                self._stage_depth = self._depth
            self._depth += 1
        elif ch in "}]":
            self._depth -= 1
            if self._target == "stage" and self._depth == self._stage_depth:
                self.stage_text = "".join(self._stage)
                self._target = ""
        elif ch == ":" and self._depth == 1:
            self._expect_value = True
        elif ch == "," and self._depth == 1:
            self._expect_value = False

    def _string_char(self, ch: str, out: list[str]) -> None:
        target = self._target
        if self._escape:
            self._escape += ch
            if self._escape[1] == "u" and len(self._escape) < 6:
                return
            text = self._pair(self._unescape(self._escape))
            self._escape = ""
        elif ch == "\\":
            self._escape = ch
            return
        elif ch == '"':
            self._in_string = False
            if target == "key":
                self._last_key = "".join(self._key)
                self._target = ""
            elif target == "say":
                self._target = ""
                self._expect_value = False
            return
        else:
            text = ch
        if target == "say":
            out.append(text)
        elif target == "key" and len(self._key) < 64:
            self._key.append(text)

    def _pair(self, text: str) -> str:
        """A ``\\u`` escape's character, surrogate pairs joined (a lone
        half is dropped: it would not encode)."""
        if len(text) == 1 and "\ud800" <= text <= "\udbff":
            self._high = text
            return ""
        high, self._high = self._high, ""
        if len(text) == 1 and "\udc00" <= text <= "\udfff":
            if not high:
                return ""
            return (high + text).encode("utf-16", "surrogatepass").decode("utf-16")
        return text

    @staticmethod
    def _unescape(seq: str) -> str:
        try:
            value = json.loads(f'"{seq}"')
        except ValueError:
            return ""
        return value if isinstance(value, str) else ""

    def stage(self) -> StageChange:
        """The stage object as decoded, or why it could not be."""
        if not self.stage_text:
            return StageChange(None, "no complete stage object in the reply")
        if len(self.stage_text) > 4 * MAX_STAGE_BYTES:
            return StageChange(None, "the stage object is too big")
        try:
            return StageChange(json.loads(self.stage_text))
        except ValueError:
            return StageChange(None, "the stage object is not valid JSON")
