"""Close codes: why a connection ended, and whether the client should reconnect."""

from __future__ import annotations

import enum


# --------------------------------------------------------------------------
# Close codes. The range tells the client what to do:
#   1000-1999  standard WebSocket codes (1000 normal, 1001 going away: reconnect,
#              1009 frame over the hard size cap: do not resend that frame,
#              1011 internal error: reconnect)
#   4000-4099  do not reconnect: the same request will fail the same way
#   4100-4199  reconnect after a backoff (with jitter); state resyncs by versions
#   4200-4299  get a new token, then reconnect
# --------------------------------------------------------------------------
class CloseCode(enum.IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    # The server failed this connection's transport (its write raised): reconnect.
    INTERNAL_ERROR = 1011
    AUTH_FAILED = 4001
    UNSUPPORTED_VERSION = 4003
    # The user already holds --max-conns-per-user connections on this edge.
    TOO_MANY_CONNECTIONS = 4004
    # The backend disconnected the user (POST /v1/users/{user}/disconnect,
    # docs/MODERATION.md): do not reconnect on your own.
    DISCONNECTED = 4005
    # The platform's backend refused the connection (the connect proxy,
    # docs/BACKEND.md): the same token is refused the same way.
    CONNECT_REFUSED = 4010
    SLOW_CONSUMER = 4100
    SERVER_SHUTDOWN = 4101
    HELLO_TIMEOUT = 4102
    # The connect proxy could not get an answer from the backend (down, slow,
    # its breaker open): reconnect after a backoff.
    BACKEND_UNAVAILABLE = 4110
    TOKEN_EXPIRED = 4200


def close_advice(code: int) -> str:
    """What a client should do after a close with ``code``."""
    if 4000 <= code < 4100:
        return "give_up"
    if 4100 <= code < 4200 or code == CloseCode.GOING_AWAY:
        return "reconnect"
    if 4200 <= code < 4300:
        return "renew_token"
    return "give_up" if code == CloseCode.NORMAL else "reconnect"
