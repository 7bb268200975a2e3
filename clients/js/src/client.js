/**
 * The connection to a liveroom edge: hello with a token (refreshed before it
 * expires, on a second connection made before the first is closed), reconnect
 * with backoff and jitter, every joined room resumed with its versions and
 * epoch, peer messages handed to the application exactly once (the inbox
 * cursor) and acknowledged, outgoing peer messages retried until stored.
 * Over WebTransport when the runtime has it and a WebTransport URL is given
 * (falling back to the WebSocket when a session cannot be opened), else over
 * the WebSocket; `redirect` frames are followed. docs/PROTOCOL.md is the
 * reference for every frame used here.
 */
import { Emitter } from './emitter.js';
import { checkCodec, decodeMessage, loadCodec } from './codec.js';
import { Room } from './room.js';
import { checkTransport, openSocket, webTransportTarget } from './transport.js';
import { closeAdvice, errorOf, randomId, tokenExpiry } from './policy.js';

export { closeAdvice, tokenExpiry };

const OPEN = 1;
/** Redirects followed in a row before backing off and asking `url` again
 * (views of the live groups may differ for a heartbeat, docs/PROTOCOL.md). */
export const MAX_REDIRECTS = 4;

/** Connect to `url` (ws://host:port/ws, or a function returning it) and keep connected. */
export function connect(url, options) {
  const client = new Client(url, options);
  client.start();
  return client;
}

export class Client extends Emitter {
  #url;
  #options;
  #codecName;
  #conn = null;
  #closed = false;
  #nextRef = 1;
  #pending = new Map(); // ref -> {resolve, reject, resend}
  #peersOut = new Map(); // ref -> {frame, resolve, reject}
  #peerChain = Promise.resolve();
  #timers = new Set();
  #wake = null;
  #lastUrl = null;
  #redirect = null; // the URL a redirect named, for the next connection
  #redirectHops = 0; // redirects followed since a room was last joined
  #wtFailed = false; // a WebTransport session could not be opened: WebSocket from then on

  constructor(url, options = {}) {
    super();
    if (typeof options.getToken !== 'function') throw new TypeError('liveroom-client: options.getToken is required');
    this.#url = url;
    this.#options = {
      minDelay: 250, maxDelay: 10000, openTimeout: 10000, pingInterval: 25000,
      refreshLead: null, transport: 'auto', webtransportTimeout: 5000, ...options,
    };
    this.#codecName = checkCodec(options.codec);
    checkTransport(this.#options);
    /** 'websocket' | 'webtransport' | null: the transport of the connection in use */
    this.transport = null;
    /** datagrams received (lossy state over WebTransport) */
    this.datagrams = 0;
    /** 'connecting' | 'open' | 'closed' */
    this.status = 'connecting';
    /** the user of the last welcome: {id, name, role} */
    this.user = null;
    /** name -> Room: the rooms joined (and resumed on reconnect) */
    this.rooms = new Map();
    /** the highest peer seq processed; persist it to keep exactly-once across page loads */
    this.inboxCursor = options.inboxCursor ?? 0;
  }

  start() {
    this.#run().catch((err) => this.emit('error', err));
  }

