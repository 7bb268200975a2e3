"""The connection registry: which edge nodes hold a user's connections.

Peer messages are routed with it: a message to user U goes to each node that
holds a connection of U (over the bus subject ``node.<id>``). The embedded
deployment keeps it in memory; the distributed one keeps it in Redis behind
the same interface.
"""

from __future__ import annotations

from typing import Protocol


class ConnectionRegistry(Protocol):
    async def add(self, user: str, node: str, cid: int) -> None: ...

    async def remove(self, user: str, node: str, cid: int) -> None: ...

    async def nodes(self, user: str) -> set[str]: ...


class MemoryConnectionRegistry:
    def __init__(self) -> None:
        self._by_user: dict[str, dict[str, set[int]]] = {}

    async def add(self, user: str, node: str, cid: int) -> None:
        self._by_user.setdefault(user, {}).setdefault(node, set()).add(cid)

    async def remove(self, user: str, node: str, cid: int) -> None:
        nodes = self._by_user.get(user)
        if nodes is None:
            return
        cids = nodes.get(node)
        if cids is not None:
            cids.discard(cid)
            if not cids:
                del nodes[node]
        if not nodes:
            del self._by_user[user]

    async def nodes(self, user: str) -> set[str]:
        return set(self._by_user.get(user, ()))
