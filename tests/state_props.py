"""What the state-store tests share: hypothesis strategies for the values
the edge admits, and ``same`` (equal, and of the same types)."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Values are what the edge admits: JSON (ints up to 64 bits, finite floats,
# any text), nested a little.
_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_values = st.recursive(
    _scalars,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids,
                                                              max_size=3),
    max_leaves=8)
sections = st.sampled_from(["meta", "pinned", "scoreboard", "stage", "stage.bot"])
changes = st.lists(st.tuples(sections, json_values), max_size=25)
PROPERTY = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def new_room() -> str:
    return f"room-{uuid.uuid4().hex[:12]}"


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1.0 is not 1 here:
    msgpack and JSON clients can tell them apart)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if hasattr(a, "__dataclass_fields__"):
        return all(same(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)
    if isinstance(a, float) and a == 0.0:
        return str(a) == str(b)  # -0.0 stays -0.0
    return bool(a == b)