  /** Join a room (or get the one joined); resolves once the server answered `joined`. */
  join(name) {
    let room = this.rooms.get(name);
    if (!room) {
      room = new Room(this, name);
      this.rooms.set(name, room);
      if (this.#conn?.ready) this.#sendJoin(this.#conn, room);
    }
    if (room.joined) return Promise.resolve(room);
    return new Promise((resolve, reject) => {
      const offs = [
        room.on('joined', () => { offs.forEach((f) => f()); resolve(room); }),
        room.on('join_error', (err) => { offs.forEach((f) => f()); reject(err); }),
      ];
    });
  }

  /**
   * Send a peer message; resolves with the server's `peer_ack` once it is
   * stored. Retried with the same id after a reconnect (the server drops the
   * duplicate), so it is stored once.
   */
  sendPeer(to, body, options = {}) {
    const id = options.id ?? randomId();
    return new Promise((resolve, reject) => {
      const entry = { frame: { type: 'peer', to, id, body }, resolve, reject };
      const ref = this._ref();
      this.#peersOut.set(ref, entry);
      this._send({ ...entry.frame, ref });
    });
  }

  /** Round trip to the server: resolves with the `pong`. */
  ping() {
    return this._request({ type: 'ping', t: Date.now() });
  }

  /** Close for good: no reconnect. */
  close() {
    this.#closed = true;
    this.#wake?.();
    for (const t of this.#timers) clearTimeout(t);
    for (const room of this.rooms.values()) room._stop();
    this.#conn?.ws.close(1000);
    this.#setStatus('closed');
  }

  // -- used by Room -------------------------------------------------------

  _ref() {
    return this.#nextRef++;
  }

  _send(frame) {
    const conn = this.#conn;
    if (!conn?.ready || conn.ws.readyState !== OPEN) return false;
    conn.ws.send(conn.codec.encode(frame));
    return true;
  }

  /** Send a frame that gets a direct reply; rejects on an error or a disconnect. */
  _request(frame) {
    const ref = this._ref();
    return new Promise((resolve, reject) => {
      if (!this._send({ ...frame, ref })) return reject(new Error('liveroom-client: not connected'));
      this.#pending.set(ref, { resolve, reject });
    });
  }

  /** Send a room's sync; its refusal goes back to the room. False when not connected. */
  _sync(room, frame) {
    const ref = this._ref();
    if (!this._send({ ...frame, ref })) return false;
    this.#pending.set(ref, { sync: room });
    return true;
  }

  _forget(room) {
    if (this.rooms.get(room.name) === room) this.rooms.delete(room.name);
  }

  _httpUrl(path) {
    const base = this.#options.httpUrl ?? String(this.#lastUrl).replace(/^ws/, 'http');
    return new URL(path, base).toString();
  }

  // -- the connection loop -----------------------------------------------

  async #run() {
    let attempt = 0;
    while (!this.#closed) {
      let conn;
      try {
        conn = await this.#open();
      } catch (failure) {
        if (this.#closed) return;
        this.emit('connect_error', failure);
        if (failure.code && closeAdvice(failure.code) === 'give_up') return this.#giveUp(failure);
        await this.#sleep(this.#backoff(attempt++));
        continue;
      }
      attempt = 0;
      const resumed = this.user !== null;
      this.#adopt(conn);
      this.emit('connected', { resumed, user: conn.welcome.user });
      let close;
      do {
        conn = this.#conn;
        close = await conn.closed;
      } while (this.#conn !== conn && !this.#closed); // swapped for a fresh token
      if (this.#closed) return;
      this.#lost(conn);
      this.emit('disconnected', close);
      if (conn.redirected) {
        // Straight to the URL the redirect named; after too many in a row,
        // back off and ask `url` again.
        await this.#sleep(this.#redirect ? 0 : this.#backoff(attempt++));
        continue;
      }
      if (!conn.dead && closeAdvice(close.code) === 'give_up') return this.#giveUp(close);
      await this.#sleep(closeAdvice(close.code) === 'renew_token' ? 0 : this.#backoff(attempt++));
    }
  }

  /** Open a connection and say hello; resolves with it after `welcome`. */
  async #open() {
    const token = await this.#options.getToken();
    const codec = await loadCodec(this.#codecName);
    const redirected = this.#redirect;
    this.#redirect = null;
    const url = redirected ?? (typeof this.#url === 'function' ? await this.#url() : this.#url);
    this.#lastUrl = url;
    // A redirect names a WebSocket URL: the other edge's QUIC endpoint is not known.
    const wt = redirected ? null : await webTransportTarget(this.#options, this.#wtFailed);
    const { ws, transport } = openSocket(this.#options, url, wt, (err) => this.#fallBack(err));
    const conn = { ws, token, codec, transport, ready: false, welcome: null, dead: false,
      lastHeard: Date.now(), ackUpto: 0 };
    let welcomed;
    const welcome = new Promise((resolve) => { welcomed = resolve; });
    conn.onWelcome = welcomed;
    conn.closed = new Promise((resolve) => {
      ws.onclose = (ev) => { conn.ready = false; resolve({ code: ev.code, reason: ev.reason }); };
    });
    ws.onerror = () => {};
    ws.onopen = () => {
      const hello = { type: 'hello', token, v: 1, inbox_cursor: this.inboxCursor };
      ws.send(codec.encode(hello));
    };
    ws.onmessage = (ev) => this.#onMessage(conn, ev.data, ev.datagram === true);
    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(() => resolve(null), this.#options.openTimeout);
    });
    const first = await Promise.race([welcome, conn.closed, timeout]);
    clearTimeout(timer);
    if (first === null || !conn.welcome) {
      ws.close();
      if (transport === 'webtransport' && !ws.opened && this.#options.transport === 'auto') {
        // No session at all (no UDP, a blocked port, a refused certificate).
        this.#fallBack(new Error(`liveroom-client: WebTransport did not open (${first?.reason ?? 'timeout'})`));
        return this.#open();
      }
      const failure = new Error(`liveroom-client: no welcome (${first ? `close ${first.code} ${first.reason}` : 'timeout'})`);
      failure.code = first?.code;
      throw failure;
    }
    conn.ready = true;
    return conn;
  }

  #fallBack(err) {
    this.#wtFailed = true;
    this.emit('transport_fallback', err);
  }

  /** Make `conn` the connection: rejoin every room, resend unstored peer messages. */
  #adopt(conn) {
    this.#conn = conn;
    this.user = conn.welcome.user;
    this.transport = conn.transport;
    this.#setStatus('open');
    for (const room of this.rooms.values()) {
      room._disconnected();
      this.#sendJoin(conn, room);
    }
    for (const [ref, entry] of this.#peersOut) this._send({ ...entry.frame, ref });
    this.#scheduleRefresh(conn);
    this.#watch(conn);
  }

  #lost(conn) {
    this.#setStatus('connecting');
    for (const room of this.rooms.values()) room._disconnected();
    for (const [ref, p] of this.#pending) {
      this.#pending.delete(ref);
      p.reject?.(new Error('liveroom-client: disconnected'));
    }
    conn.ws.onmessage = null;
  }

  #giveUp(close) {
    this.#closed = true;
    this.#setStatus('closed');
    this.emit('closed', close);
  }

  #sendJoin(conn, room) {
    const ref = this._ref();
    this.#pending.set(ref, { join: room });
    conn.ws.send(conn.codec.encode({ ...room._joinFrame(), ref }));
  }

  /** Reconnect on a fresh token before this one expires, then close the old connection. */
  #scheduleRefresh(conn) {
    const exp = tokenExpiry(conn.token);
    if (exp === null) return;
    const left = exp - Date.now();
    const lead = this.#options.refreshLead ?? Math.min(60000, Math.max(1000, left * 0.25));
    this.#later(() => this.#refresh(conn), Math.max(0, left - lead));
  }

  async #refresh(old) {
    if (this.#closed || this.#conn !== old) return;
    let conn;
    try {
      conn = await this.#open();
    } catch (err) {
      this.emit('connect_error', err);
      // Try again soon; if the token runs out first, the 4200 close reconnects.
      if (tokenExpiry(old.token) - Date.now() > 1000) this.#later(() => this.#refresh(old), 500);
      return;
    }
    if (this.#closed || this.#conn !== old) return conn.ws.close(1000);
    const rejoined = [...this.rooms.values()].map((room) => room.once('joined'));
    this.#adopt(conn);
    await Promise.race([Promise.all(rejoined), new Promise((r) => this.#later(r, 5000))]);
    old.ws.onmessage = null;
    old.ws.close(1000, 'token refreshed');
    this.emit('token_refreshed', { user: conn.welcome.user });
  }

  /** Application pings: a connection silent for too long is given up and replaced. */
  #watch(conn) {
    const every = this.#options.pingInterval;
    if (!every) return;
    const tick = () => {
      if (this.#conn !== conn || !conn.ready) return;
      if (Date.now() - conn.lastHeard > every * 1.5) {
        conn.dead = true;
        conn.ws.close();
        return;
      }
      this._send({ type: 'ping', t: Date.now() });
      this.#later(tick, every);
    };
    this.#later(tick, every);
  }

  // -- incoming frames ---------------------------------------------------

  #onMessage(conn, data, datagram) {
    conn.lastHeard = Date.now();
    if (datagram) this.datagrams += 1;
    let frame;
    try {
      frame = decodeMessage(data, conn.transport === 'webtransport');
    } catch (err) {
      return this.emit('error', err);
    }
    const touched = new Set();
    if (frame.type === 'batch') {
      for (const f of frame.frames) this.#dispatch(conn, f, touched);
    } else {
      this.#dispatch(conn, frame, touched);
    }
    // The state invariant is checked after the whole message (a batch included).
    for (const room of touched) room._check();
  }

  #dispatch(conn, frame, touched) {
    switch (frame.type) {
      case 'welcome':
        conn.welcome = frame;
        return conn.onWelcome(frame);
      case 'peer': return this.#onPeer(conn, frame);
      case 'peer_ack': return this.#onPeerAck(frame);
      case 'inbox': return this.emit('inbox', frame);
      case 'error': return this.#onError(frame);
      case 'redirect': return this.#onRedirect(conn, frame);
      case 'joined': this.#redirectHops = 0; break;
      default: break;
    }
    const waiting = frame.ref !== undefined ? this.#pending.get(frame.ref) : undefined;
    if (waiting) this.#pending.delete(frame.ref);
    const room = frame.room !== undefined ? this.rooms.get(frame.room) : undefined;
    // A `left` with a ref answers our own leave: the room is already forgotten.
    if (room && !(frame.type === 'left' && frame.ref !== undefined)) room._handle(frame, touched);
    if (waiting?.resolve) waiting.resolve(frame);
  }

  #onPeer(conn, frame) {
    this.#peerChain = this.#peerChain.then(async () => {
      if (frame.seq <= this.inboxCursor) return; // already handed over: exactly once
      try {
        await this.emitAsync('peer', frame);
      } catch (err) {
        this.emit('error', err);
      }
      this.inboxCursor = Math.max(this.inboxCursor, frame.seq);
      this.emit('cursor', this.inboxCursor);
      this.#ack(conn);
    });
  }

