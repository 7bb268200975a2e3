"""The node hands its parts the stores and limiters it was given, shared by
every connection: an empty store or limiter is falsy (it has a length), and
``x or Default()`` once replaced it, so each session made a slow-mode
limiter of its own (~200 bytes more per connection) and the node kept a
history and presence store apart from the services'."""

from __future__ import annotations

from edge.config import EdgeConfig
from edge.metrics import Metrics
from edge.node import EdgeNode
from room_router.bus import MemoryBus
from room_router.history import MemoryHistoryStore
from room_router.inbox import SqliteInbox
from room_router.presence import MemoryPresenceStore
from room_router.registry import MemoryConnectionRegistry
from state_versions.store import MemoryStateStore


class _Sink:
    def write(self, data: bytes) -> None: ...

    def buffered(self) -> int:
        return 0

    def close(self, code: int, reason: str) -> None: ...


def test_sessions_share_the_nodes_limiters_and_the_node_the_services_stores(tmp_path) -> None:
    history, presence = MemoryHistoryStore(), MemoryPresenceStore()
    assert not history and not presence  # empty: falsy, the trap
    node = EdgeNode(node_id="n", config=EdgeConfig(), jwt_secret="s" * 32,
                    store=MemoryStateStore(), bus=MemoryBus(),
                    registry=MemoryConnectionRegistry(), inbox=SqliteInbox(tmp_path / "i"),
                    metrics=Metrics(), history=history, presence_store=presence)
    assert node.history.store is history
    assert node.presence.store is presence
    (_, a), (_, b) = node.open(_Sink()), node.open(_Sink())
    assert a._slow_limiter is b._slow_limiter is node._slow_limiter
    assert a._policies is b._policies is node.policies
