"""The demo page in a real browser: two people in one room, a host and a viewer.

The host (alice) and the viewer (bob) join the demo room from the page's join
form, each in a browser context of their own. Comments, likes, the host's
title and pinned-message edits and a private message go through a real
``liveroom serve --dev`` process and must show up on the other page.
Every server here runs with ``--quic-port off``, so the page takes its
WebSocket path (the spy below wraps it); the WebTransport path has its own
test (test_webtransport_browser.py).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import TIMEOUT_MS
from tests.support import API_KEY, LiveServer

pytestmark = pytest.mark.e2e

ROOM = "demo"


# Wraps the page's WebSocket: records the frames the page sends (window.__sent)
# and drops the next state frame of section window.__drop, as a lossy network
# would (also inside batch frames).
WS_SPY = """
(() => {
  const Native = window.WebSocket;
  window.__sent = [];
  window.__drop = null;
  window.__dropped = [];
  window.__batches = 0;
  window.__stateFrames = 0;
  const keep = (f) => {
    if (f && f.type === "state" && window.__drop && f.section === window.__drop) {
      window.__drop = null;
      window.__dropped.push(f);
      return false;
    }
    return true;
  };
  class Spy extends Native {
    send(data) {
      try { window.__sent.push(JSON.parse(data)); } catch (_) { /* not JSON */ }
      return super.send(data);
    }
    set onmessage(handler) {
      super.onmessage = (ev) => {
        let f = null;
        try { f = JSON.parse(ev.data); } catch (_) { /* not JSON */ }
        const frames = f && f.type === "batch" && Array.isArray(f.frames) ? f.frames : [f];
        window.__stateFrames += frames.filter((x) => x && x.type === "state").length;
        if (f && f.type === "batch" && Array.isArray(f.frames)) {
          window.__batches += 1;
          f.frames = f.frames.filter(keep);
          return handler.call(this, new MessageEvent("message", {data: JSON.stringify(f)}));
        }
        if (!keep(f)) return undefined;
        return handler.call(this, ev);
      };
    }
    get onmessage() { return super.onmessage; }
  }
  window.WebSocket = Spy;
})();
"""


def join(page: Any, srv: LiveServer, name: str, role: str, *,
         title: str = "Welcome to liveroom") -> None:
    page.goto(f"{srv.url}/", timeout=TIMEOUT_MS)
    page.get_by_test_id("join-name").fill(name)
    page.get_by_test_id("join-room").fill(ROOM)
    page.get_by_test_id("join-role").select_option(role)
    page.get_by_test_id("join-submit").click()
    expect(page.get_by_test_id("conn-status")).to_have_text("online", timeout=TIMEOUT_MS)
    # The seeded title appears once the room is joined (state from `joined`).
    expect(page.get_by_test_id("room-title")).to_have_text(title, timeout=TIMEOUT_MS)


def screenshot(page: Any, path: str) -> None:
    """For humans looking at a run; never fails the test."""
    try:
        page.screenshot(path=path, full_page=True, timeout=TIMEOUT_MS)
    except Exception:
        pass


def comment(page: Any, text: str) -> None:
    page.get_by_test_id("comment-input").fill(text)
    page.get_by_test_id("comment-input").press("Enter")


def read_section(srv: LiveServer, section: str) -> Any:
    with urllib.request.urlopen(f"{srv.url}/v1/rooms/{ROOM}/state/{section}",
                                timeout=10) as resp:
        return json.load(resp)["value"]


def test_host_and_viewer_in_the_demo_room(live_server: LiveServer, new_page: Any) -> None:
    alice, bob = new_page(), new_page()
    try:
        join(alice, live_server, "Alice", "host")
        expect(alice.get_by_test_id("join-user")).to_be_hidden()
        join(bob, live_server, "Bob", "viewer")

        for page in (alice, bob):
            expect(page.get_by_test_id("pinned")).to_have_text(
                "Be kind. Gifts light up the stage.", timeout=TIMEOUT_MS)
            expect(page.get_by_test_id("scoreboard")).to_contain_text("gifts",
                                                                      timeout=TIMEOUT_MS)
            expect(page.get_by_test_id("online-count")).to_have_text("2", timeout=TIMEOUT_MS)
        expect(alice.get_by_test_id("me")).to_contain_text("alice", timeout=TIMEOUT_MS)
        expect(alice.get_by_test_id("host-panel")).to_be_visible(timeout=TIMEOUT_MS)
        expect(bob.get_by_test_id("host-panel")).to_be_hidden(timeout=TIMEOUT_MS)

        # A comment typed by alice reaches bob, with her name.
        comment(alice, "hello from alice")
        seen = bob.get_by_test_id("feed-item").filter(has_text="hello from alice")
        expect(seen).to_contain_text("Alice", timeout=TIMEOUT_MS)
        expect(alice.get_by_test_id("feed-item").filter(has_text="hello from alice")
               ).to_have_count(1, timeout=TIMEOUT_MS)

        # Bob likes; alice sees it.
        bob.get_by_test_id("like-send").click()
        like = alice.locator('[data-testid="feed-item"][data-kind="like"]')
        expect(like).to_contain_text("Bob", timeout=TIMEOUT_MS)

        # The host changes the title and the pinned message; both pages follow.
        alice.get_by_test_id("title-input").fill("Friday night stream")
        alice.get_by_test_id("title-save").click()
        alice.get_by_test_id("pinned-input").fill("Questions in the chat, please")
        alice.get_by_test_id("pinned-save").click()
        for page in (alice, bob):
            expect(page.get_by_test_id("room-title")).to_have_text("Friday night stream",
                                                                   timeout=TIMEOUT_MS)
            expect(page.get_by_test_id("pinned")).to_have_text(
                "Questions in the chat, please", timeout=TIMEOUT_MS)
        # The title write kept the other fields of `meta`.
        assert read_section(live_server, "meta") == {"title": "Friday night stream",
                                                     "host": "host"}

        # A private message from bob to alice.
        bob.get_by_test_id("pm-to").fill("alice")
        bob.get_by_test_id("pm-text").fill("psst, great stream")
        bob.get_by_test_id("pm-send").click()
        received = alice.locator('[data-testid="pm-item"][data-dir="in"]')
        expect(received).to_contain_text("psst, great stream", timeout=TIMEOUT_MS)
        expect(received).to_contain_text("from Bob", timeout=TIMEOUT_MS)
        sent = bob.locator('[data-testid="pm-item"][data-dir="out"]')
        expect(sent).to_contain_text("sent ✓", timeout=TIMEOUT_MS)

        # Nothing went wrong on either page.
        for page in (alice, bob):
            expect(page.get_by_test_id("conn-status")).to_have_text("online",
                                                                    timeout=TIMEOUT_MS)
        assert alice.js_errors == [] and bob.js_errors == []
    finally:
        screenshot(alice, "/tmp/demo-alice.png")
        screenshot(bob, "/tmp/demo-bob.png")


def test_a_lost_state_frame_heals_through_sync(live_server: LiveServer,
                                                new_page: Any) -> None:
    alice, bob = new_page(), new_page()
    bob.add_init_script(WS_SPY)
    try:
        join(alice, live_server, "Alice", "host")
        join(bob, live_server, "Bob", "viewer")
        # Bob's network loses the next change of `pinned`...
        bob.evaluate("window.__drop = 'pinned'")
        alice.get_by_test_id("pinned-input").fill("Lost on the way")
        alice.get_by_test_id("pinned-save").click()
        expect(alice.get_by_test_id("pinned")).to_have_text("Lost on the way",
                                                            timeout=TIMEOUT_MS)
        # ...so the next change shows bob a gap in the total version, and his
        # page asks for what it is missing.
        alice.get_by_test_id("title-input").fill("After the gap")
        alice.get_by_test_id("title-save").click()
        expect(bob.get_by_test_id("room-title")).to_have_text("After the gap",
                                                              timeout=TIMEOUT_MS)
        expect(bob.get_by_test_id("pinned")).to_have_text("Lost on the way",
                                                          timeout=TIMEOUT_MS)
        assert bob.evaluate("window.__dropped.length") == 1
        syncs = bob.evaluate("window.__sent.filter((f) => f.type === 'sync')")
        assert len(syncs) == 1 and syncs[0]["room"] == ROOM
        assert syncs[0]["known"]["pinned"] == 1  # the version before the lost change
        assert alice.js_errors == [] and bob.js_errors == []
    finally:
        screenshot(bob, "/tmp/demo-bob-sync.png")


def test_pages_reconnect_after_a_server_crash(live_server: LiveServer,
                                              new_page: Any) -> None:
    alice, bob = new_page(), new_page()
    restarted: LiveServer | None = None
    try:
        join(alice, live_server, "Alice", "host")
        join(bob, live_server, "Bob", "viewer")
        comment(alice, "before the restart")
        expect(bob.get_by_test_id("feed-item").filter(has_text="before the restart")
               ).to_have_count(1, timeout=TIMEOUT_MS)

        port = live_server.port
        # A crash: the pages see 1006 and reconnect with backoff. (A SIGTERM
        # would do too, but today it takes the server ~10 s to exit with open
        # WebSockets.)
        live_server.kill()
        for page in (alice, bob):
            expect(page.get_by_test_id("conn-status")).not_to_have_text("online",
                                                                        timeout=TIMEOUT_MS)
        # Sent while offline: queued in the page, sent once it is back.
        bob.get_by_test_id("pm-to").fill("alice")
        bob.get_by_test_id("pm-text").fill("sent while offline")
        bob.get_by_test_id("pm-send").click()
        expect(bob.locator('[data-testid="pm-item"][data-dir="out"]')).to_contain_text(
            "queued", timeout=TIMEOUT_MS)

        # Same port, same data directory (the peer inbox survives).
        restarted = LiveServer(live_server.data_dir, "--port", str(port),
                               "--quic-port", "off").start()
        for page in (alice, bob):
            expect(page.get_by_test_id("conn-status")).to_have_text("online",
                                                                    timeout=TIMEOUT_MS)
            # Rejoined: the room's state is whatever the new server holds.
            expect(page.get_by_test_id("room-title")).to_have_text(
                read_section(restarted, "meta")["title"], timeout=TIMEOUT_MS)
        expect(alice.locator('[data-testid="pm-item"][data-dir="in"]')).to_contain_text(
            "sent while offline", timeout=TIMEOUT_MS)
        expect(bob.locator('[data-testid="pm-item"][data-dir="out"]')).to_contain_text(
            "sent ✓", timeout=TIMEOUT_MS)
        comment(alice, "after the restart")
        expect(bob.get_by_test_id("feed-item").filter(has_text="after the restart")
               ).to_have_count(1, timeout=TIMEOUT_MS)
        assert alice.js_errors == [] and bob.js_errors == []
    finally:
        if restarted is not None:
            # Pages first: a server with open WebSockets is slow to stop.
            for page in (alice, bob):
                try:
                    page.context.close()
                except Exception:
                    pass
            restarted.stop()


def test_the_page_decodes_batch_frames(tmp_path: Path, new_page: Any) -> None:
    """A burst into a busy room arrives as coalesced batch frames; the page
    shows every comment, in order."""
    srv = LiveServer(tmp_path / "batch-data", "--coalesce-window", "0.2",
                     "--quic-port", "off").start()
    try:
        page = new_page()
        page.add_init_script(WS_SPY)
        join(page, srv, "Carol", "viewer")
        for i in range(10):
            req = urllib.request.Request(
                f"{srv.url}/v1/rooms/{ROOM}/actions", method="POST",
                data=json.dumps({"kind": "comment", "body": {"text": f"burst {i}"},
                                 "sender": {"id": "svc", "name": "Burst"}}).encode(),
                headers={"Authorization": f"Bearer {API_KEY}",
                         "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as r:
                assert r.status == 202
        items = page.get_by_test_id("feed-item").filter(has_text="burst")
        expect(items).to_have_count(10, timeout=TIMEOUT_MS)
        texts = items.all_inner_texts()
        assert [t.split("burst ")[1].strip() for t in texts] == [str(i) for i in range(10)]
        assert page.evaluate("window.__batches") >= 1
        assert page.js_errors == []
    finally:
        srv.stop()


def test_a_big_room_takes_state_by_polling(tmp_path: Path, new_page: Any) -> None:
    """Over --poll-threshold members the server stops pushing state and says
    "poll": the page reads the head and the moved sections over HTTP."""
    srv = LiveServer(tmp_path / "poll-data", "--poll-threshold", "1",
                     "--quic-port", "off").start()
    try:
        page = new_page()
        page.add_init_script(WS_SPY)
        join(page, srv, "Dana", "viewer")
        expect(page.get_by_test_id("room-view")).to_have_attribute("data-state-mode", "poll",
                                                                    timeout=TIMEOUT_MS)
        req = urllib.request.Request(
            f"{srv.url}/v1/rooms/{ROOM}/state/meta", method="POST",
            data=json.dumps({"value": {"title": "Polled title"}}).encode(),
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200
        expect(page.get_by_test_id("room-title")).to_have_text("Polled title",
                                                               timeout=TIMEOUT_MS)
        assert page.evaluate("window.__stateFrames") == 0  # none came by push
        assert page.js_errors == []
    finally:
        srv.stop()


def test_the_demo_page_shows_who_is_here(live_server: LiveServer, new_page: Any) -> None:
    """The demo room keeps presence (liveroom serve's default): each page
    lists the other, with the role in the room, and loses a member who leaves."""
    alice, bob = new_page(), new_page()
    try:
        join(alice, live_server, "Alice", "host")
        join(bob, live_server, "Bob", "viewer")
        for page in (alice, bob):
            listing = page.get_by_test_id("presence-list")
            expect(listing).to_be_visible(timeout=TIMEOUT_MS)
            expect(listing.locator('[data-testid="presence-member"]')).to_have_count(
                2, timeout=TIMEOUT_MS)
            expect(listing.locator('[data-user="alice"]')).to_contain_text("host",
                                                                           timeout=TIMEOUT_MS)
            expect(listing.locator('[data-user="bob"]')).to_contain_text("Bob",
                                                                         timeout=TIMEOUT_MS)
        bob.close()
        expect(alice.get_by_test_id("presence-list").locator(
            '[data-testid="presence-member"]')).to_have_count(1, timeout=TIMEOUT_MS)
        assert alice.js_errors == []
    finally:
        screenshot(alice, "/tmp/demo-alice-presence.png")


def test_the_host_mutes_kicks_bans_and_retracts_from_the_page(
        live_server: LiveServer, new_page: Any) -> None:
    """The host's controls in the member list and the feed drive the
    ``moderate`` frame: a muted viewer's comment reaches no one, a kicked
    one is out of the room, a banned one cannot join again, and a retracted
    comment disappears from every page."""
    alice, bob = new_page(), new_page()
    try:
        join(alice, live_server, "Alice", "host")
        join(bob, live_server, "Bob", "viewer")
        listing = alice.get_by_test_id("presence-list")
        bob_entry = listing.locator('[data-user="bob"]')
        expect(bob_entry).to_be_visible(timeout=TIMEOUT_MS)
        # No controls on oneself, none for a viewer.
        expect(listing.locator('[data-user="alice"] [data-testid="mod-kick"]')).to_have_count(0)
        expect(bob.get_by_test_id("presence-list").locator(
            '[data-testid="mod-kick"]')).to_have_count(0)

        # Retract: the host removes bob's comment from every page.
        comment(bob, "please remove me")
        bob_item = alice.get_by_test_id("feed").locator('[data-testid="feed-item"]',
                                                        has_text="please remove me")
        expect(bob_item).to_have_count(1, timeout=TIMEOUT_MS)
        bob_item.get_by_test_id("mod-retract").click()
        expect(bob.get_by_test_id("feed").locator(
            '[data-testid="feed-item"]', has_text="please remove me")).to_have_count(
            0, timeout=TIMEOUT_MS)
        expect(bob_item).to_have_count(0, timeout=TIMEOUT_MS)

        # Mute: bob's comment is refused and never shown to alice.
        bob_entry.get_by_test_id("mod-mute").click()
        expect(alice.get_by_test_id("feed")).to_contain_text("You muted Bob", timeout=TIMEOUT_MS)
        comment(bob, "can anyone hear me")
        expect(bob.get_by_test_id("error-line")).to_contain_text("muted", timeout=TIMEOUT_MS)
        comment(alice, "after the mute")
        expect(bob.get_by_test_id("feed")).to_contain_text("after the mute", timeout=TIMEOUT_MS)
        expect(alice.get_by_test_id("feed")).not_to_contain_text("can anyone hear me")

        # Kick: bob is out of the room and out of the member list.
        bob_entry.get_by_test_id("mod-kick").click()
        expect(bob.get_by_test_id("error-line")).to_have_attribute("data-left", "kicked",
                                                                   timeout=TIMEOUT_MS)
        expect(listing.locator('[data-user="bob"]')).to_have_count(0, timeout=TIMEOUT_MS)

        # Bob comes back; the ban takes him out and keeps him out.
        bob.reload()
        join(bob, live_server, "Bob", "viewer")
        expect(bob_entry).to_be_visible(timeout=TIMEOUT_MS)
        bob_entry.get_by_test_id("mod-ban").click()
        expect(bob.get_by_test_id("error-line")).to_have_attribute("data-left", "banned",
                                                                   timeout=TIMEOUT_MS)
        bob.reload()
        bob.goto(f"{live_server.url}/", timeout=TIMEOUT_MS)
        bob.get_by_test_id("join-name").fill("Bob")
        bob.get_by_test_id("join-room").fill(ROOM)
        bob.get_by_test_id("join-submit").click()
        expect(bob.get_by_test_id("error-line")).to_contain_text("banned", timeout=TIMEOUT_MS)
        expect(listing.locator('[data-user="bob"]')).to_have_count(0)
        assert alice.js_errors == [] and bob.js_errors == []
    finally:
        screenshot(alice, "/tmp/demo-alice-moderation.png")
