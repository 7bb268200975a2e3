"""The stress ring: real ``liveroom serve`` processes pushed hard, every test
counting what it checks and printing its figures as one JSON line
(``STRESS {...}``, shown even under ``pytest -q``) for docs/BENCHMARKS.md.

Bounded for ``make test`` on a 2-core machine: each test a minute or less,
the whole ring under about four minutes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

Figures = Callable[..., None]


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
