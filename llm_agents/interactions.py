"""Direct interactions: for clients that are not in the room.

    POST /v1/rooms/{room}/agents/{name}/interactions   {"text": "..."}
        -> 202 {"id", "status": "running", "events": "/v1/interactions/<id>/events"}
    GET  /v1/interactions/{id}           -> the interaction (status, text, error, usage)
    GET  /v1/interactions/{id}/events    -> Server-Sent Events: "delta" events with
         the text as it streams, then one "done" event; ``Last-Event-ID`` resumes.
    GET  /v1/rooms/{room}/agents         -> the room's characters (backend, breaker)
         and today's token usage of the room and of the caller.

Authentication: ``Authorization: Bearer <user token>`` (the same JWT as the
WebSocket hello); the token's user is charged in the quota, and only that
user reads the interaction (another user gets 404). Over quota the POST is
answered ``429 quota_exceeded`` before anything runs.

Durable: every interaction and every event is written to SQLite (one worker
thread, as the peer inbox) before listeners are told, so a client that
reconnects (or asks after a restart) gets the whole stream from the store.
PostgreSQL implements the same ``InteractionStore`` in the distributed
deployment (``llm_agents.interactions_postgres``, ``liveroom agents
--postgres``): there any agents process answers for any interaction, and a
stream run by another process is read by polling the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from edge.auth import Identity
from llm_agents.backends.base import Usage
from llm_agents.policy import INTERACTION, Trigger
from llm_agents.prompt import build_messages, estimate_tokens
from llm_agents.runtime import AgentRuntime, RoomAgent
from storage.sqlite_thread import SqliteThread
from wire.decode import DEFAULT_MAX_VALUE_BYTES, decode_json_body
from wire.errors import InvalidField, NotFound, QuotaExceeded, Unauthorized

log = logging.getLogger("liveroom.agents.interactions")
MAX_TEXT = 1000
# SSE: a comment line after this many idle seconds keeps proxies from closing
# the stream; an interaction another process runs is polled every POLL_S.
KEEPALIVE_S = 15.0
POLL_S = 0.25
# How often finished interactions past their retention are purged.
PURGE_EVERY_S = 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS interactions (
    id TEXT PRIMARY KEY,
    room TEXT NOT NULL,
    agent TEXT NOT NULL,
    user TEXT NOT NULL,
    text TEXT NOT NULL,
    status TEXT NOT NULL,
    reply TEXT NOT NULL DEFAULT '',
    error TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    created REAL NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS interaction_events (
    interaction TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (interaction, seq)
);
"""

_COLUMNS = ("id", "room", "agent", "user", "text", "status", "reply", "error",
            "prompt_tokens", "completion_tokens", "created", "finished")


class InteractionStore(Protocol):
    async def open(self) -> None: ...

    async def create(self, row: dict[str, Any]) -> None: ...

    async def add_event(self, interaction: str, seq: int, event: str, data: str) -> None: ...

    async def finish(self, interaction: str, status: str, reply: str, error: str | None,
                     prompt_tokens: int | None, completion_tokens: int | None,
                     finished: float) -> None: ...

    async def get(self, interaction: str) -> dict[str, Any] | None: ...

    async def events_after(self, interaction: str,
                           seq: int) -> list[tuple[int, str, str]]: ...

    async def purge(self, finished_before: float) -> int:
        """Forget the interactions (and their events) that finished before
        ``finished_before``; never a running one. Returns how many."""
        ...

    async def close(self) -> None: ...


class SqliteInteractionStore:
    def __init__(self, path: Path) -> None:
        # NORMAL, not FULL: an interaction writes an event per streamed delta,
        # and an fsync each would cost more than the stream itself; what the
        # machine loses in a power cut is the tail of a stream that the next
        # start marks failed ("interrupted") anyway. Nothing here was
        # acknowledged to another user as stored (unlike the peer inbox).
        self._sql = SqliteThread(path, "interaction store", _SCHEMA, on_open=_fail_interrupted,
                                 synchronous="NORMAL")

    async def open(self) -> None:
        await self._sql.open()

    async def create(self, row: dict[str, Any]) -> None:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        await self._sql.run(lambda: self._sql.conn().execute(
            f"INSERT INTO interactions ({cols}) VALUES ({marks})", tuple(row.values())))

    async def add_event(self, interaction: str, seq: int, event: str, data: str) -> None:
        await self._sql.run(lambda: self._sql.conn().execute(
            "INSERT INTO interaction_events (interaction, seq, event, data) VALUES (?, ?, ?, ?)",
            (interaction, seq, event, data)))

    async def finish(self, interaction: str, status: str, reply: str, error: str | None,
                     prompt_tokens: int | None, completion_tokens: int | None,
                     finished: float) -> None:
        await self._sql.run(lambda: self._sql.conn().execute(
            "UPDATE interactions SET status = ?, reply = ?, error = ?, prompt_tokens = ?,"
            " completion_tokens = ?, finished = ? WHERE id = ?",
            (status, reply, error, prompt_tokens, completion_tokens, finished, interaction)))

    async def get(self, interaction: str) -> dict[str, Any] | None:
        row = await self._sql.run(lambda: self._sql.conn().execute(
            f"SELECT {', '.join(_COLUMNS)} FROM interactions WHERE id = ?",
            (interaction,)).fetchone())
        return None if row is None else dict(zip(_COLUMNS, row, strict=True))

    async def events_after(self, interaction: str, seq: int) -> list[tuple[int, str, str]]:
        rows = await self._sql.run(lambda: self._sql.conn().execute(
            "SELECT seq, event, data FROM interaction_events WHERE interaction = ? AND seq > ?"
            " ORDER BY seq", (interaction, seq)).fetchall())
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    async def purge(self, finished_before: float) -> int:
        def purge() -> int:
            db = self._sql.conn()
            db.execute("BEGIN")
            try:
                db.execute("DELETE FROM interaction_events WHERE interaction IN (SELECT id FROM"
                           " interactions WHERE status != 'running' AND finished < ?)",
                           (finished_before,))
                n = db.execute("DELETE FROM interactions WHERE status != 'running'"
                               " AND finished < ?", (finished_before,)).rowcount
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return int(n)
        return await self._sql.run(purge)

    async def close(self) -> None:
        await self._sql.close()


