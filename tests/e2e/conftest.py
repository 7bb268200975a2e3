"""Fixtures of the real-browser tests: a ``liveroom serve --dev`` process and a
headless Debian Chromium driven by Playwright (no downloaded browsers); and of
the cluster tests: a NATS cluster per module and an HTTP session."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.natsserver import NatsCluster
from tests.support import LiveServer

CHROMIUM = os.environ.get("LIVEROOM_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Every Playwright wait in these tests is bounded by this (milliseconds).
TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path_factory.mktemp("nats")) as cluster:
        yield cluster


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A real server in dev mode (dev tokens, demo room) on an ephemeral port.
    No character in the room: these tests count the members (agent tests
    start their own server). QUIC is off, so the page takes its WebSocket
    fallback (these tests spy on the WebSocket);
    tests/e2e/test_webtransport_browser.py covers QUIC."""
    srv = LiveServer(tmp_path / "data", "--no-agents", "--quic-port", "off").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package "
                    "(or point LIVEROOM_CHROMIUM at a Chromium binary); the e2e tests "
                    "need a real browser", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        pytest.fail(f"the playwright package is not installed: {exc}", pytrace=False)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      args=LAUNCH_ARGS, timeout=30_000)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[[], Any]]:
    """``new_page()`` -> a page in a browser context of its own (separate
    cookies and storage, like two people). Uncaught page errors are collected
    in ``page.js_errors``; the contexts are closed at the end of the test."""
    contexts: list[Any] = []

    def make() -> Any:
        context = browser.new_context(viewport={"width": 1200, "height": 820})
        context.set_default_timeout(TIMEOUT_MS)
        context.set_default_navigation_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.js_errors = errors
        return page

    yield make
    for context in contexts:
        try:
            context.close()
        except Exception:  # the browser may be gone already
            pass
