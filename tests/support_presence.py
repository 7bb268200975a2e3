"""What the presence tests share: a member list kept from ``joined`` and
``presence`` frames, as a client keeps it."""

from __future__ import annotations

from typing import Any

from edge.client import LiveroomClient


class Roster:
    """One client's view of a room's members (``None`` while capped)."""

    def __init__(self, client: LiveroomClient, room: str, joined: dict[str, Any]) -> None:
        self.client = client
        self.room = room
        self.frames: list[dict[str, Any]] = []
        self.members: dict[str, dict[str, Any]] | None = (
            None if joined.get("presence_capped")
            else {m["id"]: m for m in joined["presence"]})

    def apply(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)
        if frame.get("capped"):
            self.members = None
            return
        members = self.members if self.members is not None else {}
        for user in frame["leaves"]:
            members.pop(user, None)
        for m in frame["joins"]:
            members[m["id"]] = m
        self.members = members

    async def pump(self, timeout: float = 0.2) -> None:
        """Apply the presence frames of this room that arrive within ``timeout``."""
        try:
            while True:
                frame = await self.client.recv(timeout)
                if frame.get("type") == "presence" and frame.get("room") == self.room:
                    self.apply(frame)
        except TimeoutError:
            pass

    async def ids(self) -> set[str] | None:
        await self.pump()
        return None if self.members is None else set(self.members)


async def roster(client: LiveroomClient, room: str) -> Roster:
    joined = await client.join(room)
    assert joined["type"] == "joined", joined
    return Roster(client, room, joined)