def _fail_interrupted(db: sqlite3.Connection) -> None:
    """Interactions that were running when the process stopped will never
    finish: say so instead of leaving them "running"."""
    db.execute("UPDATE interactions SET status = 'failed', error = 'interrupted'"
               " WHERE status = 'running'")


class Interactions:
    """Runs interactions and tells SSE listeners when events were stored."""

    def __init__(self, runtime: AgentRuntime, store: InteractionStore,
                 verify: Callable[[object, float], Identity],
                 clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self.store = store
        self._verify = verify
        self._clock = clock
        # Interaction id -> one Event per waiting SSE listener, set when the
        # interaction changes; a listener removes its own when it leaves.
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._retention: asyncio.Task[None] | None = None
        # The interactions this process runs (the others are another's).
        self._running: set[str] = set()

    def _identity(self, request: web.Request) -> Identity:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise Unauthorized("Authorization: Bearer <token> is required")
        return self._verify(header[7:], self._clock())

    def _notify(self, interaction: str) -> None:
        for ev in self._waiters.get(interaction, ()):
            ev.set()

    async def create(self, room: str, name: str, ident: Identity, text: str) -> dict[str, Any]:
        agent = self.runtime.get(room, name)
        if agent is None:
            raise NotFound(f"no agent {name!r} in room {room!r}", field="agent")
        iid = uuid.uuid4().hex
        now = self._clock()
        trigger = Trigger(INTERACTION, now, ident.user, ident.name, text, {"interaction": iid})
        estimate = estimate_tokens(build_messages(agent.character, agent.window, trigger),
                                   agent.character.max_reply_tokens)
        # Raises QuotaExceeded (429) before anything is stored or run.
        reservation = await agent.quota.reserve(room, ident.user, estimate, now)
        await self.store.create({"id": iid, "room": room, "agent": name, "user": ident.user,
                                 "text": text, "status": "running", "created": now})
        task = asyncio.create_task(self._run(agent, iid, ident, text, reservation))
        self._tasks.add(task)
        self._running.add(iid)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._running.discard(iid))
        return {"id": iid, "status": "running", "room": room, "agent": name,
                "events": f"/v1/interactions/{iid}/events"}

    async def _run(self, agent: RoomAgent, iid: str, ident: Identity, text: str,
                   reservation: Any) -> None:
        seq = 0
        # Events are stored in order by one writer: emit() is called from the
        # generation (synchronously), the writes happen here.
        queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()

        async def writer() -> None:
            nonlocal seq
            while (item := await queue.get()) is not None:
                seq += 1
                await self.store.add_event(iid, seq, item[0], item[1])
                self._notify(iid)

        w = asyncio.create_task(writer())
        status, reply = "failed", ""
        error: str | None = "internal"
        usage: Usage | None = None
        try:
            outcome = await agent.interact(
                iid, ident.user, ident.name, text, reservation,
                lambda chunk: queue.put_nowait(("delta", json.dumps({"text": chunk}))))
            reply, error, usage = outcome.text, outcome.error, outcome.usage
            status = "failed" if error else "done"
        except Exception:
            log.exception("interaction %s failed", iid)
        finally:
            done: dict[str, Any] = {"status": status, "text": reply}
            if error:
                done["error"] = error
            if usage is not None:
                done["usage"] = {"prompt_tokens": usage.prompt_tokens,
                                 "completion_tokens": usage.completion_tokens,
                                 "reported": usage.reported}
            queue.put_nowait(("done", json.dumps(done)))
            queue.put_nowait(None)
            await w
            await self.store.finish(iid, status, reply, error,
                                    usage.prompt_tokens if usage else None,
                                    usage.completion_tokens if usage else None, self._clock())
            self._notify(iid)

    async def _owned(self, request: web.Request) -> dict[str, Any]:
        ident = self._identity(request)
        row = await self.store.get(request.match_info["id"])
        if row is None or row["user"] != ident.user:
            raise NotFound("no such interaction")
        return row

    # -- HTTP ------------------------------------------------------------
    async def post(self, request: web.Request) -> web.Response:
        ident = self._identity(request)
        room, name = request.match_info["room"], request.match_info["name"]
        # A JSON object whose fields obey the value rule, as the edge's API.
        body = decode_json_body(await request.read(), DEFAULT_MAX_VALUE_BYTES)
        text = body.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
            raise InvalidField(f"text must be a string of 1..{MAX_TEXT} chars", field="text")
        try:
            out = await self.create(room, name, ident, text)
        except QuotaExceeded as err:
            retry = err.extra.get("retry_after")
            if retry is not None:
                err.http_headers["Retry-After"] = str(retry)
            raise
        return web.json_response(out, status=202)

    async def get(self, request: web.Request) -> web.Response:
        return web.json_response(await self._owned(request))

    async def events(self, request: web.Request) -> web.StreamResponse:
        row = await self._owned(request)
        iid = row["id"]
        try:
            # Any integer a client sends is harmless: clamped to the seqs a
            # stream can have (a 32-bit count of events).
            after = max(0, min(int(request.headers.get("Last-Event-ID", "0")), 2**31 - 1))
        except ValueError:
            after = 0
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        changed = asyncio.Event()
        idle = 0.0
        waiters = self._waiters.setdefault(iid, set())
        waiters.add(changed)
        try:
            while True:
                # Cleared before reading, so a change between the read and
                # the wait is not missed.
                changed.clear()
                events = await self.store.events_after(iid, after)
                for seq, event, data in events:
                    after = seq
                    await resp.write(f"id: {seq}\nevent: {event}\ndata: {data}\n\n".encode())
                    if event == "done":
                        await resp.write_eof()
                        return resp
                if not events:
                    # Resumed past the end (Last-Event-ID at or after "done"),
                    # or interrupted by a restart: nothing more will come.
                    now = await self.store.get(iid)
                    if now is None or now["status"] != "running":
                        await resp.write_eof()
                        return resp
                else:
                    idle = 0.0
                # Run here: woken when the writer stored an event. Run by
                # another process sharing the store: polled.
                wait = KEEPALIVE_S if iid in self._running else POLL_S
                try:
                    await asyncio.wait_for(changed.wait(), wait)
                except TimeoutError:
                    idle += wait
                    if idle >= KEEPALIVE_S:
                        idle = 0.0
                        await resp.write(b": keep-alive\n\n")
        finally:
            waiters.discard(changed)
            if not waiters:
                self._waiters.pop(iid, None)

    async def list_agents(self, request: web.Request) -> web.Response:
        """The room's characters, their breaker, and today's token usage of
        the room and of the caller."""
        ident = self._identity(request)
        room = request.match_info["room"]
        agents = [a for (r, _), a in self.runtime.agents.items() if r == room]
        out: dict[str, Any] = {"room": room, "agents": []}
        for a in agents:
            breaker = getattr(a.backend, "breaker", None)
            out["agents"].append({
                "name": a.character.name, "display_name": a.character.display_name,
                "backend": a.backend.label, "replies": a.replies,
                "breaker": breaker.state if breaker is not None else None})
        if agents:
            room_used, user_used = await agents[0].quota.used(room, ident.user, self._clock())
            out["quota"] = {"room_used": room_used, "user_used": user_used}
        return web.json_response(out)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/rooms/{room}/agents", self.list_agents)
        app.router.add_post("/v1/rooms/{room}/agents/{name}/interactions", self.post)
        app.router.add_get("/v1/interactions/{id}", self.get)
        app.router.add_get("/v1/interactions/{id}/events", self.events)

    def keep_for(self, seconds: float, every: float = PURGE_EVERY_S) -> None:
        """Purge the interactions finished more than ``seconds`` ago, now
        and every ``every`` seconds (0: keep them all)."""
        if seconds > 0 and self._retention is None:
            self._retention = asyncio.create_task(self._purge_loop(seconds, every))

    async def _purge_loop(self, seconds: float, every: float) -> None:
        while True:
            try:
                n = await self.store.purge(self._clock() - seconds)
                if n:
                    log.info("purged %d interactions finished over %.0f s ago", n, seconds)
            except Exception:  # a database outage: try again next time
                log.warning("purging old interactions failed", exc_info=True)
            await asyncio.sleep(every)

    async def close(self) -> None:
        if self._retention is not None:
            self._retention.cancel()
            await asyncio.gather(self._retention, return_exceptions=True)
            self._retention = None
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

