"""The HTTP origin for polling clients, made to sit behind a CDN.

Theory of operation
-------------------
A polling client reads the small *head* of a room often, and a section's body
only when that section's partial version moved:

- ``GET /v1/rooms/{room}/state`` (the head): the store epoch, the total
  version, every section's partial and the URL of each section body and of
  the snapshot. Shared caches may keep it ``max-age`` seconds (1 by default)
  and serve it stale while they revalidate (``stale-while-revalidate``, 2).
  A strong ETag names exactly one head (epoch, total, encoding): a client or
  cache that has it gets ``304``.
- ``GET /v1/rooms/{room}/sections/{section}/v/{partial}?e={epoch}`` and
  ``GET /v1/rooms/{room}/snapshots/{total}?e={epoch}``: immutable. A URL names
  one version of one epoch, so its body never changes and caches keep it a
  year. A version that is no longer current redirects (302, cacheable for
  ``max-age``) to the current one; a version that does not exist yet, or an
  epoch that is not the store's, is ``404`` (the first ``no-store``: it may
  exist a moment later). So a URL never answers a different body.
- ``GET /v1/rooms/{room}/state/{section}``: the current value, cached like the
  head (the simple read of the foundation issue, kept for simple clients).

A room with no state (never written, or dropped when idle) answers ``404
not_found`` on every route, cacheable as long as a head (``public,
max-age=1``): a CDN absorbs a storm of requests for rooms that do not
exist, and a room that gets state shows up as soon as a head would. Reads
never create anything in the store (``state_versions.store``), so requests
for made-up rooms cost the origin no memory. A section the room does not
have is the same ``404``.

Bodies are JSON, or msgpack when ``Accept`` asks for ``application/msgpack``
(``Vary: Accept``); bodies over ``compress_min`` bytes are gzip-compressed for
clients that accept it (``Vary: Accept-Encoding``). Immutable bodies are
encoded once and kept in a bounded cache, so the origin itself pays for each
version once, not per request.
"""

from __future__ import annotations

import gzip
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from state_versions.store import StateStore
from wire.codecs import JSON, MSGPACK, Variant, encode_json, encode_msgpack
from wire.errors import InvalidField, NotFound
from wire.frames import ROOM_RE, SECTION_RE
from wire.urls import section_url, snapshot_url

IMMUTABLE = "public, max-age=31536000, immutable"
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")


@dataclass(frozen=True, slots=True)
class CdnConfig:
    head_max_age: int = 1
    head_stale_while_revalidate: int = 2
    # Old or foreign-epoch versions are gone for good: caches may remember that.
    gone_max_age: int = 60
    compress_min: int = 1024
    # The encoded immutable bodies kept in memory: at most this many, and at
    # most this many bytes (a snapshot of a full room can be megabytes).
    body_cache_entries: int = 4096
    body_cache_bytes: int = 64 * 1024 * 1024

    @property
    def head_cache_control(self) -> str:
        return (f"public, max-age={self.head_max_age}, "
                f"stale-while-revalidate={self.head_stale_while_revalidate}")

    @property
    def absent_cache_control(self) -> str:
        """A room (or section) with no state: as briefly as a head, no stale
        copies (a room that gets state must show up within max-age)."""
        return f"public, max-age={self.head_max_age}"


def wants_msgpack(accept: str) -> bool:
    return any(t in accept for t in MSGPACK_TYPES)


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 If-None-Match: weak comparison, a list, or ``*``."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    tags = (t.strip() for t in if_none_match.split(","))
    return any((t[2:] if t.startswith("W/") else t) == etag for t in tags)


