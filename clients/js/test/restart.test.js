/**
 * The acceptance of issue #17 for the JavaScript client: the server is
 * killed (SIGKILL, as a crash) or stopped (SIGTERM: close 4101) and started
 * again on its port and data directory while a viewer is in a room whose
 * state a host keeps changing and a sender keeps sending it peer messages.
 * The viewer ends with the server's final versions and values (the new
 * epoch, since the embedded state store is in memory) and has been handed
 * every peer message exactly once (the inbox is SQLite, in the data dir).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../src/index.js';
import { Server, until, webSocketClass } from './server.js';

const MESSAGES = 30;
const servers = [];
after(async () => { for (const s of servers) await s.dispose(); });

for (const [codec, signal] of [['msgpack', 'SIGKILL'], ['json', 'SIGKILL'], ['msgpack', 'SIGTERM']]) {
  test(`${codec}: ${signal} and restart while state changes and peers flow`, async () => {
    const WebSocket = await webSocketClass();
    const server = new Server({ args: ['--peer-rate', '200', '--peer-burst', '200'] });
    servers.push(server);
    await server.start();
    const room = 'restart-room';
    const open = (user, rooms) => connect(server.wsUrl, {
      WebSocket, codec, minDelay: 50, maxDelay: 400,
      getToken: () => server.token(user, { rooms }),
    });
    const host = open('host', { [room]: 'host' });
    const viewer = open('viewer');
    const sender = open('sender');
    try {
      const h = await host.join(room);
      const v = await viewer.join(room);
      const got = [];
      viewer.on('peer', (m) => { got.push(m.body.n); });
      const recoveries = [];
      v.on('recovered', (r) => recoveries.push(r));
      let disconnects = 0;
      viewer.on('disconnected', () => { disconnects += 1; });

      let restarted = null;
      for (let n = 0; n < MESSAGES; n++) {
        if (n === MESSAGES / 2) restarted = server.restart(signal);
        // The host writes whenever it is connected: writes into a dying
        // server may be lost, what counts is what the server ends with.
        h.write('counter', n);
        h.write(`s${n % 3}`, { n });
        await sender.sendPeer('viewer', { n }, { id: `p-${n}` });
      }
      await restarted;
      await until(() => h.joined, 'the host back in the room');
      assert.ok(h.write('final', 'done'));

      await until(async () => {
        const head = (await server.get(`/v1/rooms/${room}/state`)).body;
        return head.epoch === v.state.epoch && head.total === v.state.total
          && JSON.stringify(sorted(head.versions)) === JSON.stringify(sorted(v.state.versions));
      }, 'the viewer at the final versions');
      for (const section of Object.keys(v.state.versions)) {
        const { body } = await server.get(`/v1/rooms/${room}/state/${section}`);
        assert.deepEqual(v.state.get(section), body.value, section);
      }
      assert.equal(v.state.get('final'), 'done');
      await until(() => got.length >= MESSAGES, 'every peer message');
      assert.deepEqual(got, [...Array(MESSAGES).keys()], 'each peer message once, in order');
      assert.ok(disconnects >= 1, 'the viewer saw the server go');
      assert.ok(recoveries.some((r) => !r.recovered && r.reason === 'epoch_changed'),
        `an honest epoch_changed: ${JSON.stringify(recoveries)}`);
      // Nothing more arrives: a late replay would be a duplicate.
      const ping = await viewer.ping();
      assert.equal(ping.type, 'pong');
      assert.equal(got.length, MESSAGES);
    } finally {
      for (const c of [host, viewer, sender]) c.close();
    }
  });
}

function sorted(obj) {
  return Object.fromEntries(Object.entries(obj).sort(([a], [b]) => a.localeCompare(b)));
}
