"""The one error hierarchy of liveroom, with its wire codes.

Every error that reaches a client (as an ``error`` frame or an HTTP answer)
is a ``LiveroomError``; its row in ``ERROR_SPECS`` says whose fault it was,
whether it is temporary, what the client should do, and the HTTP status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from wire.outgoing import error_frame


# --------------------------------------------------------------------------
# Errors. One hierarchy; every error has a wire code, says whose fault it is
# (client or server), whether it is temporary, and what the client should do
# (fix, retry, resync, renew_token, give_up).
# --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ErrorSpec:
    code: str
    fault: str  # "client" | "server"
    temporary: bool
    advice: str  # "fix" | "retry" | "resync" | "renew_token" | "give_up"
    http_status: int
    text: str


ERROR_SPECS: Final[Mapping[str, ErrorSpec]] = {
    s.code: s
    for s in (
        ErrorSpec("bad_frame", "client", False, "fix", 400,
                  "the frame is not valid msgpack/JSON or not a map"),
        ErrorSpec("unknown_type", "client", False, "fix", 400,
                  "the frame's type is not one the server accepts"),
        ErrorSpec("missing_field", "client", False, "fix", 400,
                  "a required field is missing"),
        ErrorSpec("invalid_field", "client", False, "fix", 400,
                  "a field has the wrong type or an invalid value"),
        ErrorSpec("frame_too_large", "client", False, "fix", 413,
                  "the frame is larger than the configured limit"),
        ErrorSpec("hello_required", "client", False, "fix", 400,
                  "the first frame on a connection must be hello"),
        ErrorSpec("already_authenticated", "client", False, "fix", 400,
                  "hello was sent twice on one connection"),
        ErrorSpec("unauthorized", "client", False, "renew_token", 401,
                  "the token is missing, forged, malformed or expired"),
        ErrorSpec("unsupported_version", "client", False, "give_up", 400,
                  "the protocol version is not supported"),
        ErrorSpec("forbidden", "client", False, "give_up", 403,
                  "the role of the user may not do this"),
        ErrorSpec("banned", "client", False, "give_up", 403,
                  "the user is banned from the room (until: when the ban ends, if it does)"),
        ErrorSpec("muted", "client", True, "retry", 403,
                  "the user is muted in the room; retry after retry_after seconds, if given"),
        ErrorSpec("rejected", "client", False, "give_up", 403,
                  "the platform's backend refused this (reason: its code, e.g. "
                  "insufficient_funds)"),
        ErrorSpec("not_joined", "client", False, "fix", 409,
                  "the connection is not a member of that room"),
        ErrorSpec("too_many_rooms", "client", False, "fix", 429,
                  "the connection has joined the maximum number of rooms"),
        ErrorSpec("too_many_connections", "client", False, "fix", 429,
                  "the user holds the maximum number of connections on this edge"),
        ErrorSpec("too_many_sections", "client", False, "fix", 409,
                  "the room has the maximum number of sections; write one it has"),
        ErrorSpec("too_many_sanctions", "client", False, "fix", 409,
                  "the room holds the maximum number of bans (or mutes); lift some first"),
        ErrorSpec("too_many_seats", "client", False, "fix", 409,
                  "the room seats the maximum number of characters, or every agents "
                  "process is full; unseat one first"),
        ErrorSpec("rate_limited", "client", True, "retry", 429,
                  "too many messages; retry after retry_after seconds"),
        # 429, not 507: the sender is asked to come back later, as for its
        # own rate; nothing is wrong with the server's storage.
        ErrorSpec("inbox_full", "client", True, "retry", 429,
                  "the addressee holds the most unacknowledged peer messages it may; "
                  "retry later"),
        ErrorSpec("version_conflict", "client", True, "resync", 409,
                  "the expected version is not the current one"),
        ErrorSpec("not_found", "client", False, "fix", 404,
                  "no such room, section or version"),
        ErrorSpec("unavailable", "server", True, "retry", 503,
                  "the server cannot serve this right now"),
        ErrorSpec("internal", "server", True, "retry", 500,
                  "the server failed; the request may be retried"),
        ErrorSpec("quota_exceeded", "client", True, "retry", 429,
                  "the token quota of the room or the user is used up for today"),
        ErrorSpec("model_unavailable", "server", True, "retry", 503,
                  "the character's model backend failed or its circuit breaker is open"),
        ErrorSpec("model_busy", "server", True, "retry", 503,
                  "the model gateway refused the call: its queue is full or the call waited "
                  "past the queue-time limit (reason: queue_full | queue_timeout)"),
    )
}


class LiveroomError(Exception):
    """Base of every error that reaches a client. ``code`` is a key of
    ERROR_SPECS; ``ref`` echoes the client's ``ref`` of the offending frame;
    ``extra`` carries structured fields (``retry_after``, ``current``...)."""

    code: str = "internal"

    def __init__(self, message: str = "", *, ref: Any = None,
                 http_headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        self.message = message or ERROR_SPECS[self.code].text
        self.ref = ref
        self.extra = extra
        # Headers for an HTTP answer (e.g. Cache-Control on a 404); not on the wire.
        self.http_headers = dict(http_headers or {})
        super().__init__(f"{self.code}: {self.message}")

    @property
    def spec(self) -> ErrorSpec:
        return ERROR_SPECS[self.code]

    def to_frame(self) -> dict[str, Any]:
        return error_frame(self.code, self.message, self.spec.advice, self.ref, self.extra)

    def to_http(self) -> dict[str, Any]:
        body = self.to_frame()
        del body["type"]
        return body


class ClientError(LiveroomError):
    """The client sent something wrong; resending it unchanged will fail."""


class BadFrame(ClientError):
    code = "bad_frame"


class UnknownType(ClientError):
    code = "unknown_type"


class MissingField(ClientError):
    code = "missing_field"


class InvalidField(ClientError):
    code = "invalid_field"


class FrameTooLarge(ClientError):
    code = "frame_too_large"


class HelloRequired(ClientError):
    code = "hello_required"


class AlreadyAuthenticated(ClientError):
    code = "already_authenticated"


class Unauthorized(ClientError):
    code = "unauthorized"


class UnsupportedVersion(ClientError):
    code = "unsupported_version"


class Forbidden(ClientError):
    code = "forbidden"


class Banned(ClientError):
    """A join of a room the user is banned from (``room``, ``until``: epoch
    seconds, absent when the ban does not end, ``reason``)."""

    code = "banned"


class Muted(ClientError):
    """An action in a room the user is muted in (``room``, ``retry_after``
    when the mute ends, ``reason``)."""

    code = "muted"


class Rejected(ClientError):
    """The platform's backend refused an action, a connection or a join
    (docs/BACKEND.md): ``reason`` is the backend's own code, the message
    its message."""

    code = "rejected"


class NotJoined(ClientError):
    code = "not_joined"


class TooManyRooms(ClientError):
    code = "too_many_rooms"


class TooManyConnections(ClientError):
    code = "too_many_connections"


class TooManySections(ClientError):
    """A write would give the room one section more than ``limit``."""

    code = "too_many_sections"


class TooManySanctions(ClientError):
    """A ban or mute past the room's bound of entries of that kind
    (``room``, ``limit``); nothing was stored."""

    code = "too_many_sanctions"


class TooManySeats(ClientError):
    """A character seat past the room's bound or the agents processes'
    capacity (``limit``, ``scope``: room or cluster); nothing was stored."""

    code = "too_many_seats"


class RateLimited(ClientError):
    code = "rate_limited"


class InboxFull(ClientError):
    """A peer message the addressee's inbox has no room for (its cap of
    unacknowledged messages or bytes); nothing was stored."""

    code = "inbox_full"


class VersionConflict(ClientError):
    code = "version_conflict"


class NotFound(ClientError):
    code = "not_found"


class ServerError(LiveroomError):
    """The server failed or is overloaded; the client may retry later."""


class Unavailable(ServerError):
    code = "unavailable"


class InternalError(ServerError):
    code = "internal"


class QuotaExceeded(ClientError):
    """A character's token quota (per room or per user, per day) is used up;
    ``scope`` says which (``room`` | ``user``), ``retry_after`` when it resets."""

    code = "quota_exceeded"


class ModelUnavailable(ServerError):
    """A model backend failed (timeout, connection, bad stream) or its circuit
    breaker is open: the character goes quiet, the room does not."""

    code = "model_unavailable"


class ModelBusy(ServerError):
    """The model gateway refused a call (``reason``: ``queue_full`` or
    ``queue_timeout``): a reply that would come too late is not started."""

    code = "model_busy"
