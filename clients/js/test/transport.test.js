/**
 * Transports and redirects, against a real `liveroom serve --dev`:
 * - WebTransport's framing and the Client's WebTransport path, through a
 *   stand-in WebTransport class (Node has none) that carries the
 *   length-prefixed stream over a WebSocket to the real server, handing the
 *   bytes back in pieces of every size; the real QUIC path is tested in
 *   Chromium (tests/e2e/test_webtransport_browser.py);
 * - the fallback to the WebSocket when a session cannot be opened;
 * - `redirect`: a router in front (a `ws` server of this test: the real one
 *   redirects only in the distributed deployment) sends the client to the
 *   real server, which it then joins with its versions; a room that moved
 *   (`moved`, after `joined`) is rejoined there; and a router that redirects
 *   for ever is followed MAX_REDIRECTS times, then `url` is asked again.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, FrameReader, MAX_REDIRECTS } from '../src/index.js';
import { wtFrame } from '../src/webtransport.js';
import { Server, until, webSocketClass } from './server.js';

let server;
let WebSocket;
const clients = [];
const closers = [];

before(async () => {
  WebSocket = await webSocketClass();
  server = new Server();
  await server.start();
});

after(async () => {
  for (const c of clients) c.close();
  for (const f of closers) await f();
  await server.dispose();
});

function open(url, user, options = {}) {
  const c = connect(url, {
    WebSocket, codec: 'json', minDelay: 50, maxDelay: 300,
    getToken: () => server.token(user, { rooms: options.rooms }), ...options,
  });
  clients.push(c);
  return c;
}

test('FrameReader reassembles frames split anywhere and refuses an oversized header', () => {
  const frames = ['{"a":1}', '', 'x'.repeat(300)].map((t) => wtFrame(t));
  const all = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  let pos = 0;
  for (const f of frames) { all.set(f, pos); pos += f.length; }
  for (const step of [1, 3, 5, 64, all.length]) {
    const reader = new FrameReader();
    const got = [];
    for (let i = 0; i < all.length; i += step) got.push(...reader.feed(all.subarray(i, i + step)));
    assert.deepEqual(got.map((b) => new TextDecoder().decode(b)), ['{"a":1}', '', 'x'.repeat(300)]);
    assert.equal(reader.pending, 0);
  }
  assert.throws(() => new FrameReader(10).feed(wtFrame('x'.repeat(11))), RangeError);
});

/**
 * A WebTransport class for Node: the session is a WebSocket to the real
 * server; what the client writes on its stream is unframed and sent as text,
 * what the server sends is framed and handed back in pieces of 1 to 7 bytes.
 */
function bridgeWebTransport(wsUrl, log) {
  return class BridgeWebTransport {
    constructor(url, init) {
      log.push({ url, init });
      const ws = new WebSocket(wsUrl);
      let toClient;
      const readable = new ReadableStream({ start(c) { toClient = c; } });
      const reader = new FrameReader();
      const writable = new WritableStream({
        write(chunk) { for (const f of reader.feed(chunk)) ws.send(new TextDecoder().decode(f)); },
      });
      this.datagrams = { readable: new ReadableStream({ start() {} }) };
      this.ready = new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = () => reject(new Error('bridge failed'));
      });
      this.closed = new Promise((resolve) => {
        ws.onclose = (ev) => {
          try { toClient.close(); } catch { /* closed */ }
          resolve({ closeCode: ev.code, reason: ev.reason });
        };
      });
      ws.onmessage = (ev) => {
        const bytes = wtFrame(String(ev.data));
        for (let i = 0, n = 1; i < bytes.length; i += n, n = (n % 7) + 1) toClient.enqueue(bytes.slice(i, i + n));
      };
      this.createBidirectionalStream = async () => ({ readable, writable });
      this.close = ({ closeCode } = {}) => ws.close(closeCode === 1000 ? 1000 : 4999);
    }
  };
}

test('over WebTransport: the same room API, and the transport is named', async () => {
  const log = [];
  const WebTransport = bridgeWebTransport(server.wsUrl, log);
  const room = 'wt-room';
  const host = open(server.wsUrl, 'wt-host', { rooms: { [room]: 'host' } });
  const viewer = open(server.wsUrl, 'wt-viewer', {
    WebTransport, webtransportUrl: 'https://127.0.0.1:1/wt', serverCertificateHashes: ['ab'.repeat(32)],
  });
  const h = await host.join(room);
  const v = await viewer.join(room);
  assert.equal(viewer.transport, 'webtransport');
  assert.equal(host.transport, 'websocket');
  assert.equal(log[0].url, 'https://127.0.0.1:1/wt');
  assert.equal(log[0].init.serverCertificateHashes[0].algorithm, 'sha-256');
  assert.equal(log[0].init.serverCertificateHashes[0].value.length, 32);
  const seen = [];
  v.on('action', (a) => seen.push(a.body.text));
  h.write('title', 'x'.repeat(2000));
  h.send('comment', { text: 'over the stream' });
  await until(() => v.state.get('title')?.length === 2000 && seen.length === 1, 'state and action');
  assert.ok((await viewer.ping()).type === 'pong');
});