  /** Acknowledge what was processed, once per burst, on the connection that showed it. */
  #ack(conn) {
    const target = conn.ws.readyState === OPEN ? conn : this.#conn;
    if (!target || target.ws.readyState !== OPEN || target.ackScheduled) return;
    target.ackScheduled = true;
    setTimeout(() => {
      target.ackScheduled = false;
      if (target.ws.readyState === OPEN && this.inboxCursor > target.ackUpto) {
        target.ackUpto = this.inboxCursor;
        target.ws.send(target.codec.encode({ type: 'peer_ack', upto: this.inboxCursor }));
      }
    }, 0);
  }

  /**
   * This edge does not serve a room (docs/PROTOCOL.md, "redirect"): connect
   * to the URL it names and rejoin every room there with its versions.
   */
  #onRedirect(conn, frame) {
    if (frame.ref !== undefined) this.#pending.delete(frame.ref);
    this.emit('redirect', frame);
    const url = frame.url ?? frame.urls?.[0];
    if (typeof url !== 'string' || conn !== this.#conn || conn.redirected) return;
    this.#redirectHops += 1;
    this.#redirect = this.#redirectHops <= MAX_REDIRECTS ? url : null;
    if (!this.#redirect) this.#redirectHops = 0;
    conn.redirected = true;
    conn.ws.close(1000, 'redirected');
  }

  #onPeerAck(frame) {
    const entry = this.#peersOut.get(frame.ref);
    if (!entry) return;
    this.#peersOut.delete(frame.ref);
    entry.resolve(frame);
  }

  #onError(frame) {
    const peer = this.#peersOut.get(frame.ref);
    if (peer) return this.#peerFailed(frame, peer);
    const waiting = this.#pending.get(frame.ref);
    if (waiting) this.#pending.delete(frame.ref);
    if (waiting?.join) return this.#joinFailed(waiting.join, frame);
    if (waiting?.sync) return waiting.sync._syncFailed(errorOf(frame));
    if (waiting?.reject) return waiting.reject(errorOf(frame));
    const room = frame.room !== undefined ? this.rooms.get(frame.room) : undefined;
    if (room) room.emit('error', errorOf(frame));
    else this.emit('server_error', errorOf(frame));
    // A refused write whose versions were behind: fetch what changed.
    if (room?.joined && frame.advice === 'resync') room.sync();
  }

  #peerFailed(frame, entry) {
    for (const [ref, e] of this.#peersOut) if (e === entry) this.#peersOut.delete(ref);
    if (frame.advice !== 'retry') return entry.reject(errorOf(frame));
    const ref = this._ref();
    this.#peersOut.set(ref, entry);
    this.#later(() => this._send({ ...entry.frame, ref }), 1000 * (frame.retry_after ?? 1));
  }

  #joinFailed(room, frame) {
    const err = errorOf(frame);
    room.emit('join_error', err);
    room.emit('error', err);
    if (frame.advice === 'retry') {
      this.#later(() => room.active && this.#conn?.ready && this.#sendJoin(this.#conn, room),
        1000 * (frame.retry_after ?? 1));
    } else {
      room.active = false;
      this._forget(room);
    }
  }

  // -- helpers -----------------------------------------------------------

  #setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.emit('status', status);
  }

  /** Exponential backoff with jitter: half to all of min(max, min * 2^attempt). */
  #backoff(attempt) {
    const { minDelay, maxDelay } = this.#options;
    const ceiling = Math.min(maxDelay, minDelay * 2 ** Math.min(attempt, 20));
    return ceiling * (0.5 + Math.random() / 2);
  }

  #sleep(ms) {
    return new Promise((resolve) => {
      const t = setTimeout(() => { this.#timers.delete(t); resolve(); }, ms);
      this.#timers.add(t);
      this.#wake = () => { clearTimeout(t); resolve(); };
    });
  }

  #later(fn, ms) {
    const t = setTimeout(() => { this.#timers.delete(t); fn(); }, ms);
    this.#timers.add(t);
  }
}
