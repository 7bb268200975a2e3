/**
 * The version rules without a server (docs/PROTOCOL.md, "Using the
 * versions", "Epochs", "Honest recovery"): latest wins, a gap asks for one
 * sync, a batch is checked once after its last frame, a new epoch or an
 * unrecovered answer replaces everything.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RoomState } from '../src/state.js';
import { Room } from '../src/room.js';
import { closeAdvice, tokenExpiry } from '../src/client.js';

const joined = (extra) => ({ type: 'joined', room: 'r', epoch: 'e1', total: 3, members: 1,
  versions: { a: 2, b: 1 }, sections: [{ section: 'a', partial: 2, value: 'A2' }, { section: 'b', partial: 1, value: 'B1' }],
  ...extra });

/** A room on a stand-in client that records the syncs it is asked for. */
function roomWithSyncs() {
  const syncs = [];
  const client = { _sync: (room, frame) => { syncs.push(frame); return true; }, _forget() {} };
  const room = new Room(client, 'r');
  const handle = (...frames) => {
    const touched = new Set();
    for (const f of frames) room._handle(f, touched);
    for (const r of touched) r._check();
  };
  return { room, syncs, handle };
}

test('a pushed state moves a section forward only (latest wins)', () => {
  const s = new RoomState();
  s.applySnapshot(joined());
  assert.equal(s.applyState({ section: 'a', partial: 4, total: 5, value: 'A4' }), true);
  assert.equal(s.applyState({ section: 'a', partial: 3, total: 4, value: 'A3' }), false);
  assert.equal(s.get('a'), 'A4');
  assert.equal(s.total, 5);
  assert.equal(s.consistent(), true); // a jumped by two: nothing is missing
});

test('a gap asks for one sync, with known and epoch; the reply heals it', () => {
  const { room, syncs, handle } = roomWithSyncs();
  handle(joined());
  assert.equal(syncs.length, 0);
  handle({ type: 'state', room: 'r', section: 'a', partial: 3, total: 5, value: 'A3' }); // b moved unseen
  handle({ type: 'state', room: 'r', section: 'a', partial: 4, total: 6, value: 'A4' });
  assert.equal(syncs.length, 1, 'one sync while one is outstanding');
  assert.deepEqual(syncs[0], { type: 'sync', room: 'r', known: { a: 3, b: 1 }, epoch: 'e1' });
  handle({ type: 'sync', room: 'r', epoch: 'e1', total: 6, versions: { a: 4, b: 2 }, recovered: true,
    sections: [{ section: 'b', partial: 2, value: 'B2' }] });
  assert.equal(room.state.get('b'), 'B2');
  assert.equal(room.state.get('a'), 'A4');
  assert.equal(room.state.consistent(), true);
});

test('a batch is checked once, after its last frame', () => {
  const { room, syncs, handle } = roomWithSyncs();
  handle(joined());
  handle({ type: 'state', room: 'r', section: 'a', partial: 3, total: 5, value: 'A3' },
    { type: 'state', room: 'r', section: 'b', partial: 2, total: 5, value: 'B2' });
  assert.equal(syncs.length, 0);
  assert.equal(room.state.total, 5);
});

test('a new epoch or recovered: false replaces everything; the event says why', () => {
  const { room, handle } = roomWithSyncs();
  handle(joined());
  const events = [];
  room.on('recovered', (r) => events.push(r));
  handle(joined({ epoch: 'e2', total: 1, versions: { c: 1 }, sections: [{ section: 'c', partial: 1, value: 'C' }],
    recovered: false, reason: 'epoch_changed' }));
  assert.deepEqual({ ...room.state.versions }, { c: 1 });
  assert.equal(room.state.get('a'), undefined);
  assert.equal(room.state.epoch, 'e2');
  assert.deepEqual(events, [{ recovered: false, reason: 'epoch_changed' }]);
  handle(joined({ epoch: 'e2', total: 1, versions: { c: 1 }, sections: [{ section: 'c', partial: 1, value: 'C1' }],
    recovered: false, reason: 'versions_ahead' }));
  assert.equal(room.state.get('c'), 'C1');
});

test('a resumed snapshot never moves a section back', () => {
  const s = new RoomState();
  s.applySnapshot(joined());
  s.applyState({ section: 'a', partial: 3, total: 4, value: 'A3' }); // via the old connection
  s.applySnapshot({ epoch: 'e1', total: 3, versions: { a: 2, b: 1 }, recovered: true, sections: [] });
  assert.equal(s.get('a'), 'A3');
  assert.equal(s.versions.a, 3);
  assert.equal(s.total, 4);
});

test('history de-duplicated against live actions; retract removes', () => {
  const { room, handle } = roomWithSyncs();
  const action = { type: 'action', room: 'r', kind: 'comment', id: 'x-1', body: { text: 'hi' } };
  handle(joined({ history: [action] }));
  const live = [];
  room.on('action', (a) => live.push(a));
  handle(action, { ...action, id: 'x-2' });
  assert.deepEqual(live.map((a) => a.id), ['x-2']);
  handle({ type: 'retract', room: 'r', id: 'x-1' });
  assert.deepEqual(room.history, []);
});

test('close codes and token expiry', () => {
  assert.equal(closeAdvice(4001), 'give_up');
  assert.equal(closeAdvice(1000), 'give_up');
  assert.equal(closeAdvice(4101), 'reconnect');
  assert.equal(closeAdvice(1006), 'reconnect');
  assert.equal(closeAdvice(4200), 'renew_token');
  const payload = Buffer.from(JSON.stringify({ sub: 'a', exp: 1700000000 })).toString('base64url');
  assert.equal(tokenExpiry(`x.${payload}.y`), 1700000000 * 1000);
  assert.equal(tokenExpiry('garbage'), null);
});
