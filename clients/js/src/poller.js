/**
 * The polling state mode (docs/PROTOCOL.md, "CDN polling"): a room with
 * `state_mode` `poll` reads its state's head over HTTP every `interval`
 * seconds and fetches only the sections whose partial moved, at their
 * immutable URLs. It feeds the same RoomState as pushed frames, so the room
 * API does not change.
 */
export class StatePoller {
  #room;
  #head;
  #interval;
  #etag = null;
  #timer = null;
  #stopped = false;

  constructor(room, headUrl, interval) {
    this.#room = room;
    this.#head = headUrl;
    this.#interval = Math.max(0.1, Number(interval) || 1) * 1000;
  }

  start() {
    this.#schedule(0);
  }

  stop() {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  #schedule(ms) {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => this.#poll().finally(() => this.#schedule(this.#interval)), ms);
  }

  async #poll() {
    try {
      await this.#pollOnce();
    } catch (err) {
      this.#room.emit('poll_error', err);
    }
  }

  async #pollOnce() {
    const headers = this.#etag ? { 'If-None-Match': this.#etag } : {};
    const res = await fetch(this.#head, { headers });
    if (res.status === 304) return;
    if (res.status === 404) return; // no state yet (or any more)
    if (!res.ok) throw new Error(`head: HTTP ${res.status}`);
    const head = await res.json();
    const state = this.#room.state;
    const changed = [];
    let complete = true;
    if (head.epoch !== state.epoch) {
      state.reset();
      state.epoch = head.epoch;
    }
    for (const [section, partial] of Object.entries(head.versions)) {
      if ((state.versions[section] ?? 0) === partial) continue;
      const body = await this.#section(new URL(head.sections[section], this.#head));
      if (!body) complete = false;
      else if (state.applySection(section, body.partial, body.value)) changed.push(section);
    }
    state.total = Math.max(state.total, head.total);
    if (complete) this.#etag = res.headers.get('etag');
    if (this.#stopped) return;
    if (changed.length) this.#room.emit('state', { sections: changed, snapshot: false });
  }

  async #section(url) {
    const res = await fetch(url);
    if (!res.ok) return null; // gone meanwhile: the next head says where it is now
    return res.json();
  }
}
