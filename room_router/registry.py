"""The connection registry: which edge nodes hold a user's connections.

Peer messages are routed with it: a message to user U goes to each node that
holds a connection of U (over the bus subject ``node.<id>``). The embedded
deployment keeps it in memory; the distributed one keeps it in Redis behind
the same interface.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class ConnectionRegistry(Protocol):
    async def add(self, user: str, node: str, cid: int) -> None: ...

    async def remove(self, user: str, node: str, cid: int) -> None: ...

    async def nodes(self, user: str) -> set[str]: ...

    async def refresh(self, node: str, connections: Iterable[tuple[str, int]]) -> int:
        """Re-assert every (user, connection id) ``node`` holds: the node's
        heartbeat calls it, so a registry whose entries expire keeps the
        live ones (and one that lost its data has them back). Returns the
        number of users refreshed."""
        ...


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

    async def refresh(self, node: str, connections: Iterable[tuple[str, int]]) -> int:
        # Nothing expires in memory: re-adding is all there is to do.
        users: set[str] = set()
        for user, cid in connections:
            self._by_user.setdefault(user, {}).setdefault(node, set()).add(cid)
            users.add(user)
        return len(users)
