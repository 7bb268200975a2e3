/**
 * The JavaScript half of issue #17's cluster acceptance, driven by
 * tests/e2e/test_sdk_js_cluster.py (which starts the router, the edges, NATS,
 * Redis and PostgreSQL, and kills and restarts the edge that owns the room).
 *
 * stdin, first line, JSON: {router, room, senderUrl, stateUrl, tokens: {host,
 * viewer, sender}, codecs: {host, viewer, sender}, maxSeconds}. A host and a
 * viewer join `room` through the router (`GET /v1/route`, asked on every
 * connect); the host keeps writing state, the sender (connected to
 * `senderUrl`) keeps sending the viewer numbered peer messages. Then, on
 * stdin, `stop`: the loops end, the host writes meta {final: true}, and once
 * the viewer and the host hold the head of `stateUrl` (bounded) one result
 * line is printed.
 *
 * stdout, one JSON object a line: {"ready": true} once both are in the room;
 * {"connected": who, "url": ws-url} on every connection; {"peers": n,
 * "written": m} on every peer message the viewer is handed (m: state writes
 * the host sent so far); {"result": {...}} at the end;
 * {"error": message} on a failure (exit status 1). Every wait is bounded
 * (maxSeconds for the whole run, default 120).
 */
import { createInterface } from 'node:readline';
import { connect } from '../src/index.js';
import { until, webSocketClass } from './server.js';

const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function fail(err) {
  out({ error: String(err?.stack ?? err) });
  process.exit(1);
}
process.on('unhandledRejection', fail);

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function nextLine(what, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} on stdin within ${ms} ms`)), ms);
  });
  try {
    const { value, done } = await Promise.race([lines.next(), timeout]);
    if (done) throw new Error(`stdin closed before ${what}`);
    return value.trim();
  } finally {
    clearTimeout(timer);
  }
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms); }),
  ]);
}

const config = JSON.parse(await nextLine('config', 10000));
const maxMs = 1000 * (config.maxSeconds ?? 120);
setTimeout(() => fail(new Error(`the scenario ran longer than ${maxMs} ms`)), maxMs).unref();

const Base = await webSocketClass();
const where = {}; // who -> the URL of its latest socket
const counts = { connects: {}, redirects: {}, errors: {} };
const bump = (table, who) => { table[who] = (table[who] ?? 0) + 1; };

function open(who, url) {
  // The socket's URL tells which edge a client is on (the client keeps its welcome private).
  const WebSocket = class extends Base {
    constructor(u, ...rest) { super(u, ...rest); where[who] = String(u); }
  };
  const client = connect(url, {
    WebSocket, codec: config.codecs?.[who] ?? 'msgpack', minDelay: 100, maxDelay: 1000,
    pingInterval: 1000, getToken: () => config.tokens[who],
  });
  client.on('connected', () => { bump(counts.connects, who); out({ connected: who, url: where[who] }); });
  client.on('redirect', () => bump(counts.redirects, who));
  client.on('server_error', () => bump(counts.errors, who));
  return client;
}

const throughRouter = (user) => async () => {
  const params = new URLSearchParams({ room: config.room, client: user });
  const res = await fetch(`${config.router}/v1/route?${params}`);
  if (!res.ok) throw new Error(`route: ${res.status} ${await res.text()}`);
  return (await res.json()).url;
};

const host = open('host', throughRouter('host'));
const viewer = open('viewer', throughRouter('viewer'));
const sender = open('sender', config.senderUrl);
const got = [];
let written = 0;
let stopping = false;
viewer.on('peer', (m) => { got.push(m.body.k); out({ peers: got.length, written }); });
const [h, v] = await withTimeout(Promise.all([host.join(config.room), viewer.join(config.room)]),
  20000, 'host and viewer in the room');
const recoveries = { host: [], viewer: [] };
h.on('recovered', (r) => recoveries.host.push(r));
v.on('recovered', (r) => recoveries.viewer.push(r));
h.on('error', () => bump(counts.errors, 'host'));
out({ ready: true });

const writing = (async () => {
  // Whenever connected: writes into a dying edge may be lost, what counts
  // is what the server ends with.
  for (let n = 0; !stopping; n++) {
    if (h.joined && h.write(n % 2 ? 'score' : 'meta', { n })) written += 1;
    await sleep(30);
  }
})();
let sent = 0;
const sending = (async () => {
  while (!stopping) {
    const k = sent;
    // Retried with the same id across reconnects: stored once.
    await withTimeout(sender.sendPeer('viewer', { k }, { id: `m${k}` }), 30000, `peer ${k} stored`);
    sent = k + 1;
    await sleep(20);
  }
})();

const command = await nextLine('stop', maxMs);
if (command !== 'stop') fail(new Error(`unknown command ${JSON.stringify(command)}`));
stopping = true;
await withTimeout(Promise.all([writing, sending]), 30000, 'the loops to end');
await until(() => h.joined, 'the host in the room', 15000);
if (!h.write('meta', { final: true })) fail(new Error('the final write was not sent'));

const sameVersions = (a, b) => Object.keys(a).length === Object.keys(b).length
  && Object.entries(a).every(([s, n]) => b[s] === n);
const view = (room) => ({ versions: room.state.versions, epoch: room.state.epoch,
  meta: room.state.get('meta') ?? null });
let converged = true;
try {
  await until(async () => {
    const head = await (await fetch(config.stateUrl)).json();
    return [h, v].every((room) => room.state.get('meta')?.final === true
      && room.state.epoch === head.epoch && sameVersions(room.state.versions, head.versions))
      && got.length >= sent;
  }, 'the host and the viewer at the final versions, every peer message', 20000);
} catch {
  converged = false; // reported: the Python side says what differs
}
// A round trip after the last one: a late replay would show up as a duplicate.
await withTimeout(viewer.ping(), 5000, 'a pong');
await sleep(300);
out({ result: { converged, sent, written, peers: got, host: view(h), viewer: view(v),
  recoveries, ...counts } });
for (const c of [host, viewer, sender]) c.close();
process.exit(0);
