"""Types of edge/_sendloop.c (the fan-out's send loop in C)."""

from collections.abc import Callable, Iterable
from typing import TypeVar

from wire.codecs import Variant

_C = TypeVar("_C")

def write_members(
    members: Iterable[_C], frame_for: Callable[[Variant], bytes | None], /
) -> tuple[int, list[_C], list[_C], Exception | None]: ...
