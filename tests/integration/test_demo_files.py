"""The demo page's files as a browser loads them: the page, its ES modules
under /static/ and the JavaScript SDK (clients/js/src) under /sdk/. Every
static import of the page's module graph resolves on the edge itself, so the
page works from a checkout where npm never ran (`make run`): the only bare
specifier, @msgpack/msgpack, is imported lazily and only for the msgpack
codec, which the page does not use. The browser tests (tests/e2e) run the page."""

from __future__ import annotations

import re

import aiohttp
from yarl import URL

from tests.support import LiveServer

# `import … from "x"` / `export … from "x"` (static: what a browser fetches at load).
STATIC_IMPORT = re.compile(r"""^\s*(?:import|export)\b[^'"]*?\bfrom\s+['"]([^'"]+)['"]""", re.M)


async def test_the_page_and_its_module_graph_are_served(server: LiveServer,
                                                        http: aiohttp.ClientSession) -> None:
    async with http.get(f"{server.url}/") as resp:
        assert resp.status == 200
        page = await resp.text()
    assert '<script type="module" src="/static/app.js"></script>' in page
    todo, seen = ["/static/app.js"], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        async with http.get(f"{server.url}{path}") as resp:
            assert resp.status == 200, path
            assert "javascript" in resp.headers["Content-Type"], (path, resp.headers)
            source = await resp.text()
        for spec in STATIC_IMPORT.findall(source):
            assert spec.startswith(("/", "./", "../")), f"{path} imports {spec!r} statically"
            base = path.rsplit("/", 1)[0]
            todo.append(spec if spec.startswith("/") else _join(base, spec))
    assert {"/static/app.js", "/static/view.js", "/sdk/index.js", "/sdk/client.js",
            "/sdk/webtransport.js", "/sdk/codec.js"} <= seen


async def test_the_sdk_route_serves_only_the_sdk(server: LiveServer,
                                                 http: aiohttp.ClientSession) -> None:
    for path in ("/sdk/../../pyproject.toml", "/sdk/%2e%2e/%2e%2e/pyproject.toml",
                 "/sdk/../package.json"):
        # encoded: sent as written, not normalised by the client
        async with http.get(URL(f"{server.url}{path}", encoded=True)) as resp:
            assert resp.status in (403, 404), (path, resp.status)


def _join(base: str, rel: str) -> str:
    parts = base.split("/")
    for piece in rel.split("/"):
        if piece == "..":
            parts.pop()
        elif piece != ".":
            parts.append(piece)
    return "/".join(parts)
