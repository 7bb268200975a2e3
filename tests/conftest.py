import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests import the project's packages and tests.support from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.pgserver import PgServer


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """One throwaway PostgreSQL cluster for the session (tests/pgserver.py).
    Each test makes databases of its own (``create_database``); a test that
    stops or restarts PostgreSQL starts its own ``PgServer``."""
    with PgServer() as srv:
        yield srv
