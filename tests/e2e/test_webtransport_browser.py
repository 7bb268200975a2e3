"""The demo page over WebTransport (HTTP/3 over QUIC) in headless Chromium.

A real ``liveroom serve --dev`` (QUIC on a free UDP port, a development
certificate) and Debian's Chromium, launched *without* ``--disable-quic``.
The page reads ``GET /v1/quic`` and opens a WebTransport session with the
certificate's SHA-256 (``serverCertificateHashes``), no browser flags needed.
A third page forced onto WebSocket (``?ws=1``) shares the room: the same
actions and state reach both transports. Lossy state (``positions``) reaches
the WebTransport pages as datagrams and they converge on the last version.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import CHROMIUM, LAUNCH_ARGS, TIMEOUT_MS
from tests.support import API_KEY, LiveServer

pytestmark = pytest.mark.e2e

ROOM = "stage-wt"
# The shared launch turns QUIC off for the WebSocket tests; this one must not.
WT_LAUNCH_ARGS = [a for a in LAUNCH_ARGS if a != "--disable-quic"]


@pytest.fixture(scope="module")
def wt_browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"Chromium not found at {CHROMIUM}", pytrace=False)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      args=WT_LAUNCH_ARGS, timeout=30_000)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def quic_server(tmp_path: Path) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path / "data").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def page_of(wt_browser: Any) -> Iterator[Callable[[], Any]]:
    contexts: list[Any] = []

    def make() -> Any:
        context = wt_browser.new_context(viewport={"width": 1200, "height": 820})
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.console_lines = []
        page.on("console", lambda m: page.console_lines.append(f"{m.type}: {m.text}"))
        return page

    yield make
    for context in contexts:
        try:
            context.close()
        except Exception:
            pass


def join(page: Any, srv: LiveServer, name: str, role: str, query: str = "") -> None:
    page.goto(f"{srv.url}/{query}", timeout=TIMEOUT_MS)
    page.get_by_test_id("join-name").fill(name)
    page.get_by_test_id("join-room").fill(ROOM)
    page.get_by_test_id("join-role").select_option(role)
    page.get_by_test_id("join-submit").click()
    expect(page.get_by_test_id("conn-status")).to_have_text("online", timeout=TIMEOUT_MS)


def api(srv: LiveServer, path: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(f"{srv.url}{path}", data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {API_KEY}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def test_demo_page_over_webtransport(quic_server: LiveServer, page_of: Any) -> None:
    alice, bob, carol = page_of(), page_of(), page_of()
    try:
        join(alice, quic_server, "Alice", "host")
        join(bob, quic_server, "Bob", "viewer")
        join(carol, quic_server, "Carol", "viewer", "?ws=1")
        status = "conn-status"
        for page in (alice, bob):
            expect(page.get_by_test_id(status)).to_have_attribute("data-transport",
                                                                  "webtransport")
        expect(carol.get_by_test_id(status)).to_have_attribute("data-transport", "websocket")
        for page in (alice, bob, carol):
            expect(page.get_by_test_id("online-count")).to_have_text("3", timeout=TIMEOUT_MS)

        # Actions both ways, across transports.
        bob.get_by_test_id("comment-input").fill("hello over quic")
        bob.get_by_test_id("comment-input").press("Enter")
        carol.get_by_test_id("comment-input").fill("hello over websocket")
        carol.get_by_test_id("comment-input").press("Enter")
        for page in (alice, bob, carol):
            for text, who in (("hello over quic", "Bob"), ("hello over websocket", "Carol")):
                item = page.get_by_test_id("feed-item").filter(has_text=text)
                expect(item).to_contain_text(who, timeout=TIMEOUT_MS)

        # State: the host (over WebTransport) sets the title; everyone follows.
        alice.get_by_test_id("title-input").fill("Live over HTTP/3")
        alice.get_by_test_id("title-save").click()
        for page in (alice, bob, carol):
            expect(page.get_by_test_id("room-title")).to_have_text("Live over HTTP/3",
                                                                   timeout=TIMEOUT_MS)

        # Lossy state: 40 position updates go to the QUIC pages as datagrams;
        # every page ends at the last version (title 1 + positions 40).
        for i in range(1, 41):
            api(quic_server, f"/v1/rooms/{ROOM}/state/positions", {"value": {"x": i}})
        for page in (alice, bob, carol):
            expect(page.get_by_test_id("state-version")).to_have_text("· state v41",
                                                                      timeout=TIMEOUT_MS)
        for page in (alice, bob):
            stats = page.evaluate("window.liveroomStats()")
            assert stats["transport"] == "webtransport"
            assert stats["datagrams"] > 0, stats
        assert carol.evaluate("window.liveroomStats()")["datagrams"] == 0
    except Exception:
        for name, page in (("alice", alice), ("bob", bob), ("carol", carol)):
            print(name, "console:", *page.console_lines, sep="\n  ")
        raise
