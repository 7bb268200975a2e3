/**
 * The SDK against a real `liveroom serve --dev`, in both codecs: joining,
 * state from a host's writes, actions with a client id, online counts,
 * presence and history in a room that keeps them, retract, a ban (`left`),
 * peer messages with their acknowledgement, token refresh and the polling
 * state mode.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../src/index.js';
import { Server, until, webSocketClass } from './server.js';

const ROOMS = `
[rooms."keep-*"]
presence = true
history = 5
history_kinds = ["comment"]
`;

let server;
let WebSocket;
const clients = [];

before(async () => {
  WebSocket = await webSocketClass();
  server = new Server({ roomsConfig: ROOMS, args: ['--poll-threshold', '3'] });
  await server.start();
});

after(async () => {
  for (const c of clients) c.close();
  await server.dispose();
});

function client(user, { codec = 'msgpack', rooms, ttl, ...rest } = {}) {
  let tokens = 0;
  const c = connect(server.wsUrl, {
    WebSocket, codec, minDelay: 50, maxDelay: 500,
    getToken: () => { tokens += 1; return server.token(user, { rooms, ttl }); },
    ...rest,
  });
  c.tokens = () => tokens;
  clients.push(c);
  return c;
}

for (const codec of ['msgpack', 'json']) {
  test(`${codec}: state, actions, online`, async () => {
    const room = `basic-${codec}`;
    const host = client(`host-${codec}`, { codec, rooms: { [room]: 'host' } });
    const viewer = client(`viewer-${codec}`, { codec });
    const h = await host.join(room);
    const v = await viewer.join(room);
    assert.equal(v.state.total, 0);
    const seen = [];
    v.on('action', (a) => seen.push(a));
    assert.ok(h.write('score', { n: 1 }));
    assert.ok(h.write('score', { n: 2 }));
    assert.ok(h.write('title', 'hello'));
    await until(() => v.state.total === 3, 'three writes');
    assert.deepEqual(v.state.get('score'), { n: 2 });
    assert.equal(v.state.get('title'), 'hello');
    assert.deepEqual({ ...v.state.versions }, { score: 2, title: 1 });
    assert.ok(v.send('comment', { text: 'hi' }, { id: 'c-1' }));
    await until(() => seen.length === 1, 'the comment');
    assert.equal(seen[0].client_id, 'c-1');
    assert.equal(seen[0].from.id, `viewer-${codec}`);
    assert.equal(typeof seen[0].id, 'string');
    await until(() => h.online === 2, 'two online');
  });

  test(`${codec}: peer messages are handed over once and acknowledged`, async () => {
    const alice = client(`alice-${codec}`, { codec });
    const bob = client(`bob-${codec}`, { codec });
    const got = [];
    bob.on('peer', (m) => { got.push(m.body.n); });
    await until(() => alice.status === 'open' && bob.status === 'open', 'both open');
    for (let n = 0; n < 5; n++) {
      const ack = await alice.sendPeer(`bob-${codec}`, { n }, { id: `m-${n}` });
      assert.equal(ack.duplicate, false);
    }
    const again = await alice.sendPeer(`bob-${codec}`, { n: 0 }, { id: 'm-0' });
    assert.equal(again.duplicate, true);
    await until(() => got.length === 5, 'five messages');
    assert.deepEqual(got, [0, 1, 2, 3, 4]);
    // Another client of bob's that starts from bob's persisted cursor is
    // handed nothing again, whether or not the server has the ack yet.
    const cursor = bob.inboxCursor;
    const bob2 = client(`bob-${codec}`, { codec, inboxCursor: cursor });
    const replayed = [];
    bob2.on('peer', (m) => replayed.push(m.seq));
    const inbox = await bob2.once('inbox');
    assert.equal(inbox.recovered, true);
    assert.deepEqual(replayed, []);
    assert.ok(cursor >= 5);
  });
}

test('presence and history where the room keeps them; retract', async () => {
  const room = 'keep-1';
  const host = client('kh', { rooms: { [room]: 'host' } });
  const h = await host.join(room);
  assert.ok(h.presence.has('kh'));
  const seen = [];
  h.on('action', (a) => seen.push(a));
  h.send('comment', { text: 'one' });
  h.send('comment', { text: 'two' });
  await until(() => seen.length === 2, 'two comments');
  const viewer = client('kv', { codec: 'json' });
  const v = await viewer.join(room);
  assert.deepEqual(v.history.map((a) => a.body.text), ['one', 'two']);
  assert.ok(v.presence.has('kh') && v.presence.has('kv'));
  await until(() => h.presence.has('kv'), 'the host sees the viewer');
  const retracted = new Promise((resolve) => v.on('retract', resolve));
  const answer = await h.retract(seen[0].id);
  assert.equal(answer.type, 'moderated');
  assert.equal(await retracted, seen[0].id);
  assert.deepEqual(v.history.map((a) => a.body.text), ['two']);
  const plain = await client('kv2').join('plain-room');
  assert.equal(plain.presence, null);
  assert.equal(plain.history, null);
});

test('a banned member gets left, the room is forgotten and a new join is refused', async () => {
  const room = 'ban-room';
  const host = client('bh', { rooms: { [room]: 'host' } });
  const viewer = client('bv');
  const h = await host.join(room);
  const v = await viewer.join(room);
  const left = v.once('left');
  await h.moderate('ban', 'bv', { reason: 'spam' });
  const why = await left;
  assert.equal(why.reason, 'banned');
  assert.equal(why.message, 'spam');
  assert.equal(viewer.rooms.has(room), false);
  await assert.rejects(viewer.join(room), (err) => err.code === 'banned');
});

test('the token is refreshed before it expires, without a disconnect', async () => {
  const room = 'refresh-room';
  const host = client('rh', { rooms: { [room]: 'host' } });
  const viewer = client('rv', { ttl: 3 });
  const h = await host.join(room);
  const v = await viewer.join(room);
  let disconnects = 0;
  viewer.on('disconnected', () => { disconnects += 1; });
  const refreshed = viewer.once('token_refreshed');
  await refreshed;
  assert.ok(viewer.tokens() >= 2);
  h.write('s', 1);
  await until(() => v.state.get('s') === 1, 'a write after the refresh');
  // Past the first token's expiry: still connected, still in the room.
  await until(() => viewer.tokens() >= 3, 'a second refresh', 10000);
  h.write('s', 2);
  await until(() => v.state.get('s') === 2, 'a write after the second refresh');
  assert.equal(disconnects, 0);
  assert.equal(viewer.status, 'open');
});

test('a room past the poll threshold takes its state by polling, same API', async () => {
  const room = 'poll-room';
  const host = client('ph', { rooms: { [room]: 'host' } });
  const h = await host.join(room);
  h.write('big', { v: 1 });
  const viewers = [];
  for (let i = 0; i < 3; i++) viewers.push(await client(`pv${i}`, { codec: i % 2 ? 'json' : 'msgpack' }).join(room));
  const last = viewers[2];
  await until(() => viewers.every((r) => r.stateMode === 'poll'), 'poll mode');
  h.write('big', { v: 2 });
  await until(() => last.state.get('big')?.v === 2, 'the polled value', 10000);
  assert.equal(last.state.versions.big, 2);
});
