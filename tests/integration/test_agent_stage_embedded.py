"""Acting on the stage with the embedded model (docs/AGENTS.md, "Acting on
the stage"): SmolLM2 through llama-cpp-python, its output constrained by the
grammar llama.cpp compiles from Quinn's reply schema (``reply_schema``), so
even a 135M model answers a schema-valid ``{"stage": ..., "say": ...}``.
The backend alone gives words and exactly one stage part that validates; in
a real ``liveroom serve --agent-backend embedded`` a gift gets a reply whose
stage part lands in ``stage.quinn`` (seen by a client and over HTTP). The
same through a model server is in test_agent_stage_llama.py."""

from __future__ import annotations

import json

import pytest

from llm_agents.acting import StageChange, reply_schema, validate_stage
from llm_agents.backends.base import ReplyRequest, Usage
from llm_agents.backends.embedded import EmbeddedBackend, find_smollm2
from llm_agents.character import SHIPPED_DIR, load_characters
from llm_agents.policy import GIFT, Trigger
from llm_agents.prompt import ContextWindow, build_messages
from tests.integration.test_agent_stage import gift_changes_quinn_stage, http_section
from tests.integration.test_agents_embedded import require_embedded
from tests.support import LiveServer, metric, until

pytestmark = pytest.mark.timeout(240)

# Tokens the backend test allows: the stage object takes about 20 of them.
MAX_TOKENS = 40


async def test_embedded_reply_has_one_schema_valid_stage_part() -> None:
    require_embedded()
    path = find_smollm2()
    assert path is not None
    quinn = load_characters([SHIPPED_DIR])["quinn"]
    assert quinn.acting is not None
    trigger = Trigger(GIFT, 0.0, "ann", "Ann", "", {"gift": "rose", "count": 1})
    messages = build_messages(quinn, ContextWindow(), trigger, acting=True)
    backend = EmbeddedBackend(path, threads=2)
    try:
        items = [i async for i in backend.stream(ReplyRequest(
            quinn, trigger, messages, MAX_TOKENS, schema=reply_schema(quinn.acting)))]
    finally:
        await backend.close()
    words = "".join(i for i in items if isinstance(i, str))
    stages = [i for i in items if isinstance(i, StageChange)]
    assert isinstance(items[-1], Usage) and 0 < items[-1].completion_tokens <= MAX_TOKENS
    assert len(stages) == 1, items
    # Every field, each one of its values: the grammar asked for all of them.
    fields = validate_stage(quinn.acting, stages[0])
    assert set(fields) == set(quinn.acting.fields), fields
    # The words are the say string's, never the JSON around them.
    assert words.strip() and '"stage"' not in words and "{" not in words, words


async def test_embedded_stage_change_lands_in_stage_quinn(make_server, connect, http) -> None:
    require_embedded()
    srv: LiveServer = make_server("--agent-backend", "embedded", "--agent-characters", "quinn",
                                  "--agent-cooldown", "0.2", "--agent-stale-after", "120")
    viewer = await connect(srv, "nell", codec="json")
    value = await gift_changes_quinn_stage(viewer, "embedded", 2, reply_timeout=120.0)
    acting = load_characters([SHIPPED_DIR])["quinn"].acting
    assert acting is not None
    fields = acting.fields

    async def over_http() -> dict[str, str] | None:
        got = await http_section(http, srv, "demo", "stage.quinn")
        return got if "emote" in got else None

    got = await until(over_http, 5, "the stage part in stage.quinn over HTTP")
    assert {k: got[k] for k in fields} == {k: value[k] for k in fields}, \
        json.dumps([got, value])
    assert await metric(http, srv.url, "liveroom_agent_stage_changes_total",
                        agent="quinn", outcome="applied") == 1
