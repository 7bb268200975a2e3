"""`make run` installs the core dependencies only (`pip install -e .`): the
service must start and serve its demo page without any extra's package.

A child `liveroom serve --dev` (characters on, scripted) runs with every
module of the extras' distributions blocked at import (a meta path finder
installed by a `sitecustomize` on its PYTHONPATH): a module-level import of
one of them anywhere on the serve path fails its start. Found missing: the
distributed clients (redis-py, nats-py, asyncpg), imported by the
composition root at module level while being an extra; they are core now.
"""

from __future__ import annotations

import tomllib
import urllib.request
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

from tests.support import LiveServer

ROOT = Path(__file__).resolve().parents[2]

BLOCKER = '''
import sys

BLOCKED = frozenset({blocked!r})


class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not a core dependency)")
        return None


sys.meta_path.insert(0, _Blocked())
'''


def _names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower().replace("_", "-") for r in requirements}


def extras_only_modules() -> set[str]:
    """Top-level modules of the distributions that only an extra brings."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = _names(project["dependencies"])
    extra = set().union(*(_names(reqs) for reqs in project["optional-dependencies"].values()))
    only = extra - core - {"liveroom"}
    return {module for module, dists in packages_distributions().items()
            if any(d.lower().replace("_", "-") in only for d in dists)}


def test_the_extras_are_known_here() -> None:
    blocked = extras_only_modules()
    # The test environment has the extras installed: they must be found to be blocked.
    assert {"openai", "locust", "socketio", "pytest"} <= blocked
    assert not {"redis", "nats", "asyncpg", "aiohttp"} & blocked


def test_serve_starts_and_serves_the_demo_on_core_dependencies(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER.format(blocked=sorted(extras_only_modules())))
    srv = LiveServer(tmp_path / "data", "--quic-port", "off",
                     env={"PYTHONPATH": f"{site}:{ROOT}"}).start()
    try:
        for path in ("/", "/static/app.js", "/sdk/index.js", "/healthz"):
            with urllib.request.urlopen(f"{srv.url}{path}", timeout=5) as resp:
                assert resp.status == 200, path
    finally:
        srv.stop()
