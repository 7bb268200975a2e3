"""The peer inbox cursor: each peer message reaches the application once,
across reconnects and the overlap of two connections.

The server shows one connection a user's messages in ``seq`` order with no
gap and replays, after every ``welcome``, what lies above the ``hello``'s
``inbox_cursor`` (PROTOCOL.md, "The peer inbox"). So a client that hands
over each message whose ``seq`` is above its cursor, then moves the cursor
to it, hands over each message exactly once, whichever connection it came
on. Pure: the client holds a lock around ``fresh`` -> handler -> ``done``.
"""

from __future__ import annotations

from typing import Any


class PeerCursor:
    def __init__(self, cursor: int = 0) -> None:
        self.cursor = cursor  # the highest seq handed to the application

    def fresh(self, frame: dict[str, Any]) -> bool:
        """Whether ``frame`` (a ``peer``) is new to the application."""
        seq = frame.get("seq")
        return isinstance(seq, int) and seq > self.cursor

    def done(self, frame: dict[str, Any]) -> None:
        self.cursor = max(self.cursor, int(frame["seq"]))



def ack_upto(cursor: int, shown: int, acked: int) -> int | None:
    """The ``upto`` of the ``peer_ack`` a connection should send now, or None.
    The server clamps an acknowledgement to what it showed that connection,
    so a connection acknowledges at most ``shown`` (the highest seq it was
    shown, handed over or skipped as already handed over); and only what the
    application has processed (``cursor``)."""
    upto = min(cursor, shown)
    return upto if upto > acked else None
