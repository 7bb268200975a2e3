"""The python-socketio peer of the fan-out benchmark (``--peer
python-socketio``): the same load against a server written the way
python-socketio's documentation shows, pinned to the same core as ours."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from typing import Any

from loadtest.procstat import install_uvloop


def serve_socketio(port: int) -> None:
    """The peer: python-socketio on aiohttp + uvloop, written the way its
    documentation shows. A client joins a room with an acknowledged ``join``
    event; an ``action`` event is stamped like liveroom stamps an action and
    emitted to the room (python-socketio encodes it once per emit)."""
    import socketio  # type: ignore[import-untyped]
    from aiohttp import web

    install_uvloop()
    sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)
    app = web.Application()
    sio.attach(app)
    seq = 0
    sender = {"id": "pub0", "name": "pub0", "role": "host"}

    @sio.on("join")  # type: ignore[untyped-decorator]
    async def on_join(sid: str, room: str) -> str:
        await sio.enter_room(sid, room)
        return "ok"

    @sio.on("action")  # type: ignore[untyped-decorator]
    async def on_action(sid: str, data: dict[str, Any]) -> None:
        nonlocal seq
        seq += 1
        room = data["room"]
        await sio.emit("action", {"type": "action", "room": room, "kind": data["kind"],
                                  "body": data["body"], "from": sender, "seq": seq,
                                  "ts": time.time()}, room=room)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        bound = int(runner.addresses[0][1])
        print(f"listening on http://127.0.0.1:{bound} (python-socketio)", file=sys.stderr,
              flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())
