import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Tests import the project's packages and tests.support from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.pgserver import PgServer
from tests.support import LiveServer


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """One throwaway PostgreSQL cluster for the session (tests/pgserver.py).
    Each test makes databases of its own (``create_database``); a test that
    stops or restarts PostgreSQL starts its own ``PgServer``."""
    with PgServer() as srv:
        yield srv


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start a server with its own arguments (and data dir) for one test."""
    started: list[LiveServer] = []

    def make(*args: str, data_dir: Path | None = None, **kw: object) -> LiveServer:
        srv = LiveServer(data_dir or tmp_path / f"data{len(started)}", *args, **kw)  # type: ignore[arg-type]
        started.append(srv)
        return srv.start()

    yield make
    for srv in started:
        srv.stop()
