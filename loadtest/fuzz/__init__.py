"""Fuzz a live liveroom server while a canary room checks that it still delivers.

    python -m loadtest.fuzz --seconds 60 [--seed 7] [--url http://127.0.0.1:8080]

prints one JSON line on stdout (the summary) and exits 0 when nothing failed,
1 when something did (the summary's ``failures`` say what), 2 on bad usage.

Where it lives: ``payloads`` (the frames, nasty values and mutations, pure),
``tokens`` (the tokens' claims: rooms grants and tiers, good and bad, pure),
``api_requests`` (the backend API's requests, pure),
``ws_attacker``, ``wt_attacker`` and ``http_attacker`` (the workers, sharing
``attack.Fuzz``), ``canary``, ``target`` (the server process, its health and
leak checks), ``run`` (one run and its JSON report) and ``cli`` (the flags).

Theory of operation
-------------------
Without ``--url`` the fuzzer starts its own ``liveroom serve --dev`` on a
free port (QUIC on, a throw-away data directory, scripted characters) and
reads its TCP and QUIC ports from the log; its ``--rooms-config`` (``target.
ROOMS_CONFIG``) turns on presence, history, slow mode, kinds, a private room
and a section bound in some fuzz rooms, so those paths are attacked too;
with ``--url`` it attacks that
server (tokens from ``POST /v1/dev/token``, so it must run ``--dev``; the
backend API key from ``--api-key``/``LIVEROOM_API_KEY``; the QUIC port from
``GET /v1/quic``; RSS and descriptors only with ``--pid``).

Attackers, all at once for ``--seconds``:

- WebSocket workers (``--ws-workers``): raw sockets (loadtest/raw_ws.py),
  each connection a valid ``hello`` (or, now and then, a mutated one) with a
  token of a ``tokens`` profile (grants in some fuzz rooms, never the
  canary's; a tier; one in twenty refused), then a few hundred frames
  (``moderate`` with every op, actions with a client ``id``, bursts of
  honest actions into a joined room among them): mostly *structure-aware
  mutations* of valid frames (a field dropped, retyped, replaced by a nasty
  value: nested past the depth limit or past the parser, over the size
  limits, integers past 64 bits, NaN, lone surrogates, msgpack bin and ext
  values, non-string keys, unknown types), some valid frames, some raw byte
  mutations of an encoded frame (flipped, cut, spliced), in msgpack (binary)
  or JSON (text); and now and then a transport attack that ends the
  connection (a reserved opcode or bit, an unmasked frame, a fragmented or
  oversized control frame, an orphan continuation, a message in too many
  fragments, invalid UTF-8 in a text frame, a header announcing a message
  over the hard limit, a frame cut off by the end of the socket);
- WebTransport workers (``--wt-workers``), the same over the QUIC edge
  (``edge/wt_client.py``), and for transport attacks: a length prefix with
  the top bit set, over the hard limit, a frame cut off by the end of the
  stream, bytes that are no frame at all;
- HTTP workers (``--http-workers``): every route of the edge (dev token,
  publish action, write state, the CDN GETs, the characters' routes, health,
  metrics, QUIC info, static files, unknown paths, and the backend API:
  moderation, presence, history, retract, room info and listing, peer
  messages, the rooms config, seats) with random and mutated bodies (and
  bodies past the size bound), methods, headers (with and without the
  backend key) and path parameters, and now and then raw bytes on a TCP
  connection instead of a request.

Fuzzed frames name only the fuzz rooms and users (small fixed pools, so the
state a fuzzer may legitimately leave behind is bounded: a leak is growth
beyond that). No fuzzed frame names the canary room: a *cross-room effect* is
anything the canary sees that its own sender did not send, or anything it
does not see. A few fuzz connections do join the canary's room, to try
to moderate its users (``ws_attacker.moderate_canary``): they send nothing
there but ``join``, ``moderate`` and ``leave``, and a ``moderated`` or
``retract`` in the canary's room is a failure.

The canary: two honest members of their own room, a host over WebSocket
(msgpack) and a viewer over WebTransport (JSON) when QUIC is on; the host
sends one action and one state change every ``--canary-interval`` (100 ms).
Both members check every action arrives once, in order, within
``--canary-deadline`` (2 s), and that the state section they watch reaches
each written value within the deadline, never going back. The canary runs in
a process of its own, so the fuzzers' CPU cannot make it late.

It fails on: the server process exiting (or ``/healthz`` failing), a canary
that loses, reorders, duplicates or is late, a closed canary connection, an
``internal`` error frame, an HTTP 5xx (other than the documented 503s),
an HTTP request that hangs, a WebSocket close 1011, or a leak: RSS or open
descriptors of the server at the end over ``--rss-bound-mb``/``--fd-bound``
above what they were after the warm-up (the first fifth of the run), the
fuzz connections closed; or a log flood: more than ``--max-log-errors``
ERROR lines a minute in the server's log (our own server only), since a
failure a client can cause at will must be logged at a bounded rate. The
summary counts frames sent per transport and codec, errors by code, closes
by code, HTTP statuses, the canary's latency and the server's RSS,
descriptors and CPU time.

Deterministic given ``--seed``: each worker draws from its own
``random.Random(f"{seed}/{kind}/{index}")``, so the inputs (their order and
content) are the same on every run; how many of them fit into the time, and
how the server's replies interleave, are not.
"""
