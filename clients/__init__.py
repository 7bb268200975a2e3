"""Client SDKs of liveroom: ``clients/python`` (the asyncio client,
``clients.python``); ``clients/js`` is the npm package."""
