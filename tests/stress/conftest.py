"""The stress ring: real ``liveroom serve`` processes pushed hard, every test
counting what it checks and printing its figures as one JSON line
(``STRESS {...}``, shown even under ``pytest -q``) for docs/BENCHMARKS.md.

Bounded for ``make test`` on a 2-core machine: each test a minute or less,
the whole ring under about four minutes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support import LiveServer

Figures = Callable[..., None]


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """``make_server(*args)``: a started server of this test's own (data dir
    under tmp_path), stopped at the end."""
    started: list[LiveServer] = []

    def make(*args: str, **kw: Any) -> LiveServer:
        srv = LiveServer(tmp_path / f"data{len(started)}", *args, **kw)
        started.append(srv)
        return srv.start()

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        yield s


@pytest.fixture
def figures(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> Figures:
    """``figures(**numbers)`` prints ``STRESS {"test": ..., **numbers}`` past
    pytest's capture, so a plain ``make test`` shows what the ring measured."""

    def emit(**numbers: Any) -> None:
        line = json.dumps({"test": request.node.name, **numbers}, sort_keys=False)
        with capsys.disabled():
            print(f"\nSTRESS {line}", flush=True)

    return emit
