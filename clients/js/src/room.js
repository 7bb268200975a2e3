/**
 * One joined room: its state (versions kept, `sync` on gaps), its actions,
 * online count, presence and history where the room keeps them. The Client
 * owns the connection and hands the room the frames that name it; the room
 * survives reconnects and is resumed with its versions and epoch.
 */
import { Emitter } from './emitter.js';
import { RoomState } from './state.js';
import { StatePoller } from './poller.js';

const SEEN_IDS = 2048; // action ids remembered to drop an action seen twice

export class Room extends Emitter {
  #client;
  #seen = new Set();
  #syncing = false;
  #poller = null;

  constructor(client, name) {
    super();
    this.#client = client;
    this.name = name;
    this.state = new RoomState();
    /** members of the room as the server last counted them */
    this.online = 0;
    /** id -> {id, name, role}, or null when the room keeps no presence list */
    this.presence = null;
    this.presenceCapped = false;
    /** the kept actions `joined` brought (oldest first, retracts removed), or
     * null when the room keeps no history; live actions come as 'action' events */
    this.history = null;
    /** 'push' or 'poll' */
    this.stateMode = 'push';
    /** false once the room was left (by us or by the server) */
    this.joined = false;
    this.active = true;
  }

  /** Send an action; returns false when not connected (actions are never queued). */
  send(kind, body, options = {}) {
    return this.#client._send({ type: 'action', room: this.name, kind, body, id: options.id });
  }

  /** Write a section (host or moderator; an agent its `stage.<id>`). */
  write(section, value, options = {}) {
    return this.#client._send({ type: 'state', room: this.name, section, value, expect: options.expect });
  }

  /** A host or moderator acts on a user: ban, unban, mute, unmute, kick. */
  moderate(op, user, options = {}) {
    return this.#client._request({ type: 'moderate', room: this.name, op, user,
      seconds: options.seconds, reason: options.reason });
  }

  /** A host or moderator retracts an action by its id. */
  retract(id) {
    return this.#client._request({ type: 'moderate', room: this.name, op: 'retract', id });
  }

  /** Ask for what changed since the versions held. */
  sync() {
    if (this.#syncing || !this.joined) return;
    this.#syncing = this.#client._sync(this, { type: 'sync', room: this.name, ...this.state.resumeFields() });
  }

  /** The sync was refused (rate_limited, say): try again after it says. */
  _syncFailed(err) {
    this.#syncing = false;
    this.emit('error', err);
    if (err.advice === 'retry') setTimeout(() => this._check(), 1000 * (err.retry_after ?? 1));
  }

  /** Leave the room: it is no longer resumed. */
  async leave() {
    this.active = false;
    this.#stopPolling();
    this.#client._forget(this);
    if (!this.joined) return;
    this.joined = false;
    try {
      await this.#client._request({ type: 'leave', room: this.name });
    } catch {
      // not connected: nothing to leave on the server
    }
  }

  /** The join frame that (re)enters the room with what it holds. */
  _joinFrame() {
    return { type: 'join', room: this.name, ...this.state.resumeFields() };
  }

  /** Handle one frame for this room. `after` collects the rooms to check. */
  _handle(frame, after) {
    switch (frame.type) {
      case 'joined': return this.#onJoined(frame, after);
      case 'sync': return this.#onSync(frame, after);
      case 'state': return this.#onState(frame, after);
      case 'action': return this.#onAction(frame);
      case 'online': this.online = frame.count; return this.emit('online', frame.count);
      case 'presence': return this.#onPresence(frame);
      case 'retract': return this.#onRetract(frame);
      case 'left': return this._left(frame);
      case 'state_mode': return this.#setMode(frame);
      default: return undefined;
    }
  }

  /** Check the invariant once the whole message was applied; sync on a gap. */
  _check() {
    if (this.stateMode === 'push' && !this.state.consistent()) this.sync();
  }

  /** The client closed for good: stop polling. */
  _stop() {
    this.joined = false;
    this.#stopPolling();
  }

  /** The connection went away: the next one rejoins. */
  _disconnected() {
    this.joined = false;
    this.#syncing = false;
  }

  _left(frame) {
    this.joined = false;
    if (frame.reason) {
      // kicked, banned, closed: the server took us out; do not rejoin.
      this.active = false;
      this.#stopPolling();
      this.#client._forget(this);
    }
    this.emit('left', { reason: frame.reason ?? 'left', message: frame.message, until: frame.until });
  }

  #onJoined(frame, after) {
    this.joined = true;
    this.online = frame.members ?? this.online;
    this.#snapshot(frame, after);
    if ('history' in frame) {
      this.history = [];
      for (const action of frame.history) {
        if (this.#remember(action.id)) this.history.push(action);
      }
    }
    if (frame.presence) {
      this.presence = new Map(frame.presence.map((m) => [m.id, m]));
      this.presenceCapped = false;
    } else if (frame.presence_capped) {
      this.presence = null;
      this.presenceCapped = true;
    }
    this.#setMode(frame);
    this.emit('joined', frame);
  }

  #onSync(frame, after) {
    this.#syncing = false;
    this.#snapshot(frame, after);
  }

  #snapshot(frame, after) {
    const changed = this.state.applySnapshot(frame);
    if ('recovered' in frame) this.emit('recovered', { recovered: frame.recovered, reason: frame.reason });
    after.add(this);
    if (changed.length) this.emit('state', { sections: changed, snapshot: true });
  }

  #onState(frame, after) {
    after.add(this);
    if (this.state.applyState(frame)) {
      this.emit('state', { sections: [frame.section], snapshot: false });
    }
  }

  #onAction(frame) {
    if (!this.#remember(frame.id)) return;
    this.emit('action', frame);
  }

  #onPresence(frame) {
    if (frame.capped) {
      this.presence = null;
      this.presenceCapped = true;
    } else {
      if (!this.presence || this.presenceCapped) this.presence = new Map();
      this.presenceCapped = false;
      for (const m of frame.joins ?? []) this.presence.set(m.id, m);
      for (const id of frame.leaves ?? []) this.presence.delete(id);
    }
    this.emit('presence', frame);
  }

  #onRetract(frame) {
    if (this.history) this.history = this.history.filter((a) => a.id !== frame.id);
    this.emit('retract', frame.id);
  }

  /** True the first time an action id is seen (history and live may overlap). */
  #remember(id) {
    if (id === undefined) return true;
    if (this.#seen.has(id)) return false;
    this.#seen.add(id);
    if (this.#seen.size > SEEN_IDS) this.#seen.delete(this.#seen.values().next().value);
    return true;
  }

  #setMode(frame) {
    const mode = frame.state_mode ?? 'push';
    const was = this.stateMode;
    this.stateMode = mode;
    if (mode === 'poll') {
      this.#stopPolling();
      this.#poller = new StatePoller(this, this.#client._httpUrl(frame.poll.head), frame.poll.interval);
      this.#poller.start();
    } else {
      this.#stopPolling();
      // Close the gap between the last poll and the first pushed change.
      if (was === 'poll' && frame.type === 'state_mode') this.sync();
    }
    if (frame.type === 'state_mode' && was !== mode) this.emit('state_mode', mode);
  }

  #stopPolling() {
    this.#poller?.stop();
    this.#poller = null;
  }
}