class CdnOrigin:
    """The origin's routes over a ``StateStore``."""

    def __init__(self, store: StateStore, config: CdnConfig,
                 registry: CollectorRegistry | None = None) -> None:
        self.store = store
        self.config = config
        self.requests = Counter("liveroom_cdn_requests_total",
                                "Origin requests for polling clients, by route and status",
                                ["route", "status"], registry=registry)
        self._bodies: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._body_bytes = 0

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/rooms/{room}/state", self.head)
        app.router.add_get("/v1/rooms/{room}/state/{section}", self.current_section)
        app.router.add_get("/v1/rooms/{room}/sections/{section}/v/{partial}", self.section)
        app.router.add_get("/v1/rooms/{room}/snapshots/{total}", self.snapshot)

    # -- handlers --------------------------------------------------------
    async def head(self, request: web.Request) -> web.StreamResponse:
        room = _room(request)
        epoch = self.store.epoch
        total, versions = await self.store.versions(room)
        if not versions:
            raise self._absent("head", f"room {room!r} has no state")
        variant = MSGPACK if wants_msgpack(request.headers.get("Accept", "")) else JSON
        etag = f'"{epoch}.{total}.{variant[0]}"'
        headers = {"Cache-Control": self.config.head_cache_control, "ETag": etag}
        if etag_matches(request.headers.get("If-None-Match", ""), etag):
            return self._not_modified("head", headers)
        body = {
            "room": room, "epoch": epoch, "total": total, "versions": versions,
            "sections": {s: section_url(room, s, p, epoch) for s, p in sorted(versions.items())},
            "snapshot": snapshot_url(room, total, epoch),
        }
        return self._respond(request, "head", body, variant, headers)

    async def current_section(self, request: web.Request) -> web.StreamResponse:
        room, name = _room(request), _section(request)
        found = await self.store.section(room, name)
        if found is None:
            raise self._absent("current_section", f"room {room!r} has no section {name!r}")
        variant = MSGPACK if wants_msgpack(request.headers.get("Accept", "")) else JSON
        etag = f'"{self.store.epoch}.{name}.{found.partial}.{variant[0]}"'
        headers = {"Cache-Control": self.config.head_cache_control, "ETag": etag}
        if etag_matches(request.headers.get("If-None-Match", ""), etag):
            return self._not_modified("current_section", headers)
        body = {"room": room, "section": name, "partial": found.partial, "value": found.value}
        return self._respond(request, "current_section", body, variant, headers)

    async def section(self, request: web.Request) -> web.StreamResponse:
        room, name = _room(request), _section(request)
        partial = _version(request, "partial")
        epoch = self._epoch_of(request, "section")
        found = await self.store.section(room, name)
        if found is None:
            raise self._absent("section", f"room {room!r} has no section {name!r}")
        current = found.partial
        if partial > current:
            self._count("section", 404)
            raise _not_yet(f"section {name!r} of room {room!r} has no version {partial} yet")
        if partial < current:
            return self._redirect("section", section_url(room, name, current, epoch))
        variant = MSGPACK if wants_msgpack(request.headers.get("Accept", "")) else JSON
        etag = f'"{epoch}.{name}.{partial}.{variant[0]}"'
        headers = {"Cache-Control": IMMUTABLE, "ETag": etag}
        if etag_matches(request.headers.get("If-None-Match", ""), etag):
            return self._not_modified("section", headers)
        key = ("section", epoch, room, name, partial)
        body = {"room": room, "section": name, "partial": partial, "value": found.value}
        return self._respond(request, "section", body, variant, headers, key)

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        room = _room(request)
        total = _version(request, "total")
        epoch = self._epoch_of(request, "snapshot")
        snap = await self.store.snapshot(room)
        if not snap.sections:
            raise self._absent("snapshot", f"room {room!r} has no state")
        if total > snap.total:
            self._count("snapshot", 404)
            raise _not_yet(f"room {room!r} has no total version {total} yet")
        if total < snap.total:
            return self._redirect("snapshot", snapshot_url(room, snap.total, epoch))
        variant = MSGPACK if wants_msgpack(request.headers.get("Accept", "")) else JSON
        etag = f'"{epoch}.snapshot.{total}.{variant[0]}"'
        headers = {"Cache-Control": IMMUTABLE, "ETag": etag}
        if etag_matches(request.headers.get("If-None-Match", ""), etag):
            return self._not_modified("snapshot", headers)
        key = ("snapshot", epoch, room, total)
        body = {"room": room, "epoch": epoch, "total": total,
                "sections": {n: {"partial": s.partial, "value": s.value}
                             for n, s in sorted(snap.sections.items())}}
        return self._respond(request, "snapshot", body, variant, headers, key)

    # -- helpers ---------------------------------------------------------
    def _epoch_of(self, request: web.Request, route: str) -> str:
        """The epoch a versioned URL names (``?e=``); absent means current."""
        epoch = request.query.get("e")
        if epoch is None:
            return self.store.epoch
        if epoch != self.store.epoch:
            self._count(route, 404)
            raise NotFound("that epoch of the state is gone; read the head again",
                           http_headers={"Cache-Control":
                                         f"public, max-age={self.config.gone_max_age}"})
        return epoch

    def _absent(self, route: str, message: str) -> NotFound:
        self._count(route, 404)
        return NotFound(message, http_headers={
            "Cache-Control": self.config.absent_cache_control, "Vary": "Accept, Accept-Encoding"})

    def _count(self, route: str, status: int) -> None:
        self.requests.labels(route, str(status)).inc()

    def _not_modified(self, route: str, headers: dict[str, str]) -> web.Response:
        self._count(route, 304)
        return web.Response(status=304, headers={**headers, "Vary": "Accept, Accept-Encoding"})

    def _redirect(self, route: str, location: str) -> web.Response:
        self._count(route, 302)
        return web.Response(status=302, headers={
            "Location": location, "Cache-Control": self.config.head_cache_control,
            "Vary": "Accept, Accept-Encoding"})

    def _respond(self, request: web.Request, route: str, body: dict[str, Any], variant: Variant,
                 headers: dict[str, str], key: tuple[Any, ...] | None = None) -> web.Response:
        gz = "gzip" in request.headers.get("Accept-Encoding", "")
        data = None if key is None else self._bodies.get((*key, variant, gz))
        if data is None:
            data = encode_msgpack(body) if variant == MSGPACK else encode_json(body)
            if gz and len(data) >= self.config.compress_min:
                data = gzip.compress(data, compresslevel=5, mtime=0)
            else:
                gz = False
            if key is not None:
                self._remember((*key, variant, gz), data)
        elif gz:
            gz = data[:2] == b"\x1f\x8b"
        out = {**headers, "Vary": "Accept, Accept-Encoding",
               "Content-Type": "application/msgpack" if variant == MSGPACK
               else "application/json; charset=utf-8"}
        if gz:
            out["Content-Encoding"] = "gzip"
            # A strong ETag names one representation: the gzip one differs.
            out["ETag"] = out["ETag"][:-1] + '.gz"'
        self._count(route, 200)
        return web.Response(body=data, headers=out)

    def _remember(self, key: tuple[Any, ...], data: bytes) -> None:
        if len(data) > self.config.body_cache_bytes // 4:
            return  # one body must not flush the whole cache
        old = self._bodies.pop(key, None)
        if old is not None:
            self._body_bytes -= len(old)
        self._bodies[key] = data
        self._body_bytes += len(data)
        while (len(self._bodies) > self.config.body_cache_entries
               or self._body_bytes > self.config.body_cache_bytes):
            self._body_bytes -= len(self._bodies.popitem(last=False)[1])


def _room(request: web.Request) -> str:
    room = request.match_info["room"]
    if not ROOM_RE.match(room):
        raise InvalidField("room ids are 1..64 of [A-Za-z0-9_.:-]", field="room")
    return room


def _section(request: web.Request) -> str:
    section = request.match_info["section"]
    if len(section) > 97 or not SECTION_RE.match(section):
        raise InvalidField("invalid section name", field="section")
    return section


def _version(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not raw.isdigit() or len(raw) > 18:
        raise InvalidField(f"{name} must be a non-negative integer", field=name)
    return int(raw)


def _not_yet(message: str) -> NotFound:
    return NotFound(message, http_headers={"Cache-Control": "no-store"})
