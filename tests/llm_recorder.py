"""Test support: what a model server was asked.

``RecordingProxy`` sits in front of a real OpenAI-compatible server (the
``LlamaServer`` of tests/llm_server.py, which keeps no record of its
requests): it keeps the JSON body of every ``POST .../chat/completions``
and forwards the request unchanged, streaming the answer back chunk by
chunk, so a test can assert on the prompt a backend really sent.
Everything else is forwarded too (``GET /v1/models``)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp import web

from tests.support import free_port

# Requests kept at most (a test looks at a handful).
MAX_RECORDED = 200


class RecordingProxy:
    def __init__(self, upstream: str, port: int | None = None) -> None:
        self.upstream = upstream.rstrip("/")  # e.g. http://127.0.0.1:8000/v1
        self.port = port or free_port()
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def prompts(self) -> list[str]:
        """Every chat request's messages, joined into one text each."""
        return ["\n".join(str(m.get("content", "")) for m in r.get("messages", []))
                for r in self.requests]

    async def start(self) -> RecordingProxy:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/v1/{tail:.*}", self._forward)
        self._session = aiohttp.ClientSession()
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        if request.method == "POST" and request.path.endswith("/chat/completions"):
            self.requests.append(json.loads(body))
            del self.requests[:-MAX_RECORDED]
        url = self.upstream + request.path.removeprefix("/v1")
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("content-type", "authorization", "accept")}
        async with self._session.request(request.method, url, data=body,
                                         headers=headers) as up:
            out = web.StreamResponse(status=up.status)
            out.content_type = up.content_type
            await out.prepare(request)
            async for chunk in up.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
