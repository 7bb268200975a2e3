/**
 * The package as a user gets it: `npm pack`, `npm install` of the tarball in
 * a fresh directory (no network beyond the registry for @msgpack/msgpack),
 * an import from there, and `tsc --noEmit` of examples/viewer.ts against the
 * installed declarations.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const PKG = resolve(fileURLToPath(import.meta.url), '../..');
const TSC = join(PKG, 'node_modules/typescript/bin/tsc');

test('the tarball installs in a fresh directory and its types check', { timeout: 180000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'liveroom-pack-'));
  try {
    execFileSync('npm', ['pack', '--pack-destination', dir], { cwd: PKG, stdio: 'pipe' });
    const tarball = readdirSync(dir).find((f) => /^liveroom-client-.*\.tgz$/.test(f));
    assert.ok(tarball, 'npm pack made a tarball');
    const app = join(dir, 'app');
    execFileSync('mkdir', ['-p', app]);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    execFileSync('npm', ['install', '--no-audit', '--no-fund', `../${tarball}`], { cwd: app, stdio: 'pipe' });
    const out = execFileSync('node', ['--input-type=module', '-e',
      "import { connect, RoomState } from 'liveroom-client'; console.log(typeof connect, typeof RoomState)"],
    { cwd: app, encoding: 'utf8' });
    assert.equal(out.trim(), 'function function');
    copyFileSync(join(PKG, 'examples/viewer.ts'), join(app, 'viewer.ts'));
    execFileSync('node', [TSC, '--noEmit', '--strict', '--target', 'es2022', '--module', 'nodenext',
      '--moduleResolution', 'nodenext', '--lib', 'es2022,dom', '--skipLibCheck', 'false', 'viewer.ts'],
    { cwd: app, stdio: 'pipe' });
    // And a type error is caught (the check can fail).
    writeFileSync(join(app, 'bad.ts'), "import { connect } from 'liveroom-client';\nconnect('ws://x', {});\n");
    assert.throws(() => execFileSync('node', [TSC, '--noEmit', '--strict', '--module', 'nodenext',
      '--moduleResolution', 'nodenext', 'bad.ts'], { cwd: app, stdio: 'pipe' }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
