"""The URLs of a room's state for polling clients (served by ``cdn.origin``)."""

from __future__ import annotations

from urllib.parse import quote


# --------------------------------------------------------------------------
# URLs of the state for polling clients (served by cdn.origin). A versioned
# URL names one version of one store epoch, so its body never changes.
# --------------------------------------------------------------------------
def section_url(room: str, section: str, partial: int, epoch: str) -> str:
    return (f"/v1/rooms/{quote(room, safe='')}/sections/{quote(section, safe='')}"
            f"/v/{partial}?e={epoch}")


def snapshot_url(room: str, total: int, epoch: str) -> str:
    return f"/v1/rooms/{quote(room, safe='')}/snapshots/{total}?e={epoch}"


def head_url(room: str) -> str:
    return f"/v1/rooms/{quote(room, safe='')}/state"
