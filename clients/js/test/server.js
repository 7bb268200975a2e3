/**
 * A real `liveroom serve --dev` for the tests: started with --port 0 (the
 * port is read from its 'listening on http://127.0.0.1:PORT' log line),
 * killed (SIGKILL, as a crash) or stopped (SIGTERM) and started again on the
 * same port and data directory. The Python is $PYTHON, else the main
 * checkout's venv, else python3; the checkout this package sits in comes
 * first on PYTHONPATH so its own code is served.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(fileURLToPath(import.meta.url), '../../../..');
const LISTENING = /listening on http:\/\/127\.0\.0\.1:(\d+)/;
export const API_KEY = 'js-sdk-test-key';

function python() {
  if (process.env.PYTHON) return process.env.PYTHON;
  for (const p of [join(REPO, '.venv/bin/python'), '/work/main/.venv/bin/python']) {
    if (existsSync(p)) return p;
  }
  return 'python3';
}

export class Server {
  constructor({ args = [], roomsConfig = null } = {}) {
    this.dataDir = mkdtempSync(join(tmpdir(), 'liveroom-js-'));
    this.args = args;
    if (roomsConfig) {
      const path = join(this.dataDir, 'rooms.toml');
      writeFileSync(path, roomsConfig);
      this.args = [...args, '--rooms-config', path];
    }
    this.port = 0;
    this.proc = null;
    this.log = '';
  }

  get url() { return `http://127.0.0.1:${this.port}`; }
  get wsUrl() { return `ws://127.0.0.1:${this.port}/ws`; }

  /** Start (again: on the port it had) and resolve once it listens. */
  start(timeout = 20000) {
    const cmd = ['-m', 'liveroom.cli', 'serve', '--dev', '--host', '127.0.0.1',
      '--port', String(this.port), '--data-dir', this.dataDir, '--no-demo-room', ...this.args];
    const env = { ...process.env, PYTHONPATH: REPO, PYTHONUNBUFFERED: '1', LIVEROOM_API_KEY: API_KEY,
      LIVEROOM_AGENT_BACKEND: 'scripted' };
    const proc = spawn(python(), cmd, { cwd: REPO, env, stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc = proc;
    return new Promise((resolvePort, reject) => {
      const timer = setTimeout(() => reject(new Error(`server did not start:\n${this.log}`)), timeout);
      let buffered = '';
      proc.stderr.setEncoding('utf8');
      proc.stderr.on('data', (chunk) => {
        this.log += chunk;
        buffered += chunk;
        const m = LISTENING.exec(buffered);
        if (m && this.proc === proc && !this.listening) {
          this.listening = true;
          clearTimeout(timer);
          this.port = Number(m[1]);
          resolvePort(this);
        }
      });
      proc.on('exit', (code) => {
        if (!this.listening) {
          clearTimeout(timer);
          reject(new Error(`server exited with ${code}:\n${this.log}`));
        }
      });
    });
  }

  /** Stop with a signal; resolves once the process is gone. */
  end(signal) {
    const proc = this.proc;
    this.proc = null;
    this.listening = false;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
    return new Promise((done) => {
      proc.once('exit', () => done());
      proc.kill(signal);
    });
  }

  kill() { return this.end('SIGKILL'); }
  stop() { return this.end('SIGTERM'); }

  async restart(signal = 'SIGKILL') {
    await this.end(signal);
    await this.start();
  }

  async dispose() {
    await this.end('SIGKILL');
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** A dev token (POST /v1/dev/token). */
  async token(user, { rooms, ttl = 3600, name } = {}) {
    const res = await fetch(`${this.url}/v1/dev/token`, {
      method: 'POST',
      body: JSON.stringify({ user, name: name ?? user, rooms, ttl }),
    });
    if (!res.ok) throw new Error(`dev token: ${res.status} ${await res.text()}`);
    return (await res.json()).token;
  }

  /** GET a JSON document of the HTTP API. */
  async get(path) {
    const res = await fetch(`${this.url}${path}`, { headers: { Authorization: `Bearer ${API_KEY}` } });
    return { status: res.status, body: res.status === 204 ? null : await res.json() };
  }

  async post(path, body) {
    const res = await fetch(`${this.url}${path}`, {
      method: 'POST', body: JSON.stringify(body),
      headers: { Authorization: `Bearer ${API_KEY}` },
    });
    return { status: res.status, body: await res.json() };
  }
}

/** The WebSocket class the tests use: the global one, else the `ws` package. */
export async function webSocketClass() {
  return globalThis.WebSocket ?? (await import('ws')).default;
}

/** Poll `check` until it is truthy; fail after `timeout` ms with `what`. */
export async function until(check, what, timeout = 15000) {
  const end = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
