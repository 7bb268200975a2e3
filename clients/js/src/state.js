/**
 * A room's state as the client holds it: per-section values and partial
 * versions, the room's total and the store epoch they come from. Pure (no
 * I/O) so the version rules of docs/PROTOCOL.md ("Using the versions",
 * "Epochs", "Honest recovery") are tested without a server.
 */
export class RoomState {
  /** @type {string | null} the store epoch the versions come from */
  epoch = null;
  /** the room's total version reached */
  total = 0;
  /** section -> partial version held */
  versions = Object.create(null);
  /** section -> value held */
  values = Object.create(null);

  /** The value of one section (undefined when not held). */
  get(section) {
    return this.values[section];
  }

  /** What `join` and `sync` send to resume: only the sections that differ come back. */
  resumeFields() {
    if (this.epoch === null) return {};
    return { known: { ...this.versions }, epoch: this.epoch };
  }

  /** True when nothing is missing: the sum of the partials is the total. */
  consistent() {
    let sum = 0;
    for (const v of Object.values(this.versions)) sum += v;
    return sum === this.total;
  }

  reset() {
    this.versions = Object.create(null);
    this.values = Object.create(null);
    this.total = 0;
  }

  /**
   * Apply a `joined` or `sync` reply; returns the sections whose value
   * changed. The reply is authoritative when the epoch changed or the server
   * says the versions were not comparable (`recovered: false`): everything is
   * replaced. Otherwise a section is only moved forward, never back: a state
   * frame from an overlapping connection (token refresh) may already have
   * brought something newer than the snapshot.
   */
  applySnapshot(reply) {
    const replace = reply.epoch !== this.epoch || reply.recovered === false;
    if (replace) this.reset();
    this.epoch = reply.epoch;
    const changed = [];
    for (const { section, partial, value } of reply.sections ?? []) {
      if (!replace && (this.versions[section] ?? 0) > partial) continue;
      this.values[section] = value;
      this.versions[section] = partial;
      changed.push(section);
    }
    const listed = reply.versions ?? {};
    for (const section of Object.keys(this.versions)) {
      if (!(section in listed)) {
        delete this.versions[section];
        delete this.values[section];
        changed.push(section);
      }
    }
    // A section listed but neither sent nor held should not happen; it is
    // left out, so the invariant fails and the room syncs.
    for (const [section, partial] of Object.entries(listed)) {
      if (section in this.values) this.versions[section] = Math.max(this.versions[section] ?? 0, partial);
    }
    this.total = replace ? reply.total : Math.max(this.total, reply.total);
    return changed;
  }

  /**
   * Apply one pushed `state` frame (latest wins): an old partial is ignored.
   * Returns true when the value changed. The caller checks `consistent()`
   * after the whole WebSocket message (a `batch` included).
   */
  applyState(frame) {
    this.total = Math.max(this.total, frame.total);
    if (frame.partial <= (this.versions[frame.section] ?? 0)) return false;
    this.values[frame.section] = frame.value;
    this.versions[frame.section] = frame.partial;
    return true;
  }

  /** Apply one section read over HTTP (the polling mode). */
  applySection(section, partial, value) {
    if (partial <= (this.versions[section] ?? 0)) return false;
    this.values[section] = value;
    this.versions[section] = partial;
    return true;
  }
}
