"""The liveroom wire protocol: what goes over the wire, and nothing else.

Theory of operation
-------------------
Every frame is a map whose ``type`` field names it. A client speaks either
msgpack (binary WebSocket frames) or JSON (text frames); the first frame it
sends (``hello``) fixes the variant for the whole connection, and the server
answers in that variant. The messages are the same in both.

The ground floor: ``wire`` imports nothing else of liveroom, never touches a
socket and never awaits, so every other package may stand on it. Its modules,
one concept each (import from them, not from this package):
- ``frames``: frame type names, the protocol version, identifiers (rooms,
  users, sections, kinds), roles, delivery ``Priority``;
- ``outgoing``: the server's frames, one builder per frame type (PROTOCOL.md's
  frame table names each), plain functions of plain values;
- ``requests``: the client frames our own clients send;
- ``errors``: the one error hierarchy (``LiveroomError``) and its table of
  wire codes, each saying whose fault it is and what the client should do;
- ``close_codes``: close codes, whose ranges tell a client whether to reconnect;
- ``codecs``: msgpack and JSON, and the four wire variants (``Variant``);
- ``decode``: a client frame or HTTP body decoded and checked by the value rule,
  and the field accessors;
- ``incoming``: the client's frames typed, one parser per frame type that
  checks its fields (the session makes the state checks between them);
- ``websocket``: pre-built WebSocket frames (server frames are unmasked, so one
  frame's bytes fit every recipient);
- ``webtransport``: the WebTransport (QUIC) stream frames, datagram records of
  lossy state, and the session close capsule;
- ``encoded``: ``Encoded``, one outgoing message encoded once per variant and
  framed once, and the batch frame of one coalescing tick;
- ``urls``: the URLs of a room's state for polling clients.

``docs/PROTOCOL.md`` documents every frame and code defined here.
"""
