"""Acting on the stage through a real model server: ``llama_cpp.server``
(tests/llm_server.py, an OpenAI-compatible server over SmolLM2) behind a
recording proxy (tests/llm_recorder.py). Quinn's reply is asked for with
her JSON schema (the OpenAI ``json_schema`` form first; llama_cpp.server
refuses it with a 422, so the backend asks again with ``json_object`` and
the schema, and keeps to it); the model's grammar-constrained stage part
lands in ``stage.quinn`` and her words stream as plain text; the backend
alone reads a structured stream into words and one stage part."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_agents.acting import StageChange, reply_schema, validate_stage
from llm_agents.backends.base import ReplyRequest, Usage
from llm_agents.backends.openai_backend import OpenAIBackend
from llm_agents.character import SHIPPED_DIR, load_characters
from llm_agents.policy import GIFT, Trigger
from llm_agents.prompt import ContextWindow, build_messages
from tests.integration.test_agent_stage import gift_changes_quinn_stage
from tests.llm_recorder import RecordingProxy
from tests.llm_server import MODEL_ALIAS
from tests.support import LiveServer, metric

REPLY_TIMEOUT = 90.0

pytestmark = pytest.mark.timeout(300)




async def test_backend_streams_words_and_one_stage_part(proxy: RecordingProxy) -> None:
    quinn = load_characters([SHIPPED_DIR])["quinn"]
    assert quinn.acting is not None
    trigger = Trigger(GIFT, 0.0, "ann", "Ann", "", {"gift": "rose", "count": 1})
    messages = build_messages(quinn, ContextWindow(), trigger, acting=True)
    backend = OpenAIBackend(proxy.base_url, MODEL_ALIAS, idle_timeout=60, retries=0)
    try:
        items = [i async for i in backend.stream(ReplyRequest(
            quinn, trigger, messages, 80, schema=reply_schema(quinn.acting)))]
    finally:
        await backend.close()
    words = "".join(i for i in items if isinstance(i, str))
    stages = [i for i in items if isinstance(i, StageChange)]
    assert isinstance(items[-1], Usage)
    assert len(stages) == 1, items
    fields = validate_stage(quinn.acting, stages[0])
    assert set(fields) == {"mood", "emote", "position"}
    assert words.strip() and '"stage"' not in words, words
    kinds = [r.get("response_format", {}).get("type") for r in proxy.requests]
    assert kinds == ["json_schema", "json_object"]
    assert proxy.requests[1]["response_format"]["schema"] == reply_schema(quinn.acting)
    assert backend.schema_style == "json_object"


async def test_models_stage_change_lands_in_stage_section(
        proxy: RecordingProxy, tmp_path: Path, connect, http) -> None:
    with LiveServer(tmp_path, "--agent-backend", "openai", "--openai-base-url",
                    proxy.base_url, "--openai-model", MODEL_ALIAS, "--agent-characters",
                    "quinn", "--agent-cooldown", "0.2", "--openai-idle-timeout", "60",
                    "--agent-stale-after", "120") as srv:
        viewer = await connect(srv, "nora", codec="json")
        await gift_changes_quinn_stage(viewer, "openai", 3, reply_timeout=REPLY_TIMEOUT)
        assert await metric(http, srv.url, "liveroom_agent_stage_changes_total",
                            agent="quinn", outcome="applied") == 1
        # Every reply of an acting character was asked for with the schema.
        assert all("schema" in str(r.get("response_format")) for r in proxy.requests)
