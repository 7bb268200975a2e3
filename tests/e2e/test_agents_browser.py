"""The demo page shows a character's streamed reply: one feed line that grows
with the agent.delta chunks, completed by agent.say, labelled "scripted"
when the scripted backend plays; the agent counts in the online count."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import TIMEOUT_MS
from tests.e2e.test_demo_browser import comment, join, screenshot
from tests.support import LiveServer

pytestmark = pytest.mark.e2e


@pytest.fixture
def agent_server(tmp_path: Path) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path / "data", "--agent-backend", "scripted",
                     "--agent-cooldown", "0.2", "--agent-word-delay", "0.05").start()
    try:
        yield srv
    finally:
        srv.stop()


def test_scripted_character_reply_streams_into_the_feed(agent_server: LiveServer,
                                                        new_page: Any) -> None:
    page = new_page()
    join(page, agent_server, "Vera", "viewer")
    # Vera and the quiz master.
    expect(page.get_by_test_id("online-count")).to_have_text("2", timeout=TIMEOUT_MS)
    comment(page, "hi quinn, ready?")
    reply = page.locator('[data-testid="agent-reply"]').first
    expect(reply).to_contain_text("Quinn", timeout=TIMEOUT_MS)
    expect(reply.locator(".label")).to_have_text("scripted", timeout=TIMEOUT_MS)
    expect(reply).to_have_attribute("data-done", "1", timeout=TIMEOUT_MS)
    expect(reply.locator(".text")).to_contain_text("Good question, Vera", timeout=TIMEOUT_MS)
    # One line per reply, however many chunks it streamed in.
    expect(page.locator('[data-testid="agent-reply"]')).to_have_count(1, timeout=TIMEOUT_MS)
    # Quinn's stage (stage.quinn) is shown: her name and mood.
    expect(page.get_by_test_id("agent-stage-quinn")).to_contain_text("Quinn",
                                                                       timeout=TIMEOUT_MS)
    # A question makes her thoughtful (her [acting.scripted] stage change).
    expect(page.get_by_test_id("agent-mood-quinn")).to_have_text("thoughtful",
                                                                  timeout=TIMEOUT_MS)
    screenshot(page, "/tmp/demo-agent.png")
    assert not page.js_errors, page.js_errors


WALKER = '''
name = "walker"
display_name = "Walker (stage hand)"
persona = "You walk about the stage."
[reacts]
mentions = false
[stage]
position = "right"
[world]
hz = 10
idle_s = 0
speed = 0.4
'''


def test_a_gift_changes_quinns_stage_and_the_world_is_drawn(tmp_path: Path,
                                                            new_page: Any) -> None:
    """Quinn acts on a gift (the scripted backend's stage change: excited,
    clapping) and the page's stage chip follows; a character with a world
    walks on the page's stage strip (positions.walker)."""
    chars = tmp_path / "chars"
    chars.mkdir()
    (chars / "walker.toml").write_text(WALKER)
    srv = LiveServer(tmp_path / "data", "--agent-backend", "scripted",
                     "--characters", str(chars), "--agent-characters", "quinn,walker",
                     "--agent-cooldown", "0.2", "--agent-word-delay", "0.02",
                     "--online-interval", "0.2").start()
    try:
        page = new_page()
        join(page, srv, "Gus", "viewer")
        expect(page.get_by_test_id("agent-mood-quinn")).to_have_text("cheerful",
                                                                      timeout=TIMEOUT_MS)
        page.get_by_test_id("gift-send").click()
        reply = page.locator('[data-testid="agent-reply"]').filter(has_text="Quinn").first
        expect(reply.locator(".text")).to_contain_text("thank you Gus", timeout=TIMEOUT_MS)
        expect(page.get_by_test_id("agent-mood-quinn")).to_have_text("excited",
                                                                      timeout=TIMEOUT_MS)
        expect(page.get_by_test_id("agent-emote-quinn")).to_have_text("clap",
                                                                       timeout=TIMEOUT_MS)
        # The world: the walker's tag moves along the strip.
        dot = page.get_by_test_id("agent-pos-walker")
        expect(dot).to_be_visible(timeout=TIMEOUT_MS)
        expect(dot).to_contain_text("Walker")
        first = dot.get_attribute("style")
        page.wait_for_function(
            """(s) => { const d = document.querySelector('[data-testid="agent-pos-walker"]');
                        return d && d.getAttribute('style') !== s; }""",
            arg=first, timeout=TIMEOUT_MS)
        screenshot(page, "/tmp/demo-agent-stage.png")
        assert not page.js_errors, page.js_errors
    finally:
        srv.stop()
