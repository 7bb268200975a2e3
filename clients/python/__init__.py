"""The liveroom client for Python asyncio (README.md in this folder).

    from clients.python import Client

    client = await Client.connect("ws://127.0.0.1:8080/ws", get_token)
    room = await client.join("demo")
"""

from clients.python.client import Client, GaveUp, RequestError
from clients.python.link import LinkLost
from clients.python.policy import Backoff
from clients.python.room import Room

__all__ = ["Backoff", "Client", "GaveUp", "LinkLost", "RequestError", "Room"]
