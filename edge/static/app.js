/* liveroom demo page: plain JS, no build step, no dependencies.
 *
 * Speaks the liveroom wire protocol (JSON frames) over WebTransport (HTTP/3 over QUIC,
 * when the browser has it and the edge offers it at GET /v1/quic: one bidirectional
 * stream of length-prefixed frames, lossy state as datagrams) or else over /ws
 * (WebSocket text frames; `?ws=1` forces it):
 *   hello -> welcome, join -> joined, action, state, sync, peer/peer_ack, online, error,
 *   batch (a list of frames, handled in order).
 * Keeps the state versions of each joined room (total + one partial per section), resyncs
 * when a pushed state frame shows a gap, reconnects with backoff according to the close
 * code and rejoins with the versions it knows, so that only changed sections come back.
 */
"use strict";

(() => {
  const USER_RE = /^[A-Za-z0-9_.:@-]{1,64}$/;
  const ROOM_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
  const MAX_FEED = 300;
  const MAX_PM = 200;
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_MAX_MS = 5000;
  const GIFT_ICONS = { rose: "✿", star: "★", rocket: "➶" };

  const $ = (id) => document.querySelector(`[data-testid="${id}"]`);

  const app = {
    ident: null,          // {user, name, role} the token is for
    token: null,
    me: null,             // welcome.user: {id, name, role}
    ws: null,
    wanted: false,        // true while the user wants to be in the room
    welcomed: false,
    helloExpired: false,  // the hello was refused because the token had expired
    attempt: 0,           // reconnect attempts since the last welcome
    reconnectTimer: null,
    ref: 0,
    refs: new Map(),      // ref -> what it was for ({kind: "peer", id} | {kind: "state", ...})
    rooms: new Map(),     // room -> room state (see newRoom)
    current: null,        // the room on screen
    outbox: new Map(),    // peer message id -> frame, until the server acks it
    peerSeen: new Set(),  // seqs of received peer messages (redelivery after reconnect)
    peerAcked: 0,
    errorTimer: null,
    transport: null,      // "webtransport" or "websocket" (the page's data-transport too)
    datagrams: 0,         // datagrams received (lossy state over WebTransport)
  };

  function newRoom(name) {
    return {
      name,
      joined: false,
      total: 0,          // total state version we are at
      versions: {},      // section -> partial
      values: {},        // section -> value
      syncing: false,
      syncAgain: false,
      online: 0,
      // Who's here, in rooms that keep presence: user id -> {id, name, role};
      // null while the room is over its cap (counts only), or without presence.
      presence: null,
      presenceCapped: false,
      poll: null,        // {head, interval, timer, etag} while state comes by polling
    };
  }

  // ------------------------------------------------------------------ helpers
  function nextRef() {
    app.ref += 1;
    return app.ref;
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function isObject(v) {
    return v !== null && typeof v === "object" && !Array.isArray(v);
  }

  function fmtTime(ts) {
    const d = typeof ts === "number" ? new Date(ts * 1000) : new Date();
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function deriveUserId(name) {
    const id = name
      .normalize("NFKD")
      .replace(/[\u0300-\u036f]/g, "")
      .toLowerCase()
      .replace(/[^a-z0-9_.:@-]+/g, "-")
      .replace(/^-+|-+$/g, "")
      .slice(0, 64);
    return id;
  }

  function randomId(prefix) {
    const rnd = Math.random().toString(36).slice(2, 10);
    return `${prefix}-${Date.now().toString(36)}-${rnd}`;
  }

  function send(frame) {
    const ws = app.ws;
    if (!ws) return false;
    if (ws.kind === "webtransport") return ws.send(JSON.stringify(frame));
    if (ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  // ------------------------------------------------------------ status line
  function setConn(state, text) {
    const badge = $("conn-status");
    badge.dataset.state = state;
    badge.textContent = text;
  }

  function showError(text, level) {
    const line = $("error-line");
    line.textContent = text;
    line.dataset.level = level || "error";
    line.classList.add("visible");
    clearTimeout(app.errorTimer);
    app.errorTimer = setTimeout(() => line.classList.remove("visible"), 8000);
  }

  function describeError(frame) {
    let text = `${frame.code || "error"}: ${frame.message || ""}`.trim();
    if (typeof frame.retry_after === "number") text += ` (retry in ${frame.retry_after}s)`;
    if (frame.advice && frame.advice !== "fix") text += ` [${frame.advice}]`;
    return text;
  }

  // ------------------------------------------------------------ connection
  const ELEVATED = new Set(["host", "moderator"]);

  async function fetchToken(ident) {
    const resp = await fetch("/v1/dev/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      // Host and moderator are granted per room (the token's rooms claim):
      // ask for the role in the room being joined, viewer everywhere else.
      body: JSON.stringify(ELEVATED.has(ident.role)
        ? { user: ident.user, name: ident.name, role: "viewer", rooms: { [ident.room]: ident.role } }
        : { user: ident.user, name: ident.name, role: ident.role }),
    });
    let body = null;
    try {
      body = await resp.json();
    } catch (_) {
      body = null;
    }
    if (!resp.ok || !body || typeof body.token !== "string") {
      const why = body && body.code ? `${body.code}: ${body.message}` : `HTTP ${resp.status}`;
      throw new Error(`cannot get a token (${why})`);
    }
    return body.token;
  }

  // For tests and curious people: which transport, how many datagrams.
  window.liveroomStats = () => ({ transport: app.transport, datagrams: app.datagrams });

  // ------------------------------------------------------- WebTransport
  // The edge says where its QUIC endpoint is and the SHA-256 of its
  // certificate (a development certificate is accepted by its hash alone,
  // serverCertificateHashes). A page that could not open a session once uses
  // WebSocket from then on.
  const forceWs = new URLSearchParams(location.search).get("ws") === "1";
  let wtFailed = false;
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();

  async function quicOffer() {
    if (forceWs || wtFailed || typeof WebTransport === "undefined") return null;
    // Asked on every connect: after a restart the port or the certificate may differ.
    try {
      const resp = await fetch("/v1/quic", { cache: "no-store" });
      return resp.ok ? await resp.json() : null;
    } catch (_) {
      return null;
    }
  }

  function connect() {
    clearTimeout(app.reconnectTimer);
    app.reconnectTimer = null;
    quicOffer().then((info) => {
      if (!app.wanted || app.ws) return;
      if (info) connectWt(info);
      else connectWs();
    });
  }

  /** One frame: a 4-byte big-endian length, then the JSON text. */
  function wtFrame(text) {
    const body = encoder.encode(text);
    const frame = new Uint8Array(4 + body.length);
    new DataView(frame.buffer).setUint32(0, body.length);
    frame.set(body, 4);
    return frame;
  }

  function connectWt(info) {
    const url = `https://${location.hostname}:${info.port}${info.path}`;
    const hash = new Uint8Array(info.cert_sha256.match(/../g).map((h) => parseInt(h, 16)));
    let wt;
    try {
      wt = new WebTransport(url, { serverCertificateHashes: [{ algorithm: "sha-256", value: hash }] });
    } catch (err) {
      wtFailed = true;
      connectWs();
      return;
    }
    let opened = false;
    const conn = {
      kind: "webtransport",
      writer: null,
      send(text) {
        if (!this.writer) return false;
        this.writer.write(wtFrame(text)).catch(() => {});
        return true;
      },
      close(code, reason) {
        try {
          wt.close({ closeCode: code, reason: reason || "" });
        } catch (_) {
          /* already closed */
        }
      },
    };
    app.ws = conn;
    app.transport = "webtransport";
    app.welcomed = false;
    app.helloExpired = false;
    setConn("connecting", app.attempt ? `reconnecting… (try ${app.attempt + 1})` : "connecting…");
    const finish = (code, reason) => {
      if (conn !== app.ws) return;
      app.ws = null;
      if (!opened) {
        // No session at all (no UDP, a blocked port, a refused certificate):
        // WebSocket from now on.
        wtFailed = true;
        connectWs();
        return;
      }
      onClosed(code, reason);
    };
    wt.closed.then(
      (info) => finish(info && info.closeCode ? info.closeCode : 1000, (info && info.reason) || ""),
      (err) => finish(1006, String((err && err.message) || err)),
    );
    (async () => {
      try {
        await wt.ready;
        const stream = await wt.createBidirectionalStream();
        conn.writer = stream.writable.getWriter();
        opened = true;
        if (conn !== app.ws) {
          conn.close(1000, "superseded");
          return;
        }
        send({ type: "hello", token: app.token, v: 1, ref: nextRef() });
        readWtDatagrams(wt, conn);
        await readWtFrames(stream.readable, conn);
      } catch (err) {
        if (!opened) finish(1006, String(err));
      }
    })();
  }

  async function readWtFrames(readable, conn) {
    const reader = readable.getReader();
    let buf = new Uint8Array(0);
    for (;;) {
      const { value, done } = await reader.read();
      if (done || conn !== app.ws) return;
      const joined = new Uint8Array(buf.length + value.length);
      joined.set(buf);
      joined.set(value, buf.length);
      buf = joined;
      let pos = 0;
      while (buf.length - pos >= 4) {
        const size = new DataView(buf.buffer, buf.byteOffset + pos, 4).getUint32(0);
        if (buf.length - pos - 4 < size) break;
        handleText(decoder.decode(buf.subarray(pos + 4, pos + 4 + size)));
        pos += 4 + size;
      }
      buf = buf.slice(pos);
    }
  }

  async function readWtDatagrams(wt, conn) {
    // Lossy state (a section updated many times a second) comes as datagrams:
    // each is one state frame with its versions; a lost one is healed by the
    // next or by sync, as for any gap.
    const reader = wt.datagrams.readable.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || conn !== app.ws) return;
        app.datagrams += 1;
        handleText(decoder.decode(value));
      }
    } catch (_) {
      /* the session ended */
    }
  }

  function handleText(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (_) {
      showError("got a frame that is not JSON");
      return;
    }
    handle(frame);
  }

  function connectWs() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    let ws;
    try {
      ws = new WebSocket(`${proto}//${location.host}/ws`);
    } catch (err) {
      showError(`cannot open the socket: ${err}`);
      scheduleReconnect(1006, "");
      return;
    }
    app.ws = ws;
    app.transport = "websocket";
    app.welcomed = false;
    app.helloExpired = false;
    setConn("connecting", app.attempt ? `reconnecting… (try ${app.attempt + 1})` : "connecting…");
    ws.onopen = () => {
      if (ws !== app.ws) return;
      send({ type: "hello", token: app.token, v: 1, ref: nextRef() });
    };
    ws.onmessage = (ev) => {
      if (ws !== app.ws) return;
      if (typeof ev.data !== "string") {
        showError("got a binary frame; this page speaks JSON only");
        return;
      }
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch (_) {
        showError("got a frame that is not JSON");
        return;
      }
      handle(frame);
    };
    ws.onclose = (ev) => {
      if (ws !== app.ws) return;
      app.ws = null;
      onClosed(ev.code, ev.reason);
    };
  }

  /** What to do after a close with `code`: reconnect, renew_token or give_up. */
  function closeAdvice(code) {
    if (code >= 4000 && code < 4100) {
      // An expired token at hello closes with 4200 (older servers: 4001); a fresh token fixes that.
      return app.helloExpired ? "renew_token" : "give_up";
    }
    if (code >= 4100 && code < 4200) return "reconnect";
    if (code >= 4200 && code < 4300) return "renew_token";
    if (code === 1000) return "give_up";
    return "reconnect"; // 1001 going away, 1006 abnormal, 1011, 1009 ...
  }

  function onClosed(code, reason) {
    for (const room of app.rooms.values()) {
      room.joined = false;
      room.syncing = false;
    }
    $("room-view").dataset.joined = "false";
    if (!app.wanted) {
      setConn("idle", "not connected");
      return;
    }
    const advice = closeAdvice(code);
    const why = `closed ${code}${reason ? ` (${reason})` : ""}`;
    if (advice === "give_up") {
      app.wanted = false;
      setConn("failed", `disconnected: ${why}`);
      showError(`connection ${why}; not reconnecting. Leave and join again.`);
      return;
    }
    if (advice === "renew_token") {
      renewThenReconnect(why);
      return;
    }
    scheduleReconnect(code, why);
  }

  function backoffDelay() {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** app.attempt);
    return Math.round(base / 2 + Math.random() * (base / 2)); // jitter in [base/2, base]
  }

  function scheduleReconnect(code, why) {
    if (!app.wanted) return;
    const delay = backoffDelay();
    app.attempt += 1;
    setConn("waiting", `${why || "disconnected"}; reconnecting in ${(delay / 1000).toFixed(1)} s`);
    clearTimeout(app.reconnectTimer);
    app.reconnectTimer = setTimeout(connect, delay);
  }

  async function renewThenReconnect(why) {
    setConn("waiting", `${why}; renewing the token…`);
    try {
      app.token = await fetchToken(app.ident);
    } catch (err) {
      showError(String(err.message || err));
      // Retry the renewal later, with backoff.
      const delay = backoffDelay();
      app.attempt += 1;
      clearTimeout(app.reconnectTimer);
      app.reconnectTimer = setTimeout(() => app.wanted && renewThenReconnect(why), delay);
      return;
    }
    if (app.wanted) scheduleReconnect(4200, `${why}; token renewed`);
  }

  // ------------------------------------------------------------ frames in
  function handle(frame) {
    if (!isObject(frame)) return;
    switch (frame.type) {
      case "batch":
        if (Array.isArray(frame.frames)) {
          const touched = new Set();
          for (const f of frame.frames) {
            if (isObject(f) && f.type === "state") {
              onState(f, true);
              const room = app.rooms.get(f.room);
              if (room) touched.add(room);
            } else {
              handle(f);
            }
          }
          for (const room of touched) if (room.joined) checkGap(room);
        }
        break;
      case "welcome":
        onWelcome(frame);
        break;
      case "joined":
        onJoined(frame);
        break;
      case "action":
        onAction(frame);
        break;
      case "state":
        onState(frame);
        break;
      case "sync":
        onSync(frame);
        break;
      case "state_mode":
        onStateMode(frame);
        break;
      case "online":
        onOnline(frame);
        break;
      case "presence":
        onPresence(frame);
        break;
      case "left":
        onLeft(frame);
        break;
      case "moderated":
        onModerated(frame);
        break;
      case "retract":
        onRetract(frame);
        break;
      case "peer":
        onPeer(frame);
        break;
      case "peer_ack":
        onPeerAck(frame);
        break;
      case "error":
        onError(frame);
        break;
      default:
        break; // pong, and anything newer: nothing to do
    }
  }

  function onWelcome(frame) {
    app.welcomed = true;
    app.attempt = 0;
    app.me = frame.user || { id: app.ident.user, name: app.ident.name, role: app.ident.role };
    setConn("online", "online");
    $("conn-status").dataset.transport = app.transport || "";
    const me = $("me");
    // The role in the joined room (the token grants it for that room only).
    app.roomRole = app.ident.role;
    me.textContent = `${app.me.name} (${app.me.id}) · ${app.roomRole}`;
    me.hidden = false;
    $("host-panel").hidden = !ELEVATED.has(app.roomRole);
    for (const room of app.rooms.values()) sendJoin(room);
    for (const msg of app.outbox.values()) sendPeerFrame(msg);
  }

  function sendJoin(room) {
    const frame = { type: "join", room: room.name, ref: nextRef() };
    if (Object.keys(room.versions).length) frame.known = { ...room.versions };
    if (room.epoch) frame.epoch = room.epoch;
    send(frame);
  }

  function setSection(room, section, partial, value) {
    room.versions[section] = partial;
    room.values[section] = value;
  }

  // Versions from another store epoch (the server's state started over) mean
  // nothing: forget them; the reply then holds every section.
  function takeEpoch(room, frame) {
    if (typeof frame.epoch !== "string") return;
    if (room.epoch && room.epoch !== frame.epoch) {
      room.versions = {};
      room.values = {};
      room.total = 0;
    }
    room.epoch = frame.epoch;
  }

  function onJoined(frame) {
    const room = app.rooms.get(frame.room);
    if (!room) return;
    room.joined = true;
    takeEpoch(room, frame);
    applyStateMode(room, frame);
    room.total = typeof frame.total === "number" ? frame.total : room.total;
    // The reply is authoritative: it holds every section whose version differs
    // from what we said we know, newer or (after a server reset) older.
    for (const s of frame.sections || []) {
      if (isObject(s) && typeof s.section === "string") {
        setSection(room, s.section, s.partial, s.value);
      }
    }
    if (typeof frame.members === "number") room.online = frame.members;
    room.presenceCapped = frame.presence_capped === true;
    room.presence = null;
    if (Array.isArray(frame.presence)) {
      room.presence = new Map();
      for (const m of frame.presence) if (isObject(m)) room.presence.set(m.id, m);
    }
    if (isObject(frame.versions)) {
      const versions = frame.versions;
      // Sections the room no longer has are gone.
      for (const s of Object.keys(room.versions)) {
        if (!(s in versions)) {
          delete room.versions[s];
          delete room.values[s];
        }
      }
      // Every section must now be at the partial the server names; if not (a
      // change raced the join), ask for what differs.
      const differs = Object.keys(versions).some((s) => room.versions[s] !== versions[s]);
      if (differs) requestSync(room);
    }
    if (room.name === app.current) {
      $("room-view").dataset.joined = "true";
      renderRoom(room);
      $("online-count").textContent = String(room.online);
      renderPresence(room);
    }
  }

  // presence: the joins and leaves of one tick, or "capped" (counts only until
  // a frame brings the whole list again as joins). See docs/PROTOCOL.md.
  function onPresence(frame) {
    const room = app.rooms.get(frame.room);
    if (!room) return;
    if (frame.capped === true) {
      room.presence = null;
      room.presenceCapped = true;
    } else {
      if (!room.presence) room.presence = new Map();
      room.presenceCapped = false;
      for (const id of frame.leaves || []) room.presence.delete(id);
      for (const m of frame.joins || []) if (isObject(m)) room.presence.set(m.id, m);
    }
    if (room.name === app.current) renderPresence(room);
  }

  function renderPresence(room) {
    const panel = $("presence-panel");
    const list = $("presence-list");
    const kept = room.presence !== null || room.presenceCapped;
    panel.hidden = !kept;
    list.replaceChildren();
    $("presence-capped").hidden = !room.presenceCapped;
    if (!kept) return;
    if (room.presenceCapped) {
      $("presence-count").textContent = `(${room.online})`;
      return;
    }
    const members = [...room.presence.values()].sort(
      (a, b) => String(a.name).localeCompare(String(b.name)));
    $("presence-count").textContent = `(${members.length})`;
    for (const m of members) {
      const li = el("li", "presence-member");
      li.dataset.testid = "presence-member";
      li.dataset.user = String(m.id);
      li.dataset.role = String(m.role);
      li.append(el("span", "presence-name", String(m.name)),
                el("span", `presence-role role-${m.role}`, String(m.role)));
      if (mayModerate(m)) li.append(moderationControls(room, m));
      list.append(li);
    }
  }

  // ------------------------------------------------------------ moderation
  // A host or moderator of the room gets mute / kick / ban on each member it
  // may moderate (never itself, never a host; a moderator not another
  // moderator: the server refuses those anyway, docs/MODERATION.md).
  const MUTE_SECONDS = 300;
  const BAN_SECONDS = 3600;

  function mayModerate(member) {
    if (!ELEVATED.has(app.roomRole) || !app.me || member.id === app.me.id) return false;
    if (member.role === "host") return false;
    return !(member.role === "moderator" && app.roomRole !== "host");
  }

  function moderationControls(room, member) {
    const box = el("span", "mod-controls");
    const ops = [["mute", "Mute", MUTE_SECONDS], ["kick", "Kick", null], ["ban", "Ban", BAN_SECONDS]];
    for (const [op, label, seconds] of ops) {
      const b = el("button", `mod-${op} ghost small`, label);
      b.type = "button";
      b.dataset.testid = `mod-${op}`;
      b.title = seconds ? `${label} ${member.name} for ${seconds / 60} minutes` : `${label} ${member.name}`;
      b.addEventListener("click", () => moderate(room, op, { user: member.id, seconds }));
      box.append(b);
    }
    return box;
  }

  function moderate(room, op, target) {
    const frame = { type: "moderate", room: room.name, op, ref: nextRef() };
    if (target.user) frame.user = target.user;
    if (target.id) frame.id = target.id;
    if (target.seconds) frame.seconds = target.seconds;
    frame.reason = "from the demo page";
    app.refs.set(frame.ref, { kind: "moderate", room: room.name, op });
    send(frame);
  }

  function onModerated(frame) {
    if (frame.ref !== undefined) app.refs.delete(frame.ref);
    const who = frame.user ? (memberName(frame.room, frame.user) || frame.user) : "";
    const what = {
      ban: `banned ${who}`, unban: `lifted the ban on ${who}`, mute: `muted ${who}`,
      unmute: `unmuted ${who}`, kick: `kicked ${who}`, retract: "removed a message",
    }[frame.op] || `${frame.op} ${who}`;
    notice(`You ${what}${frame.until ? ` until ${fmtTime(frame.until)}` : ""}.`, "moderation");
  }

  function memberName(roomName, id) {
    const room = app.rooms.get(roomName);
    const m = room && room.presence ? room.presence.get(id) : null;
    return m ? String(m.name) : null;
  }

  // The server took us out of a room: a kick, a ban, or the room closed.
  function onLeft(frame) {
    const room = app.rooms.get(frame.room);
    if (!room || !frame.reason) return; // the answer to our own leave
    const why = { kicked: "You were removed from the room",
                  banned: "You are banned from this room", closed: "The room was closed" }
      [frame.reason] || `You left the room (${frame.reason})`;
    room.joined = false;
    app.rooms.delete(frame.room); // not rejoined on reconnect
    const extra = frame.until ? ` until ${fmtTime(frame.until)}` : "";
    showError(`${why}${extra}.`, "error");
    const line = $("error-line");
    line.dataset.left = String(frame.reason);
  }

  function onRetract(frame) {
    for (const li of document.querySelectorAll('[data-testid="feed-item"]')) {
      if (li.dataset.id === frame.id) li.remove();
    }
  }

  function notice(text, kind) {
    const feed = $("feed");
    const li = el("li", `feed-item kind-${kind}`);
    li.dataset.testid = "feed-item";
    li.dataset.kind = kind;
    li.appendChild(el("time", "ts", fmtTime(Date.now() / 1000)));
    li.appendChild(el("span", "text", text));
    feed.appendChild(li);
    feed.scrollTop = feed.scrollHeight;
  }

  function onState(frame, inBatch) {
    const room = app.rooms.get(frame.room);
    if (!room || !room.joined || typeof frame.section !== "string") return;
    const known = room.versions[frame.section] || 0;
    if (typeof frame.partial === "number" && frame.partial > known) {
      setSection(room, frame.section, frame.partial, frame.value);
    }
    if (typeof frame.total === "number" && frame.total > room.total) room.total = frame.total;
    // The invariant total == sum(partials) says whether anything is missing.
    // Inside a batch the server may have skipped superseded values of a
    // section (latest wins), so the check waits for the end of the batch.
    if (!inBatch) checkGap(room);
    if (room.name === app.current) renderRoom(room);
  }

  function checkGap(room) {
    const sum = Object.values(room.versions).reduce((a, b) => a + b, 0);
    if (sum !== room.total) requestSync(room); // a change did not reach us
  }


  // ------------------------------------------------------- state by polling
  // In a huge room the server stops pushing state and says "poll": the page
  // then reads the room's head through the CDN every `interval` seconds and
  // fetches only the sections whose version moved, at their immutable URLs
  // (the browser's HTTP cache and the CDN do the rest). `?poll=1` forces it.
  const forcePoll = new URLSearchParams(location.search).get("poll") === "1";

  function onStateMode(frame) {
    const room = app.rooms.get(frame.room);
    if (!room) return;
    applyStateMode(room, frame);
  }

  function applyStateMode(room, frame) {
    const poll = frame.state_mode === "poll" ? frame.poll
      : forcePoll ? { head: `/v1/rooms/${encodeURIComponent(room.name)}/state`, interval: 1 }
      : null;
    if (poll && isObject(poll) && typeof poll.head === "string") {
      if (!room.poll) {
        room.poll = { head: poll.head, interval: Math.max(0.5, Number(poll.interval) || 1) };
        schedulePoll(room, 0);
      }
    } else if (room.poll) {
      clearTimeout(room.poll.timer);
      room.poll = null;
      if (room.joined) requestSync(room); // back to push: catch up once
    }
    if (room.name === app.current) {
      $("room-view").dataset.stateMode = room.poll ? "poll" : "push";
    }
  }

  function schedulePoll(room, delayS) {
    room.poll.timer = setTimeout(() => pollOnce(room), delayS * 1000);
  }

  async function pollOnce(room) {
    const poll = room.poll;
    if (!poll || app.rooms.get(room.name) !== room) return;
    try {
      const r = await fetch(poll.head, { headers: { Accept: "application/json" } });
      if (r.ok) {
        const head = await r.json();
        takeEpoch(room, head);
        const moved = Object.keys(head.versions || {})
          .filter((s) => room.versions[s] !== head.versions[s]);
        await Promise.all(moved.map(async (s) => {
          const rs = await fetch(head.sections[s], { headers: { Accept: "application/json" } });
          if (!rs.ok) return;
          const body = await rs.json();
          if (body.partial > (room.versions[s] || 0)) setSection(room, s, body.partial, body.value);
        }));
        room.total = Math.max(room.total, head.total);
        if (moved.length && room.name === app.current) renderRoom(room);
      }
    } catch (_) {
      // The network hiccuped: the next round tries again.
    }
    if (room.poll === poll) schedulePoll(room, poll.interval);
  }

  function requestSync(room) {
    if (room.syncing) {
      room.syncAgain = true;
      return;
    }
    room.syncing = true;
    room.syncAgain = false;
    const frame = { type: "sync", room: room.name, known: { ...room.versions }, ref: nextRef() };
    if (room.epoch) frame.epoch = room.epoch;
    send(frame);
  }

  function onSync(frame) {
    const room = app.rooms.get(frame.room);
    if (!room) return;
    takeEpoch(room, frame);
    // Frames arrive in order on one connection, so the reply is at least as new
    // as any state frame before it: take its sections as they are.
    for (const s of frame.sections || []) {
      if (isObject(s) && typeof s.section === "string") {
        setSection(room, s.section, s.partial, s.value);
      }
    }
    if (typeof frame.total === "number") room.total = Math.max(room.total, frame.total);
    room.syncing = false;
    if (room.syncAgain) requestSync(room);
    if (room.name === app.current) renderRoom(room);
  }

  function onOnline(frame) {
    const room = app.rooms.get(frame.room);
    if (!room || typeof frame.count !== "number") return;
    room.online = frame.count;
    if (room.name === app.current) $("online-count").textContent = String(frame.count);
    if (room.name === app.current && room.presenceCapped) renderPresence(room);
  }

  // An agent's reply streams as agent.delta actions (one reply_id) and ends
  // with agent.say: one feed line per reply, its text growing as it streams.
  const agentLines = new Map(); // reply_id -> feed <li> while the reply streams

  function onAgentAction(frame) {
    const body = isObject(frame.body) ? frame.body : {};
    const id = typeof body.reply_id === "string" ? body.reply_id : "";
    let li = agentLines.get(id);
    if (!li) {
      li = renderAction({ ...frame, kind: "agent", body: { text: "" } });
      li.dataset.testid = "agent-reply";
      li.dataset.replyId = id;
      li.classList.add("kind-agent", "streaming");
      if (body.backend) {
        li.dataset.backend = String(body.backend);
        if (body.backend === "scripted") {
          li.querySelector(".who").appendChild(el("span", "label", "scripted"));
        }
      }
      agentLines.set(id, li);
      const feed = $("feed");
      feed.appendChild(li);
      while (feed.children.length > MAX_FEED) feed.removeChild(feed.firstChild);
      feed.scrollTop = feed.scrollHeight;
    }
    const text = li.querySelector(".text");
    if (frame.kind === "agent.delta") {
      text.textContent += typeof body.text === "string" ? body.text : "";
      return;
    }
    // agent.say: the whole reply is authoritative (deltas may have been shed).
    agentLines.delete(id);
    if (body.cancelled) {
      // A reply that lost to a newer trigger (or went stale) is not news:
      // it disappears rather than show an internal status.
      li.remove();
      return;
    }
    li.classList.remove("streaming");
    li.dataset.done = "1";
    if (body.backend === "scripted" && !li.querySelector(".label")) {
      li.querySelector(".who").appendChild(el("span", "label", "scripted"));
    }
    text.textContent = typeof body.text === "string" ? body.text : "";
    if (body.error) {
      li.classList.add("agent-error");
      li.appendChild(el("span", "agent-note", ` (${body.error})`));
    }
    while (agentLines.size > 50) agentLines.delete(agentLines.keys().next().value);
  }

  function onAction(frame) {
    if (frame.room !== app.current) return;
    if (frame.kind === "agent.delta" || frame.kind === "agent.say") {
      onAgentAction(frame);
      return;
    }
    const feed = $("feed");
    const nearBottom = feed.scrollHeight - feed.scrollTop - feed.clientHeight < 40;
    feed.appendChild(renderAction(frame));
    while (feed.children.length > MAX_FEED) feed.removeChild(feed.firstChild);
    if (nearBottom) feed.scrollTop = feed.scrollHeight;
  }

  function renderAction(frame) {
    const kind = typeof frame.kind === "string" ? frame.kind : "custom";
    const from = isObject(frame.from) ? frame.from : {};
    const body = frame.body;
    const li = el("li", `feed-item kind-${kind.replace(/[^a-z0-9_-]/g, "_")}`);
    li.dataset.testid = "feed-item";
    li.dataset.kind = kind;
    if (typeof frame.seq === "number") li.dataset.seq = String(frame.seq);
    if (typeof frame.id === "string") li.dataset.id = frame.id;
    if (app.me && from.id === app.me.id) li.classList.add("mine");
    li.appendChild(el("time", "ts", fmtTime(frame.ts)));
    const who = el("span", "who", from.name || from.id || "someone");
    who.title = from.id || "";
    if (from.role && from.role !== "viewer") who.appendChild(el("span", "role", from.role));
    li.appendChild(who);
    let text;
    if (kind === "comment") {
      text = isObject(body) ? body.text : "";
    } else if (kind === "gift") {
      const gift = isObject(body) ? String(body.gift) : "gift";
      const count = isObject(body) ? body.count : 1;
      text = `sent ${GIFT_ICONS[gift] || "✦"} ${gift}${count > 1 ? ` ×${count}` : ""}`;
    } else if (kind === "like") {
      const count = isObject(body) ? body.count : 1;
      text = `liked ♥${count > 1 ? ` ×${count}` : ""}`;
    } else {
      text = `[${kind}] ${isObject(body) && typeof body.text === "string"
        ? body.text : JSON.stringify(body)}`;
    }
    li.appendChild(el("span", "text", text));
    if (ELEVATED.has(app.roomRole) && typeof frame.id === "string" && frame.type === "action") {
      const b = el("button", "mod-retract ghost small", "×");
      b.type = "button";
      b.dataset.testid = "mod-retract";
      b.title = "Remove this message for everyone";
      const room = app.rooms.get(frame.room);
      b.addEventListener("click", () => room && moderate(room, "retract", { id: frame.id }));
      li.appendChild(b);
    }
    return li;
  }

  function onPeer(frame) {
    const seq = frame.seq;
    if (typeof seq !== "number") return;
    if (!app.peerSeen.has(seq)) {
      app.peerSeen.add(seq);
      const from = isObject(frame.from) ? frame.from : {};
      const body = frame.body;
      const text = isObject(body) && typeof body.text === "string"
        ? body.text : JSON.stringify(body);
      addPm("in", from.name || from.id || "?", from.id || "", text, `#${seq}`, frame.ts);
    }
    // Acknowledge, so the message is not redelivered on the next connect.
    if (seq > app.peerAcked) {
      app.peerAcked = seq;
      send({ type: "peer_ack", upto: seq });
    }
  }

  function onPeerAck(frame) {
    app.outbox.delete(frame.id);
    if (frame.ref !== undefined) app.refs.delete(frame.ref);
    const li = document.querySelector(`[data-pm-id="${CSS.escape(String(frame.id))}"]`);
    if (li) {
      li.querySelector(".pm-status").textContent = `sent ✓ #${frame.seq}`;
      li.dataset.status = "sent";
    }
  }

  function onError(frame) {
    const what = frame.ref !== undefined ? app.refs.get(frame.ref) : undefined;
    if (frame.ref !== undefined) app.refs.delete(frame.ref);
    if (!app.welcomed && frame.code === "unauthorized" && frame.expired) {
      app.helloExpired = true;
    }
    if (what && what.kind === "peer") {
      const msg = app.outbox.get(what.id);
      if (msg && frame.code === "rate_limited") {
        // Same id again later: the server deduplicates by id.
        const wait = Math.max(0.2, Number(frame.retry_after) || 1);
        setTimeout(() => app.outbox.has(what.id) && sendPeerFrame(msg), wait * 1000);
      } else if (msg) {
        app.outbox.delete(what.id);
        const li = document.querySelector(`[data-pm-id="${CSS.escape(what.id)}"]`);
        if (li) {
          li.querySelector(".pm-status").textContent = `failed: ${frame.code}`;
          li.dataset.status = "failed";
        }
      }
    }
    if (frame.advice === "resync") {
      const room = app.rooms.get((what && what.room) || frame.room || app.current);
      if (room && room.joined) requestSync(room);
    }
    let text = describeError(frame);
    if (frame.code === "version_conflict" && what && what.kind === "state") {
      text = `someone else changed "${what.section}" meanwhile; reloaded it, please try again`;
    }
    showError(text, frame.code === "rate_limited" ? "warn" : "error");
  }

  // ------------------------------------------------------------ rendering
  function renderRoom(room) {
    const meta = isObject(room.values.meta) ? room.values.meta : {};
    const pinned = isObject(room.values.pinned) ? room.values.pinned : {};
    const title = typeof meta.title === "string" && meta.title ? meta.title : room.name;
    $("room-title").textContent = title;
    document.title = `${title} · liveroom`;
    const pinText = typeof pinned.text === "string" ? pinned.text : "";
    $("pinned").textContent = pinText;
    $("pinned-box").hidden = !pinText;
    $("state-version").textContent = `· state v${room.total}`;
    renderScoreboard(room.values.scoreboard);
    renderAgentStages(room.values);
    renderWorld(room.values);
    refreshInput($("title-input"), typeof meta.title === "string" ? meta.title : "");
    refreshInput($("pinned-input"), pinText);
  }

  /** The characters' stages (sections stage.<name>): mood, emote, speaking. */
  function renderAgentStages(values) {
    const box = $("agent-stages");
    const chips = [];
    for (const [section, value] of Object.entries(values).sort()) {
      if (!section.startsWith("stage.") || !isObject(value)) continue;
      const name = section.slice(6);
      const chip = el("span", "agent-stage");
      chip.dataset.testid = `agent-stage-${name}`;
      chip.appendChild(el("b", "", typeof value.name === "string" ? value.name : name));
      for (const field of ["mood", "emote", "position"]) {
        if (typeof value[field] !== "string" || !value[field]) continue;
        const part = el("span", `stage-${field}`, value[field]);
        part.dataset.testid = `agent-${field}-${name}`;
        chip.appendChild(part);
      }
      if (value.speaking === true) chip.classList.add("speaking");
      chips.push(chip);
    }
    box.replaceChildren(...chips);
    box.hidden = chips.length === 0;
  }

  /** The characters' places when a world is on (lossy sections
   *  positions.<name>: x and y in 0..1, state idle/walk/react, facing). */
  function renderWorld(values) {
    const box = $("agent-world");
    const dots = [];
    for (const [section, value] of Object.entries(values).sort()) {
      if (!section.startsWith("positions.") || !isObject(value)) continue;
      const name = section.slice(10);
      const x = Number(value.x), y = Number(value.y);
      if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
      const stage = isObject(values[`stage.${name}`]) ? values[`stage.${name}`] : {};
      const dot = el("span", "agent-dot", typeof stage.name === "string"
        ? stage.name.split(" ")[0] : name);
      dot.dataset.testid = `agent-pos-${name}`;
      dot.dataset.state = typeof value.state === "string" ? value.state : "";
      dot.style.left = `${Math.min(1, Math.max(0, x)) * 100}%`;
      dot.style.bottom = `${Math.min(1, Math.max(0, y)) * 100}%`;
      if (value.facing === -1) dot.classList.add("facing-left");
      dots.push(dot);
    }
    box.replaceChildren(...dots);
    box.hidden = dots.length === 0;
  }

  /** Show the current value in a host input unless the host is editing it. */
  function refreshInput(input, value) {
    const edited = input.value !== (input.dataset.shown || "");
    if (edited) return; // unsaved edit: keep it (the write is compare-and-set anyway)
    input.value = value;
    input.dataset.shown = value;
  }

  function renderScoreboard(board) {
    const dl = $("scoreboard");
    dl.replaceChildren();
    if (!isObject(board) || !Object.keys(board).length) {
      dl.appendChild(el("div", "empty", "nothing yet"));
      return;
    }
    for (const [key, value] of Object.entries(board)) {
      const row = el("div", "score");
      row.dataset.key = key;
      row.appendChild(el("dt", "", key));
      row.appendChild(el("dd", "", typeof value === "object" ? JSON.stringify(value) : value));
      dl.appendChild(row);
    }
  }

  function addPm(dir, who, whoId, text, status, ts, id) {
    const list = $("pm-list");
    const li = el("li", `pm-item ${dir}`);
    li.dataset.testid = "pm-item";
    li.dataset.dir = dir;
    if (id) li.dataset.pmId = id;
    li.appendChild(el("span", "pm-who", dir === "in" ? `from ${who}` : `to ${who}`));
    if (dir === "in" && whoId) {
      li.title = "click to reply";
      li.addEventListener("click", () => {
        $("pm-to").value = whoId;
        $("pm-text").focus();
      });
    }
    li.appendChild(el("span", "pm-text", text));
    const meta = el("span", "pm-meta");
    meta.appendChild(el("time", "ts", fmtTime(ts)));
    meta.appendChild(el("span", "pm-status", status));
    li.appendChild(meta);
    list.appendChild(li);
    while (list.children.length > MAX_PM) list.removeChild(list.firstChild);
    list.scrollTop = list.scrollHeight;
  }

  // ------------------------------------------------------------ frames out
  function currentRoom() {
    const room = app.rooms.get(app.current);
    if (!room || !room.joined || !app.ws) {
      showError("not connected to the room yet; try again in a moment", "warn");
      return null;
    }
    return room;
  }

  function sendAction(kind, body) {
    const room = currentRoom();
    if (!room) return false;
    return send({ type: "action", room: room.name, kind, body, ref: nextRef() });
  }

  function writeState(section, value) {
    const room = currentRoom();
    if (!room) return false;
    const ref = nextRef();
    app.refs.set(ref, { kind: "state", room: room.name, section });
    // Compare-and-set against the version we edited, so that a concurrent
    // change is not overwritten unseen.
    return send({ type: "state", room: room.name, section, value,
                  expect: room.versions[section] || 0, ref });
  }

  function sendPeerFrame(msg) {
    const ref = nextRef();
    app.refs.set(ref, { kind: "peer", id: msg.id });
    return send({ ...msg, ref });
  }

  // ------------------------------------------------------------ UI wiring
  function showRoomView(show) {
    $("join-view").hidden = show;
    $("room-view").hidden = !show;
    $("leave").hidden = !show;
  }

  function resetRoomView(roomName) {
    $("feed").replaceChildren();
    $("pm-list").replaceChildren();
    $("room-title").textContent = "…";
    $("room-name").textContent = roomName;
    $("pinned").textContent = "";
    $("pinned-box").hidden = true;
    $("online-count").textContent = "0";
    $("state-version").textContent = "";
    $("scoreboard").replaceChildren();
    $("agent-stages").replaceChildren();
    $("agent-world").replaceChildren();
    $("host-panel").hidden = true;
    $("room-view").dataset.joined = "false";
    for (const id of ["title-input", "pinned-input"]) {
      $(id).value = "";
      $(id).dataset.shown = "";
    }
  }

  function wireJoinForm() {
    const form = $("join-form");
    const name = $("join-name");
    const user = $("join-user");
    let userEdited = false;
    const params = new URLSearchParams(location.search);
    if (params.get("name")) name.value = params.get("name");
    if (params.get("user")) {
      user.value = params.get("user");
      userEdited = true;
    }
    if (params.get("room")) $("join-room").value = params.get("room");
    if (params.get("role")) $("join-role").value = params.get("role");
    if (!userEdited && name.value) user.value = deriveUserId(name.value);

    name.addEventListener("input", () => {
      if (!userEdited) user.value = deriveUserId(name.value);
    });
    user.addEventListener("input", () => {
      userEdited = user.value !== "";
    });

    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const err = $("join-error");
      err.textContent = "";
      const ident = {
        name: name.value.trim(),
        user: user.value.trim() || deriveUserId(name.value),
        role: $("join-role").value,
        room: $("join-room").value.trim(),
      };
      const roomName = ident.room;
      if (!ident.name) {
        err.textContent = "Please enter a display name.";
        return;
      }
      if (!USER_RE.test(ident.user)) {
        err.textContent = "The user id must be 1-64 of A-Z a-z 0-9 _ . : @ -";
        return;
      }
      if (!ROOM_RE.test(roomName)) {
        err.textContent = "The room must be 1-64 of A-Z a-z 0-9 _ . : -";
        return;
      }
      const button = $("join-submit");
      button.disabled = true;
      try {
        app.token = await fetchToken(ident);
      } catch (e) {
        err.textContent = String(e.message || e);
        return;
      } finally {
        button.disabled = false;
      }
      app.ident = ident;
      app.me = null;
      app.rooms = new Map([[roomName, newRoom(roomName)]]);
      app.current = roomName;
      app.outbox.clear();
      app.refs.clear();
      app.peerSeen.clear();
      app.peerAcked = 0;
      app.attempt = 0;
      app.wanted = true;
      resetRoomView(roomName);
      showRoomView(true);
      connect();
      $("comment-input").focus();
    });
  }

  function leave() {
    app.wanted = false;
    clearTimeout(app.reconnectTimer);
    const ws = app.ws;
    app.ws = null;
    if (ws) ws.close(1000, "left");
    app.rooms.clear();
    app.current = null;
    $("me").hidden = true;
    setConn("idle", "not connected");
    showRoomView(false);
    document.title = "liveroom demo";
  }

  function wireRoom() {
    $("comment-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const input = $("comment-input");
      const text = input.value.trim();
      if (!text) return;
      if (sendAction("comment", { text })) input.value = "";
    });
    $("gift-send").addEventListener("click", () => {
      const count = Math.max(1, Math.min(9999, parseInt($("gift-count").value, 10) || 1));
      sendAction("gift", { gift: $("gift-select").value, count });
    });
    $("like-send").addEventListener("click", () => sendAction("like", { count: 1 }));

    $("title-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const room = app.rooms.get(app.current);
      const input = $("title-input");
      const title = input.value.trim();
      if (!room || !title) return;
      // Keep the other fields of meta (host, ...): write the whole section.
      const meta = isObject(room.values.meta) ? { ...room.values.meta } : {};
      meta.title = title;
      if (writeState("meta", meta)) input.dataset.shown = input.value;
    });
    $("pinned-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const room = app.rooms.get(app.current);
      const input = $("pinned-input");
      if (!room) return;
      const pinned = isObject(room.values.pinned) ? { ...room.values.pinned } : {};
      pinned.text = input.value.trim();
      if (writeState("pinned", pinned)) input.dataset.shown = input.value;
    });

    $("pm-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const to = $("pm-to").value.trim();
      const textInput = $("pm-text");
      const text = textInput.value.trim();
      if (!USER_RE.test(to)) {
        showError("private message: the recipient must be a user id", "warn");
        return;
      }
      if (!text) return;
      const msg = { type: "peer", to, id: randomId("pm"), body: { text } };
      app.outbox.set(msg.id, msg);
      const sent = app.welcomed && sendPeerFrame(msg);
      addPm("out", to, to, text, sent ? "sending…" : "queued", undefined, msg.id);
      textInput.value = "";
    });

    $("leave").addEventListener("click", leave);
  }

  wireJoinForm();
  wireRoom();
})();
