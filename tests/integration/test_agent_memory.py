"""The characters' memory on real stores and real processes.

- the stores (SQLite file, Redis standalone and Cluster): a record round
  trip, the bound on viewers per room (the least recently seen forgotten),
  the retention (SQLite purges by age, Redis expires);
- the service: a record that grows past its threshold is summarised through
  the character's (scripted) backend, deterministically, and stays bounded;
- acceptance (#16): ``liveroom serve`` with the ``openai`` backend in front
  of a real model server (tests/llm_server.py, its requests recorded by
  tests/llm_recorder.py): a viewer tells Quinn something, the server is
  stopped and started again on the same data directory, and the prompt the
  model server receives for that viewer's next mention holds what was said
  before; another viewer's prompt holds the room's notes, not hers.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from llm_agents.backends.base import ReplyRequest, Usage
from llm_agents.backends.scripted import ScriptedBackend
from llm_agents.character import SHIPPED_DIR, load_characters
from llm_agents.memory import SUMMARY_PREFIX, MemoryLimits, MemoryStore, Notes
from llm_agents.memory_redis import RedisMemoryStore
from llm_agents.memory_service import AgentMemory
from llm_agents.memory_sqlite import SqliteMemoryStore
from llm_agents.policy import MENTION, Trigger
from tests.llm_recorder import RecordingProxy
from tests.llm_server import MODEL_ALIAS
from tests.support import LiveServer, next_reply, until

pytestmark = pytest.mark.timeout(240)
REPLY_TIMEOUT = 60.0


def record(user: str, updated: float, room: str = "r") -> Notes:
    return Notes(room, "quinn", user, "sum", (f"{user}: hi",), 0, updated)


async def check_store(store: MemoryStore, room: str) -> None:
    await store.open()
    assert await store.load(room, "quinn", "") is None
    await store.save(Notes(room, "quinn", "", "", ("Quinn: hello room",), 3, 5.0), 2)
    for i, user in enumerate(["ann", "bob", "cy"]):
        await store.save(record(user, 10.0 + i, room), 2)
    # Two viewers per room: ann, the least recently seen, is forgotten; the
    # room's own notes do not count as a viewer.
    assert await store.load(room, "quinn", "ann") is None
    assert await store.load(room, "quinn", "bob") == record("bob", 11.0, room)
    assert await store.load(room, "quinn", "cy") == record("cy", 12.0, room)
    assert (await store.load(room, "quinn", "") or pytest.fail("room")).base == 3
    # Another character's notes in the same room are its own.
    assert await store.load(room, "other", "bob") is None
    # bob seen again: now cy is the oldest.
    await store.save(record("bob", 20.0, room), 2)
    await store.save(record("dan", 21.0, room), 2)
    assert await store.load(room, "quinn", "cy") is None
    assert await store.load(room, "quinn", "bob") is not None


async def test_sqlite_store_bounds_and_retention(tmp_path: Path) -> None:
    path = tmp_path / "memory.sqlite3"
    store = SqliteMemoryStore(path)
    try:
        await check_store(store, "r")
        # Left: the room's notes (updated 5.0), bob (20.0), dan (21.0).
        assert await store.purge(20.5) == 2
        assert await store.load("r", "quinn", "") is None
        assert await store.load("r", "quinn", "bob") is None
        assert await store.load("r", "quinn", "dan") is not None
    finally:
        await store.close()
    # On disk: a new store on the same file reads it back.
    again = SqliteMemoryStore(path)
    try:
        await again.open()
        assert await again.load("r", "quinn", "dan") == record("dan", 21.0, "r")
    finally:
        await again.close()


async def test_redis_store_bounds_and_expiry(redis_client: object) -> None:
    room = f"mem-{uuid.uuid4().hex[:8]}"
    await check_store(RedisMemoryStore(redis_client, 3600.0), room)
    r = redis_client
    ttl = await r.ttl(f"memory:{{{room}:quinn}}:n:bob")  # type: ignore[attr-defined]
    assert 3500 < ttl <= 3600
    # A retention of 0 keeps records forever; the users index is pruned by age.
    forever = RedisMemoryStore(redis_client, 0.0)
    await forever.save(record("eve", 30.0, room), 10)
    assert await r.ttl(f"memory:{{{room}:quinn}}:n:eve") == -1  # type: ignore[attr-defined]
    assert await forever.purge(20.5) >= 1  # bob's index entry (20.0)
    members = await r.zrange(f"memory:{{{room}:quinn}}:users", 0, -1)  # type: ignore
    assert sorted(m.decode() for m in members) == ["dan", "eve"]


async def test_a_growing_record_is_summarised_by_the_scripted_backend(
        tmp_path: Path) -> None:
    quinn = load_characters([SHIPPED_DIR])["quinn"]
    backend = ScriptedBackend(word_delay=0)
    asked: list[ReplyRequest] = []

    async def summarise(trigger: Trigger, messages: list[dict[str, str]]) -> str:
        request = ReplyRequest(quinn, trigger, messages, 120)
        asked.append(request)
        return "".join([x async for x in backend.stream(request) if not isinstance(x, Usage)])

    # A summary from 3 lines on, keeping the newest 2.
    limits = MemoryLimits.from_bounds(max_entries=4, max_bytes=2048)
    store = SqliteMemoryStore(tmp_path / "memory.sqlite3")
    await store.open()
    memory = AgentMemory(store, limits, clock=lambda: 100.0)
    try:
        said = Trigger(MENTION, 0.0, "alice", "Alice", "my cat is Biscuit")
        await memory.remember("demo", quinn, said, "What a name!", summarise)
        await memory.idle()
        assert not asked  # two lines: under the threshold
        await memory.remember("demo", quinn, Trigger(MENTION, 0.0, "alice", "Alice",
                                                     "I like quizzes"), "Me too!", summarise)
        await memory.idle()
        # Four lines: the room's notes and alice's each asked for one summary.
        assert len(asked) == 2 and memory.summaries == 2
        assert {r.trigger.kind for r in asked} == {"summary"}
        notes = await store.load("demo", "quinn", "alice")
        assert notes is not None
        assert notes.summary == (SUMMARY_PREFIX + "Alice: my cat is Biscuit / "
                                 f"{quinn.display_name}: What a name!")
        assert notes.entries == ("Alice: I like quizzes", f"{quinn.display_name}: Me too!")
        assert notes.base == 2
        recall = await memory.recall("demo", quinn.name, "alice", "Alice")
        assert recall.user == notes and recall.room is not None
        # bob's prompt gets the room's notes and none of alice's.
        assert (await memory.recall("demo", quinn.name, "bob", "Bob")).user is None
    finally:
        await memory.close()
        await store.close()


async def test_a_failed_summary_keeps_the_hard_bound(tmp_path: Path) -> None:
    quinn = load_characters([SHIPPED_DIR])["quinn"]

    async def down(trigger: Trigger, messages: list[dict[str, str]]) -> str:
        return ""  # what RoomAgent._summarise answers when the model failed

    limits = MemoryLimits.from_bounds(max_entries=4, max_bytes=2048)
    store = SqliteMemoryStore(tmp_path / "memory.sqlite3")
    await store.open()
    memory = AgentMemory(store, limits)
    try:
        for i in range(10):
            await memory.remember("demo", quinn, Trigger(MENTION, 0.0, "alice", "Alice",
                                                         f"line {i}"), f"reply {i}", down)
            await memory.idle()
        notes = await store.load("demo", "quinn", "alice")
        assert notes is not None and notes.summary == "" and len(notes.entries) == 4
        assert notes.entries[-1].endswith("reply 9") and notes.base == 16
    finally:
        await memory.close()
        await store.close()


async def test_a_seated_character_summarises_through_its_backend(
        tmp_path: Path, connect: object) -> None:
    """``liveroom serve`` with the scripted backend and records of 2 lines:
    every reply asks the character's backend for a summary (RoomAgent's own
    path: quota, backend, fold), and the notes on disk hold it."""
    srv = LiveServer(tmp_path, "--agent-characters", "quinn", "--agent-cooldown", "0.1",
                     "--agent-word-delay", "0", "--agent-memory-entries", "2").start()
    try:
        client = await connect(srv, "carol")  # type: ignore[operator]
        await client.join("demo")

        def notes() -> Notes | None:
            with sqlite3.connect(tmp_path / "memory.sqlite3") as c:
                row = c.execute("SELECT data FROM agent_memory WHERE user = 'carol'").fetchone()
            return None if row is None else Notes.from_json("demo", "quinn", "carol", row[0])

        for text in ("quinn, I am carol", "quinn, I love trivia"):
            await client.action("demo", "comment", {"text": text})
            await next_reply(client, "quinn")
            # Each reply's two lines reach the threshold: a summary folds them.
            await until(lambda t=text: (n := notes()) is not None and t in n.summary, 10.0,
                        f"{text!r} summarised")
        done = notes()
        assert done is not None and done.summary.startswith(SUMMARY_PREFIX)
        assert "quinn, I am carol" in done.summary and len(done.entries) <= 2
    finally:
        srv.stop()


# -- acceptance: memory survives a restart and is in the prompt ------------


def serve(data_dir: Path, proxy: RecordingProxy) -> LiveServer:
    return LiveServer(data_dir, "--agent-backend", "openai", "--openai-base-url",
                      proxy.base_url, "--openai-model", MODEL_ALIAS, "--agent-characters",
                      "quinn", "--agent-cooldown", "0.2", "--openai-idle-timeout", "30",
                      "--agent-stale-after", "120").start()


async def mention(connect: object, srv: LiveServer, user: str, text: str) -> str:
    client = await connect(srv, user)  # type: ignore[operator]
    await client.join("demo")
    await client.action("demo", "comment", {"text": text})
    _, say = await next_reply(client, "quinn", timeout=REPLY_TIMEOUT)
    assert "error" not in say["body"], say["body"]
    await client.close()
    return str(say["body"]["text"])


def prompt_with(proxy: RecordingProxy, text: str) -> str:
    # Distinct prompts: an acting character's first call may be asked twice,
    # the same prompt (llm_agents/acting.py: the json_schema form refused).
    found = list(dict.fromkeys(p for p in proxy.prompts() if text in p))
    assert len(found) == 1, proxy.prompts()
    return found[0]


async def test_memory_survives_a_restart_and_is_in_the_prompt(
        tmp_path: Path, proxy: RecordingProxy, connect: object) -> None:
    srv = serve(tmp_path, proxy)
    try:
        first = await mention(connect, srv, "alice", "quinn, my cat is called Biscuit")
        first_prompt = prompt_with(proxy, "my cat is called Biscuit")
        assert "What you remember about" not in first_prompt  # nothing yet
        # The reply is stored after it reached the room: wait for the file.
        db = tmp_path / "memory.sqlite3"

        def stored() -> bool:
            with sqlite3.connect(db) as c:
                row = c.execute("SELECT data FROM agent_memory WHERE user = 'alice'").fetchone()
            return row is not None and "Biscuit" in row[0]

        await until(stored, 10.0, "alice's notes on disk")
    finally:
        assert srv.stop() == 0
    proxy.requests.clear()
    srv = serve(tmp_path, proxy)
    try:
        await mention(connect, srv, "alice", "quinn, do you remember my cat?")
        prompt = prompt_with(proxy, "do you remember my cat?")
        mine = prompt[prompt.index("What you remember about alice"):]
        assert "alice: quinn, my cat is called Biscuit" in mine
        assert " ".join(first.split())[:40] in mine  # what Quinn answered, too
        await mention(connect, srv, "bob", "quinn, who are you?")
        bobs = prompt_with(proxy, "who are you?")
        assert "What you remember about bob" not in bobs
        # The room's notes are everyone's: bob's prompt has what was said there.
        assert "What you remember of this room" in bobs and "Biscuit" in bobs
    finally:
        srv.stop()
