/* liveroom demo page: the page's UI, plain JS, no build step.
 *
 * Everything on the wire is the JavaScript SDK, liveroom-client (clients/js,
 * served by the edge at /sdk/): hello with a token, the room joined and
 * resumed with its versions after every reconnect (backoff with jitter, the
 * close code's advice), sync on a gap in the versions, polling of the state
 * when the server says "poll", peer messages handed over once and
 * acknowledged, outgoing ones retried until stored. The page speaks JSON,
 * over WebTransport (HTTP/3 over QUIC, when the browser has it and the edge
 * offers it at GET /v1/quic; lossy state as datagrams) or else over /ws
 * (`?ws=1` forces it). What is left here is the page: forms, feed, members,
 * private messages and the host's controls.
 */
import { connect, quicOffer, tokenExpiry } from "/sdk/index.js";
import {
  $, GIFT_ICONS, MAX_FEED, el, isObject, fmtTime, deriveUserId, randomId, setConn, showError,
  describeError, renderPresence, notice, showAgentAction, renderRoom, addPm,
} from "./view.js";

const USER_RE = /^[A-Za-z0-9_.:@-]{1,64}$/;
const ROOM_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 5000;
const ELEVATED = new Set(["host", "moderator"]);
// A token this close to its expiry is replaced by a fresh one on the next connect (the
// SDK reconnects on a fresh token up to 60 s before the expiry).
const TOKEN_MARGIN_MS = 120000;

const params = new URLSearchParams(location.search);

const app = {
  ident: null,       // {user, name, role, room} the token is for
  token: null,
  client: null,      // the SDK's Client while the user is in a room
  room: null,        // the SDK's Room on screen
  me: null,          // welcome.user: {id, name, role}
  roomRole: null,    // the role in the room on screen
  attempt: 0,        // failed connects since the last welcome
};

// For tests and curious people: which transport, how many datagrams.
window.liveroomStats = () => ({
  transport: app.client ? app.client.transport : null,
  datagrams: app.client ? app.client.datagrams : 0,
});

// ------------------------------------------------------------ connection
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

/** The SDK asks on every connect: the token in hand, or a fresh one near its end. */
async function currentToken() {
  const exp = app.token ? tokenExpiry(app.token) : null;
  if (!app.token || (exp !== null && exp - Date.now() < TOKEN_MARGIN_MS)) {
    app.token = await fetchToken(app.ident);
  }
  return app.token;
}

/** Connect (the SDK keeps the connection) and join `roomName`. */
function start(roomName) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const client = connect(`${proto}//${location.host}/ws`, {
    codec: "json",
    getToken: currentToken,
    minDelay: BACKOFF_BASE_MS,
    maxDelay: BACKOFF_MAX_MS,
    transport: params.get("ws") === "1" ? "websocket" : "auto",
    // Asked on every connect: after a restart the port or the certificate may differ.
    webtransportUrl: () => quicOffer(location.href),
  });
  app.client = client;
  const mine = (fn) => (value) => { if (app.client === client) fn(value); };
  client.on("connected", mine(onConnected));
  client.on("disconnected", mine((close) => {
    $("room-view").dataset.joined = "false";
    const why = `closed ${close.code}${close.reason ? ` (${close.reason})` : ""}`;
    setConn("waiting", `${why}; reconnecting…`);
  }));
  client.on("connect_error", mine(() => {
    app.attempt += 1;
    setConn("waiting", `reconnecting… (try ${app.attempt + 1})`);
  }));
  client.on("closed", mine((close) => {
    $("room-view").dataset.joined = "false";
    const why = `closed ${close.code}${close.reason ? ` (${close.reason})` : ""}`;
    setConn("failed", `disconnected: ${why}`);
    showError(`connection ${why}; not reconnecting. Leave and join again.`);
  }));
  client.on("peer", mine(onPeer));
  client.on("server_error", mine((err) => {
    showError(describeError(err), err.code === "rate_limited" ? "warn" : "error");
  }));
  client.on("error", mine((err) => showError(String((err && err.message) || err))));
  setConn("connecting", "connecting…");

  const joining = client.join(roomName);
  joining.catch(() => {}); // a refusal is shown by the room's "error"
  const room = client.rooms.get(roomName);
  app.room = room;
  const here = (fn) => (value) => { if (app.room === room) fn(value); };
  room.on("joined", here(() => onJoined(room)));
  room.on("state", here(() => renderRoom(room)));
  room.on("state_mode", here(() => { $("room-view").dataset.stateMode = room.stateMode; }));
  room.on("action", here(onAction));
  room.on("online", here((count) => {
    $("online-count").textContent = String(count);
    if (room.presenceCapped) renderPresence(room, presenceControls);
  }));
  room.on("presence", here(() => renderPresence(room, presenceControls)));
  room.on("retract", here(onRetract));
  room.on("left", here(onLeft));
  room.on("error", here((err) => {
    showError(describeError(err), err.code === "rate_limited" ? "warn" : "error");
  }));
}

function onConnected({ user }) {
  app.attempt = 0;
  app.me = user || { id: app.ident.user, name: app.ident.name, role: app.ident.role };
  setConn("online", "online");
  $("conn-status").dataset.transport = app.client.transport || "";
  const me = $("me");
  // The role in the joined room (the token grants it for that room only).
  app.roomRole = app.ident.role;
  me.textContent = `${app.me.name} (${app.me.id}) · ${app.roomRole}`;
  me.hidden = false;
  $("host-panel").hidden = !ELEVATED.has(app.roomRole);
}

