"""The two timers of one client session, for every transport adapter.

- **hello timeout**: a connection that has not authenticated within
  ``hello_timeout`` seconds is closed with HELLO_TIMEOUT (4102);
- **token expiry**: once authenticated, the connection is closed with
  TOKEN_EXPIRED (4200: get a new token, reconnect) when its token expires.

Loop timers (``call_later``), not a task per connection. The adapter calls
``after_frame`` after handing each client frame to the node and ``cancel``
when the session ends.
"""

from __future__ import annotations

import asyncio
import time

from edge.fanout import Conn
from edge.node import EdgeNode
from edge.session import Phase, Session
from wire.close_codes import CloseCode


class SessionTimers:
    __slots__ = ("_conn", "_expiry", "_hello", "_loop", "_node", "_session")

    def __init__(self, node: EdgeNode, conn: Conn, session: Session,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._node = node
        self._conn = conn
        self._session = session
        self._loop = loop
        self._hello: asyncio.TimerHandle | None = loop.call_later(
            node.config.hello_timeout, self._hello_timeout)
        self._expiry: asyncio.TimerHandle | None = None

    def _hello_timeout(self) -> None:
        if self._session.phase is Phase.AWAITING_HELLO:
            self._node.close_connection(self._conn, CloseCode.HELLO_TIMEOUT, "no hello in time")

    def after_frame(self) -> None:
        """The first time the session is authenticated: the hello timer goes,
        the expiry timer comes."""
        identity = self._session.identity
        if self._expiry is None and identity is not None:
            if self._hello is not None:
                self._hello.cancel()
                self._hello = None
            self._expiry = self._loop.call_later(
                max(0.0, identity.exp - time.time()), self._node.close_connection,
                self._conn, CloseCode.TOKEN_EXPIRED, "token expired")

    def cancel(self) -> None:
        for handle in (self._hello, self._expiry):
            if handle is not None:
                handle.cancel()
        self._hello = self._expiry = None
