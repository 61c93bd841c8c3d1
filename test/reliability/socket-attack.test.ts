// Another local user tries to turn the agent's socket cleanup into the removal of a file of
// theirs choosing. The kernel keeps the path a socket was bound at (any user reads it in
// /proc/net/unix), and when the server closes Node unlinks that path again, following any
// folder symlink on the way. With the socket in a folder everyone can write (1777), the
// attacker plants symlinks at every name it can derive from the bound path, with
// fs.protected_symlinks off (as on many hosts), and the app then ends normally: the victim,
// a root-owned file named like the socket in a folder the symlinks point at, must survive.
//
// Needs root (to create the attacker user and to run the app as another user than it).

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, chmodSync, constants, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanup, startApp, tempDir, waitFor } from '../helpers';

const SYSCTL = '/proc/sys/fs/protected_symlinks';
const isRoot = process.getuid?.() === 0;
const hasUseradd = ['/usr/sbin/useradd', '/usr/sbin/userdel', '/sbin/useradd', '/sbin/userdel'].some((f) => existsSync(f));

function sysctlWritable(): boolean {
  try {
    accessSync(SYSCTL, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function skipReason(): string | undefined {
  if (process.platform !== 'linux') return 'needs Linux (/proc/net/unix)';
  if (!isRoot) return 'needs root to create a second user';
  if (!hasUseradd) return 'needs useradd/userdel';
  // With the protection on and not ours to switch off, the kernel itself refuses to follow
  // the planted link: the attack could not succeed even against a vulnerable agent.
  if (readFileSync(SYSCTL, 'utf8').trim() !== '0' && !sysctlWritable()) return `${SYSCTL} is on and not writable`;
  return undefined;
}
const skip = skipReason();
if (skip) console.warn(`socket-attack test skipped: ${skip}`);

// The attacker: reads every bound path ending in the socket's name from /proc/net/unix and,
// until told to stop (plus a last window), plants a symlink to the victim's folder in place
// of the bound path's folder and a symlink to the victim in place of the bound path itself.
const ATTACKER = String.raw`
const fs = require('node:fs');
const path = require('node:path');
const [name, victimDir, victimFile] = process.argv.slice(2);
const seen = new Set();
let stopAt = Date.now() + 60000;
const say = (line) => process.stdout.write(line + '\n');
process.stdin.on('data', () => { stopAt = Math.min(stopAt, Date.now() + 1500); });
function boundPaths() {
  return fs.readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)
    .map((l) => l.trim().split(/\s+/).slice(7).join(' '))
    .filter((p) => p.startsWith('/') && (p.endsWith('/' + name) || p.endsWith('.' + name)));
}
function plant(target, at, what) {
  try {
    fs.symlinkSync(target, at);
    say('planted ' + what + ' ' + at);
  } catch {}
}
const timer = setInterval(() => {
  for (const p of boundPaths()) {
    if (!seen.has(p)) { seen.add(p); say('saw ' + p); }
    plant(victimDir, path.dirname(p), 'folder');
    plant(victimFile, p, 'file');
  }
  if (Date.now() > stopAt) { clearInterval(timer); say('done'); process.exit(0); }
}, 2);
`;

const user = `ispyatk${process.pid}${Math.random().toString(36).slice(2, 6)}`;
let userMade = false;
let sysctlBefore: string | undefined;
const ours = new Set<ChildProcess>();

afterAll(async () => {
  // The attacker must be gone before userdel (which refuses a user with live processes).
  await Promise.all(
    [...ours].map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          c.once('exit', () => resolve());
          process.kill(c.pid!, 'SIGKILL');
        }),
    ),
  );
  await cleanup();
  if (sysctlBefore !== undefined) writeFileSync(SYSCTL, sysctlBefore);
  if (userMade) spawnSync('userdel', [user]);
});

function idOf(flag: '-u' | '-g'): number {
  return Number(spawnSync('id', [flag, user], { encoding: 'utf8' }).stdout.trim());
}

describe.skipIf(skip !== undefined)('the socket in a folder everyone can write (1777)', () => {
  it("cannot be turned into the removal of another file by a local user's symlinks", async () => {
    const made = spawnSync('useradd', ['--system', '--no-create-home', '--no-user-group', '--shell', '/usr/sbin/nologin', user], { encoding: 'utf8' });
    expect(made.status, made.stderr).toBe(0);
    userMade = true;
    const [uid, gid] = [idOf('-u'), idOf('-g')];
    expect(uid).toBeGreaterThan(0);
    if (readFileSync(SYSCTL, 'utf8').trim() !== '0') {
      sysctlBefore = readFileSync(SYSCTL, 'utf8').trim();
      writeFileSync(SYSCTL, '0');
    }

    const base = tempDir();
    chmodSync(base, 0o755); // the attacker must reach the shared folder inside
    const shared = path.join(base, 'shared');
    mkdirSync(shared);
    chmodSync(shared, 0o1777);
    const victimDir = path.join(base, 'victim');
    mkdirSync(victimDir, { mode: 0o755 });
    const victim = path.join(victimDir, 'app.sock');
    writeFileSync(victim, 'root-owned, must survive\n', { mode: 0o644 });
    const script = path.join(base, 'attacker.cjs');
    writeFileSync(script, ATTACKER, { mode: 0o644 });

    const attacker = spawn(process.execPath, [script, 'app.sock', victimDir, victim], { uid, gid, cwd: base, env: { PATH: process.env.PATH }, stdio: ['pipe', 'pipe', 'pipe'] });
    ours.add(attacker);
    let said = '';
    attacker.stdout!.on('data', (d) => (said += d));
    attacker.stderr!.on('data', (d) => (said += d));

    const app = await startApp({ script: 'http-app.cjs', socket: path.join(shared, 'app.sock') });
    // The app answers (so the agent finished binding), and the attacker has read its bound path.
    await app.port();
    await waitFor(() => /^saw \//m.test(said), 10_000, `the attacker to read the bound path (it said: ${said})`);
    // A last window of attempts now that the bind is over, then the app ends as apps end.
    attacker.stdin!.end('stop\n');
    await waitFor(() => /^done$/m.test(said), 10_000, `the attacker to finish (it said: ${said})`);
    const res = await app.get('/exit');
    expect(res.body).toBe('bye');
    expect(await app.exited).toEqual({ code: 0, signal: null });

    expect(existsSync(victim), `the victim was removed; the attacker said:\n${said}`).toBe(true);
    expect(readFileSync(victim, 'utf8')).toBe('root-owned, must survive\n');
    // The attack really ran: it saw the bound path, and nothing it planted was in our way.
    expect(said).toMatch(/^saw \/.*app\.sock$/m);
    expect(said).not.toMatch(/^planted /m);
  });
});