function onJoined(room) {
  $("room-view").dataset.joined = "true";
  $("room-view").dataset.stateMode = room.stateMode;
  renderRoom(room);
  $("online-count").textContent = String(room.online);
  renderPresence(room, presenceControls);
}

// ------------------------------------------------------------ moderation
// A host or moderator of the room gets mute / kick / ban on each member it
// may moderate (never itself, never a host; a moderator not another
// moderator: the server refuses those anyway, docs/MODERATION.md).
const MUTE_SECONDS = 300;
const BAN_SECONDS = 3600;

/** The controls shown beside a member, or null. */
function presenceControls(member) {
  return app.room && mayModerate(member) ? moderationControls(app.room, member) : null;
}

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

async function moderate(room, op, target) {
  try {
    const reply = op === "retract"
      ? await room.retract(target.id)
      : await room.moderate(op, target.user,
        { seconds: target.seconds || undefined, reason: "from the demo page" });
    onModerated(room, reply);
  } catch (err) {
    showError(describeError(err), err.code === "rate_limited" ? "warn" : "error");
  }
}

function onModerated(room, frame) {
  const who = frame.user ? (memberName(room, frame.user) || frame.user) : "";
  const what = {
    ban: `banned ${who}`, unban: `lifted the ban on ${who}`, mute: `muted ${who}`,
    unmute: `unmuted ${who}`, kick: `kicked ${who}`, retract: "removed a message",
  }[frame.op] || `${frame.op} ${who}`;
  notice(`You ${what}${frame.until ? ` until ${fmtTime(frame.until)}` : ""}.`, "moderation");
}

function memberName(room, id) {
  const m = room.presence ? room.presence.get(id) : null;
  return m ? String(m.name) : null;
}

// The server took us out of the room: a kick, a ban, or the room closed
// (the SDK does not rejoin it).
function onLeft({ reason, until }) {
  if (reason === "left") return; // the answer to our own leave
  const why = { kicked: "You were removed from the room",
                banned: "You are banned from this room", closed: "The room was closed" }
    [reason] || `You left the room (${reason})`;
  const extra = until ? ` until ${fmtTime(until)}` : "";
  showError(`${why}${extra}.`, "error");
  $("error-line").dataset.left = String(reason);
}

function onRetract(id) {
  for (const li of document.querySelectorAll('[data-testid="feed-item"]')) {
    if (li.dataset.id === id) li.remove();
  }
}

function onAction(frame) {
  if (frame.kind === "agent.delta" || frame.kind === "agent.say") {
    showAgentAction(frame, renderAction);
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
    const room = app.room;
    b.addEventListener("click", () => room && moderate(room, "retract", { id: frame.id }));
    li.appendChild(b);
  }
  return li;
}

// ------------------------------------------------------------ private messages
// The SDK hands each one over once (it keeps the inbox cursor) and acknowledges it.
function onPeer(frame) {
  const from = isObject(frame.from) ? frame.from : {};
  const body = frame.body;
  const text = isObject(body) && typeof body.text === "string" ? body.text : JSON.stringify(body);
  addPm("in", from.name || from.id || "?", from.id || "", text, `#${frame.seq}`, frame.ts);
}

/** Send one; the SDK queues it while offline and retries it (same id) until stored. */
function sendPm(to, text) {
  const client = app.client;
  const id = randomId("pm");
  addPm("out", to, to, text, client.status === "open" ? "sending…" : "queued", undefined, id);
  const status = (label, state) => {
    const li = document.querySelector(`[data-pm-id="${CSS.escape(id)}"]`);
    if (!li) return;
    li.querySelector(".pm-status").textContent = label;
    li.dataset.status = state;
  };
  client.sendPeer(to, { text }, { id }).then(
    (ack) => status(`sent ✓ #${ack.seq}`, "sent"),
    (err) => status(`failed: ${err.code || err.message}`, "failed"),
  );
}

// ------------------------------------------------------------ frames out
function currentRoom() {
  const room = app.room;
  if (!room || !room.joined || !app.client || app.client.status !== "open") {
    showError("not connected to the room yet; try again in a moment", "warn");
    return null;
  }
  return room;
}

function sendAction(kind, body) {
  const room = currentRoom();
  return room ? room.send(kind, body) : false;
}

function writeState(section, value) {
  const room = currentRoom();
  if (!room) return false;
  // Compare-and-set against the version we edited, so that a concurrent
  // change is not overwritten unseen.
  return room.write(section, value, { expect: room.state.versions[section] || 0 });
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
    app.attempt = 0;
    resetRoomView(roomName);
    showRoomView(true);
    start(roomName);
    $("comment-input").focus();
  });
}

function leave() {
  const client = app.client;
  app.client = null;
  app.room = null;
  if (client) client.close();
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
    const room = app.room;
    const input = $("title-input");
    const title = input.value.trim();
    if (!room || !title) return;
    // Keep the other fields of meta (host, ...): write the whole section.
    const meta = isObject(room.state.values.meta) ? { ...room.state.values.meta } : {};
    meta.title = title;
    if (writeState("meta", meta)) input.dataset.shown = input.value;
  });
  $("pinned-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const room = app.room;
    const input = $("pinned-input");
    if (!room) return;
    const pinned = isObject(room.state.values.pinned) ? { ...room.state.values.pinned } : {};
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
    if (!text || !app.client) return;
    sendPm(to, text);
    textInput.value = "";
  });

  $("leave").addEventListener("click", leave);
}

wireJoinForm();
wireRoom();
