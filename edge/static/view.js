/* The demo page's view: DOM building and rendering with no connection
 * state (app.js holds that and calls these). */

export const MAX_FEED = 300;
const MAX_PM = 200;
export const GIFT_ICONS = { rose: "✿", star: "★", rocket: "➶" };

let errorTimer = null; // hides the error line

export const $ = (id) => document.querySelector(`[data-testid="${id}"]`);

export function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

export function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

export function fmtTime(ts) {
  const d = typeof ts === "number" ? new Date(ts * 1000) : new Date();
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function deriveUserId(name) {
  return name
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "")
    .toLowerCase()
    .replace(/[^a-z0-9_.:@-]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 64);
}

export function randomId(prefix) {
  const rnd = Math.random().toString(36).slice(2, 10);
  return `${prefix}-${Date.now().toString(36)}-${rnd}`;
}

// ------------------------------------------------------------ status line
export function setConn(state, text) {
  const badge = $("conn-status");
  badge.dataset.state = state;
  badge.textContent = text;
}

export function showError(text, level) {
  const line = $("error-line");
  line.textContent = text;
  line.dataset.level = level || "error";
  line.classList.add("visible");
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => line.classList.remove("visible"), 8000);
}

export function describeError(err) {
  if (err.code === "version_conflict") {
    return `someone else changed "${err.section || "it"}" meanwhile; reloaded it, please try again`;
  }
  let text = `${err.code || "error"}: ${err.message || ""}`.trim();
  if (typeof err.retry_after === "number") text += ` (retry in ${err.retry_after}s)`;
  if (err.advice && err.advice !== "fix") text += ` [${err.advice}]`;
  return text;
}

export function renderPresence(room, controlsFor) {
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
    const controls = controlsFor(m);
    if (controls) li.append(controls);
    list.append(li);
  }
}

export function notice(text, kind) {
  const feed = $("feed");
  const li = el("li", `feed-item kind-${kind}`);
  li.dataset.testid = "feed-item";
  li.dataset.kind = kind;
  li.appendChild(el("time", "ts", fmtTime(Date.now() / 1000)));
  li.appendChild(el("span", "text", text));
  feed.appendChild(li);
  feed.scrollTop = feed.scrollHeight;
}

// An agent's reply streams as agent.delta actions (one reply_id) and ends
// with agent.say: one feed line per reply, its text growing as it streams.
const agentLines = new Map(); // reply_id -> feed <li> while the reply streams

export function showAgentAction(frame, renderAction) {
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

// ------------------------------------------------------------ rendering
export function renderRoom(room) {
  const meta = isObject(room.state.values.meta) ? room.state.values.meta : {};
  const pinned = isObject(room.state.values.pinned) ? room.state.values.pinned : {};
  const title = typeof meta.title === "string" && meta.title ? meta.title : room.name;
  $("room-title").textContent = title;
  document.title = `${title} · liveroom`;
  const pinText = typeof pinned.text === "string" ? pinned.text : "";
  $("pinned").textContent = pinText;
  $("pinned-box").hidden = !pinText;
  $("state-version").textContent = `· state v${room.state.total}`;
  renderScoreboard(room.state.values.scoreboard);
  renderAgentStages(room.state.values);
  renderWorld(room.state.values);
  refreshInput($("title-input"), typeof meta.title === "string" ? meta.title : "");
  refreshInput($("pinned-input"), pinText);
}

/** The characters' stages (sections stage.<name>): mood, emote, speaking. */
export function renderAgentStages(values) {
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
export function renderWorld(values) {
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
export function refreshInput(input, value) {
  const edited = input.value !== (input.dataset.shown || "");
  if (edited) return; // unsaved edit: keep it (the write is compare-and-set anyway)
  input.value = value;
  input.dataset.shown = value;
}

export function renderScoreboard(board) {
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

export function addPm(dir, who, whoId, text, status, ts, id) {
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