test('a WebTransport session that cannot open falls back to the WebSocket', async () => {
  class Refused {
    constructor() {
      this.ready = Promise.reject(new Error('no UDP here'));
      this.closed = this.ready.catch(() => ({ closeCode: 0, reason: 'no UDP here' }));
      this.ready.catch(() => {});
      this.datagrams = { readable: new ReadableStream() };
    }

    close() {}
  }
  const c = open(server.wsUrl, 'wt-fallback', { WebTransport: Refused, webtransportUrl: () => 'https://127.0.0.1:1/wt' });
  const fallbacks = [];
  c.on('transport_fallback', (e) => fallbacks.push(e));
  await c.join('fallback-room');
  assert.equal(c.transport, 'websocket');
  assert.equal(fallbacks.length, 1);
});

/**
 * A router in front of the real server: welcome, then `redirect(join)` for
 * every join; with `moved`, the join is answered `joined` and the redirect
 * (`moved`, no ref) follows.
 */
async function router(redirect, { moved = false } = {}) {
  const { WebSocketServer } = await import('ws');
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise((r) => wss.once('listening', r));
  const stats = { hellos: 0 };
  wss.on('connection', (sock) => {
    sock.on('message', (data) => {
      const frame = JSON.parse(String(data));
      if (frame.type === 'hello') {
        stats.hellos += 1;
        sock.send(JSON.stringify({ type: 'welcome', user: { id: 'u', name: 'u', role: 'viewer' }, codec: 'json' }));
      } else if (frame.type === 'join' && moved) {
        sock.send(JSON.stringify({ type: 'joined', room: frame.room, ref: frame.ref, epoch: 'router',
          total: 0, versions: {}, sections: [], members: 1 }));
        const url = redirect(frame);
        setTimeout(() => sock.send(JSON.stringify({ type: 'redirect', room: frame.room, url, urls: [url], reason: 'moved' })), 50);
      } else if (frame.type === 'join') {
        const url = redirect(frame);
        sock.send(JSON.stringify({ type: 'redirect', room: frame.room, url, urls: [url], reason: 'not_owner', ref: frame.ref }));
      }
    });
  });
  closers.push(() => new Promise((r) => { for (const s of wss.clients) s.terminate(); wss.close(r); }));
  return { url: `ws://127.0.0.1:${wss.address().port}/ws`, stats };
}

test('a redirect is followed: the room is joined where it names', async () => {
  const front = await router(() => server.wsUrl);
  const room = 'redirected-room';
  const host = open(server.wsUrl, 'rd-host', { rooms: { [room]: 'host' } });
  const h = await host.join(room);
  h.write('title', 'at the owner');
  const c = open(front.url, 'rd-viewer');
  const redirects = [];
  c.on('redirect', (r) => redirects.push(r));
  const r = await c.join(room);
  assert.equal(redirects.length, 1);
  assert.equal(redirects[0].reason, 'not_owner');
  await until(() => r.state.get('title') === 'at the owner', 'the state of the owner');
  assert.equal(c.user.id, 'rd-viewer'); // welcomed by the real server
});

test('a room that moved: its members reconnect where the redirect says and rejoin', async () => {
  const front = await router(() => server.wsUrl, { moved: true });
  const room = 'moved-room';
  const host = open(server.wsUrl, 'mv-host', { rooms: { [room]: 'host' } });
  (await host.join(room)).write('title', 'at the new owner');
  const c = open(front.url, 'mv-viewer');
  const reasons = [];
  c.on('redirect', (r) => reasons.push(r.reason));
  const r = await c.join(room); // joined at the router first
  await until(() => r.state.get('title') === 'at the new owner', 'the state where the room moved');
  assert.deepEqual(reasons, ['moved']);
  assert.equal(c.user.id, 'mv-viewer');
  assert.equal(c.status, 'open');
});

test('redirects in a loop are followed a few times, then the url is asked again', async () => {
  let front;
  front = await router(() => front.url); // always back to itself
  let asked = 0;
  const c = open(() => { asked += 1; return front.url; }, 'loop-viewer');
  c.join('loop-room').catch(() => {});
  await until(() => asked >= 2, 'the url asked again after the redirects');
  // the first connection, then MAX_REDIRECTS followed before `url` was asked again
  assert.ok(front.stats.hellos >= MAX_REDIRECTS + 1, `${front.stats.hellos} hellos`);
  c.close();
});
