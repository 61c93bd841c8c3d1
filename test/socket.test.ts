// The agent's socket exists at its final path only once it accepts connections: tests,
// scripts and `ispy run` globs wait for the file and connect at once, and a sweep by another
// agent starting in the same folder must never take a socket mid-bind for a stale one.
// The path it was bound at (which Node unlinks again when the server closes) always lies in
// a folder only the app's user can write; a folder where anyone could replace or remove
// the socket is refused.

import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, linkSync, lstatSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { cleanup, DIST, runCli, startApp, tempDir, waitFor } from './helpers';
import { bindSocket, MAX_SOCKET_PATH, removeSocket, sweepStaleSockets } from '../dist/src/agent/socket.js';
import { finalSocketPath, stagingPid } from '../dist/src/protocol/socket-path.js';
import { listeningUnixSockets } from '../src/cli/procfs';

const isRoot = process.getuid?.() === 0;
const mounts: string[] = [];

afterAll(async () => {
  // Detached lazily if still busy: a mount left in a temp folder would stop cleanup().
  for (const m of mounts) if (spawnSync('umount', [m]).status !== 0) spawnSync('umount', ['-l', m]);
  await cleanup();
});

/** Binds a server at `file`, recording whether the final path existed when listen() ran. */
async function bindWatched(file: string) {
  const server = net.createServer((s) => s.end());
  const listens: { at: string; finalExisted: boolean }[] = [];
  const listen = server.listen.bind(server);
  (server as any).listen = (at: string, cb: () => void) => {
    listens.push({ at, finalExisted: existsSync(file) });
    return listen(at, cb);
  };
  const bound = await bindSocket(server, file);
  return { server, bound, listens };
}

function connects(file: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(file, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

describe('bindSocket', () => {
  for (const [kind, mode] of [
    ['a private folder', 0o700],
    ['a shared folder', 0o755],
  ] as const) {
    it(`in ${kind}, listens under a staging name and links the socket into place, 0600, leaving nothing else`, async () => {
      const dir = tempDir();
      chmodSync(dir, mode);
      const file = path.join(dir, 'app.sock');
      const { server, bound, listens } = await bindWatched(file);
      try {
        expect(listens).toHaveLength(1);
        expect(listens[0].at).not.toBe(file);
        expect(listens[0].finalExisted).toBe(false);
        expect(lstatSync(file).isSocket()).toBe(true);
        expect(lstatSync(file).mode & 0o777).toBe(0o600);
        expect(bound.ino).toBe(lstatSync(file).ino);
        expect(readdirSync(dir)).toEqual(['app.sock']);
        expect(await connects(file)).toBe(true);
      } finally {
        await new Promise((r) => server.close(r));
      }
    });
  }

  it('in a private folder, binds in place when a staging name would not fit a UNIX socket path', async () => {
    const dir = tempDir();
    // The final path just fits; the staging name beside it (~20 bytes more) would not.
    const file = path.join(dir, 'x'.repeat(MAX_SOCKET_PATH - Buffer.byteLength(dir) - 1));
    expect(Buffer.byteLength(file)).toBe(MAX_SOCKET_PATH);
    const { server, listens } = await bindWatched(file);
    try {
      expect(listens.map((l) => l.at)).toEqual([file]);
      expect(lstatSync(file).mode & 0o777).toBe(0o600);
      expect(await connects(file)).toBe(true);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  it('outside a private folder, falls back to a short staging name, and refuses a path even that would not fit', async () => {
    const dir = tempDir();
    chmodSync(dir, 0o755);
    // The final path just fits; <dir>/.ispy-XXXXXX/<name> would not, <dir>/.ispy-XXXXXX/s does.
    const long = path.join(dir, 'y'.repeat(MAX_SOCKET_PATH - Buffer.byteLength(dir) - 1));
    const { server, listens } = await bindWatched(long);
    try {
      expect(path.basename(listens[0]!.at)).toBe('s');
      expect(await connects(long)).toBe(true);
      expect(readdirSync(dir)).toEqual([path.basename(long)]);
    } finally {
      await new Promise((r) => server.close(r));
    }
    // A folder so deep that even <dir>/.ispy-XXXXXX/s is one byte too long.
    let deep = dir;
    while (Buffer.byteLength(deep) < MAX_SOCKET_PATH - 14 - 10) deep = path.join(deep, 'd'.repeat(8));
    deep = path.join(deep, 'e'.repeat(MAX_SOCKET_PATH - 14 - Buffer.byteLength(deep) - 1));
    mkdirSync(deep, { recursive: true, mode: 0o755 });
    chmodSync(deep, 0o755);
    const file = path.join(deep, 'ab');
    await expect(bindSocket(net.createServer(), file)).rejects.toThrow(/path is too long to bind safely outside a private folder \(needs 1 fewer byte\); use a shorter path or a 0700 folder/);
    expect(readdirSync(deep)).toEqual([]);
  });
});

/** A folder only `uid` can change: theirs, mode 700, in a folder others cannot swap it out of. */
function onlyTheirs(dir: string, uid: number): boolean {
  const st = lstatSync(dir);
  const parent = statSync(path.dirname(dir));
  const parentSafe = (parent.mode & 0o022) === 0 || (parent.mode & 0o1000) !== 0;
  return st.isDirectory() && st.uid === uid && (st.mode & 0o077) === 0 && parentSafe;
}

describe('bindSocket in a sticky folder others can write (such as /tmp)', () => {
  it('binds in the private folder under a kept link, links the socket into place 0600, and removeSocket takes both names', async () => {
    const shared = tempDir();
    chmodSync(shared, 0o1777);
    const own = tempDir();
    const file = path.join(shared, 'app.sock');
    const server = net.createServer((s) => s.end());
    const bound = await bindSocket(server, file, own);
    try {
      expect(bound.staged).toBeDefined();
      expect(path.dirname(bound.staged!)).toBe(own);
      expect(path.basename(bound.staged!)).toMatch(new RegExp(`^\\.ispy-link-${process.pid}-[a-z0-9]+\\.app\\.sock$`));
      expect(stagingPid(path.basename(bound.staged!))).toBe(process.pid);
      // The bound name is the kept link: the one Node unlinks at close, in our own folder.
      expect((server.address() as string)).toBe(bound.staged);
      expect(readdirSync(shared)).toEqual(['app.sock']);
      expect(readdirSync(own)).toEqual([path.basename(bound.staged!)]);
      for (const name of [file, bound.staged!]) {
        expect(lstatSync(name).isSocket()).toBe(true);
        expect(lstatSync(name).mode & 0o777).toBe(0o600);
        expect(lstatSync(name).ino).toBe(bound.ino);
      }
      expect(await connects(file)).toBe(true);
      removeSocket(bound);
      expect(readdirSync(shared)).toEqual([]);
      expect(readdirSync(own)).toEqual([]);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  it('leaves no name behind when the server closes first and removeSocket runs after', async () => {
    const shared = tempDir();
    chmodSync(shared, 0o1777);
    const own = tempDir();
    const server = net.createServer();
    const bound = await bindSocket(server, path.join(shared, 'app.sock'), own);
    await new Promise((r) => server.close(r));
    removeSocket(bound);
    expect(readdirSync(shared)).toEqual([]);
    expect(readdirSync(own)).toEqual([]);
  });

  it.skipIf(!isRoot)("says so in one line when another user's stale socket there cannot be removed (the app runs as nobody; needs root)", async () => {
    const base = tempDir();
    chmodSync(base, 0o755);
    const shared = path.join(base, 'shared');
    mkdirSync(shared);
    chmodSync(shared, 0o1777);
    const own = path.join(base, 'own');
    mkdirSync(own, { mode: 0o700 });
    chownSync(own, 65534, 65534);
    // Root's stale socket: bound elsewhere, linked under the name, closed; connectable by anyone.
    const file = path.join(shared, 'app.sock');
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(path.join(base, 'elsewhere'), r));
    linkSync(path.join(base, 'elsewhere'), file);
    await new Promise((r) => server.close(r));
    chmodSync(file, 0o777);
    const script = `require(${JSON.stringify(path.join(DIST, 'src/agent/socket.js'))}).bindSocket(require('node:net').createServer(), ${JSON.stringify(file)}, ${JSON.stringify(own)}).then(() => console.log('bound'), (e) => console.log(e.code + ' ' + e.message))`;
    const r = spawnSync(process.execPath, ['-e', script], { uid: 65534, gid: 65534, cwd: '/', encoding: 'utf8', timeout: 20_000 });
    expect(r.stdout).toBe(`ISPY_ERR_SOCKET socket ${file}: is a stale socket ispy cannot remove (EPERM: operation not permitted, unlink '${file}'); remove it or choose another path\n`);
    expect(lstatSync(file).isSocket()).toBe(true);
    expect(readdirSync(own)).toEqual([]);
  });

  it.skipIf(!isRoot)('refuses, in one line, a folder on another filesystem than the private folder (a tmpfs; needs root)', async () => {
    const mnt = path.join(tempDir(), 'mnt');
    mkdirSync(mnt);
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=1777', 'tmpfs', mnt], { encoding: 'utf8' });
    if (mounted.status !== 0) {
      console.warn(`EXDEV test skipped: cannot mount a tmpfs (${mounted.stderr.trim()})`);
      return;
    }
    mounts.push(mnt);
    const own = tempDir();
    const file = path.join(mnt, 'app.sock');
    const server = net.createServer();
    const err = await bindSocket(server, file, own).then(
      () => undefined,
      (e: Error) => e,
    );
    // Bound after all (a regression): close it, or its socket would hold the mount busy.
    if (server.listening) await new Promise((r) => server.close(r));
    expect(err?.message).toBe(
      `socket ${file}: folder ${mnt} can be written by others, so the socket is bound in ${own} and hard-linked into it, but they are on different filesystems; put the socket in a folder only you can write (e.g. mkdir -m 700 ${mnt}/ispy-0) or set TMPDIR to a folder on the filesystem of ${mnt}`,
    );
    expect((err as any).code).toBe('ISPY_ERR_SOCKET');
    expect(server.listening).toBe(false);
    expect(readdirSync(mnt)).toEqual([]);
    expect(readdirSync(own)).toEqual([]);
  });
});

describe('bindSocket refuses a folder where anyone could replace or remove the socket', () => {
  for (const [mode, who] of [
    [0o777, 'everyone'],
    [0o770, `its group \\(gid \\d+\\)`],
  ] as const) {
    it(`mode ${mode.toString(8)}: one line saying why and what would be right, nothing created`, async () => {
      const dir = tempDir();
      chmodSync(dir, mode);
      const own = tempDir();
      const file = path.join(dir, 'app.sock');
      const server = net.createServer();
      await expect(bindSocket(server, file, own)).rejects.toThrow(
        new RegExp(
          `^socket ${file}: folder ${dir} \\(mode ${mode.toString(8)}\\) can be written by ${who} and is not sticky, so anyone there could replace or remove the socket; use a folder only you can write \\(chmod 700 ${dir}\\) or a sticky one such as /tmp \\(chmod \\+t ${dir}\\)$`,
        ),
      );
      expect(server.listening).toBe(false);
      expect(readdirSync(dir)).toEqual([]);
      expect(readdirSync(own)).toEqual([]);
    });
  }

  it.skipIf(!isRoot)("a folder another user owns, even sticky (its owner may remove anything in it; needs root)", async () => {
    const dir = tempDir();
    chmodSync(dir, 0o1777);
    chownSync(dir, 65534, 65534);
    const file = path.join(dir, 'app.sock');
    const server = net.createServer();
    await expect(bindSocket(server, file, tempDir())).rejects.toThrow(
      `socket ${file}: folder ${dir} belongs to uid 65534, who could replace or remove the socket; use a folder of your own (mode 700), or a sticky one owned by root such as /tmp`,
    );
    expect(server.listening).toBe(false);
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe('the socket of a real app', () => {
  // TMPDIR points the agent's default folder (<tmpdir>/ispy-<uid>) at a temp folder: the
  // user's own stays untouched.
  const cases = [
    ['a private folder', (t: string) => { const d = path.join(t, 'priv'); mkdirSync(d, { mode: 0o700 }); return path.join(d, 'app.sock'); }],
    ['a sticky folder everyone can write', (t: string) => { const d = path.join(t, 'shared'); mkdirSync(d); chmodSync(d, 0o1777); return path.join(d, 'app.sock'); }],
    ['the default folder', () => null],
  ] as const;
  for (const [where, socketIn] of cases) {
    it(`in ${where}: bound (as /proc/<pid>/net/unix shows it) inside a folder only the app's user can write; nothing left after a normal exit`, async () => {
      const t = tempDir();
      const uid = process.getuid!();
      const own = path.join(t, `ispy-${uid}`);
      const socket = socketIn(t);
      const app = await startApp({ script: 'http-app.cjs', socket, env: { TMPDIR: t, NODE_OPTIONS: '--inspect-port=127.0.0.1:0' }, waitForSocket: false });
      const final = socket ?? path.join(own, `${app.pid}.sock`);
      await waitFor(() => existsSync(final) || app.child.exitCode !== null, 20_000, `socket ${final} (stderr: ${app.stderr()})`);
      const bound = await waitFor(() => listeningUnixSockets(app.pid).filter((p) => p.endsWith('.sock'))[0], 10_000, 'the agent in /proc/<pid>/net/unix');
      expect(listeningUnixSockets(app.pid)).toEqual([bound]);
      expect(onlyTheirs(path.dirname(bound), uid), `${bound} is bound in a folder others can change`).toBe(true);
      if (where === 'a sticky folder everyone can write') {
        expect(path.dirname(bound)).toBe(own);
        expect(lstatSync(bound).ino).toBe(lstatSync(final).ino);
        // `ispy attach` still finds the agent through its socket, and names the final path.
        const r = await runCli(['attach', String(app.pid)]);
        expect(r.stderr).toBe(`ispy: process ${app.pid} already has an ispy agent (socket ${final}); connect with \`ispy connect ${final}\`\n`);
        expect(r.code).toBe(1);
      }
      expect((await app.get('/exit')).body).toBe('bye');
      expect(await app.exited).toEqual({ code: 0, signal: null });
      expect(existsSync(final)).toBe(false);
      expect(existsSync(bound)).toBe(false);
      expect(readdirSync(path.dirname(final))).toEqual([]);
      if (existsSync(own)) expect(readdirSync(own)).toEqual([]);
    });
  }

  it('refuses a folder everyone can write without the sticky bit, in one line; the app runs on', async () => {
    const t = tempDir();
    const open = path.join(t, 'open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    const app = await startApp({ script: 'http-app.cjs', socket: path.join(open, 'app.sock'), env: { TMPDIR: t }, waitForSocket: false });
    await app.port();
    await waitFor(() => app.stderr().includes('agent not started'), 10_000, 'the refusal line');
    expect(app.stderr()).toBe(
      `ispy: socket ${open}/app.sock: folder ${open} (mode 777) can be written by everyone and is not sticky, so anyone there could replace or remove the socket; use a folder only you can write (chmod 700 ${open}) or a sticky one such as /tmp (chmod +t ${open}); agent not started (the app runs on without it)\n`,
    );
    expect((await app.get('/')).body).toBe('ok');
    expect(readdirSync(open)).toEqual([]);
    await app.kill();
  });
});

describe('finalSocketPath', () => {
  it('maps a staging path (as /proc/<pid>/net/unix shows it) back to the socket it was linked to', () => {
    expect(finalSocketPath('/run/app/.ispy-4242-k3j9az.app.sock')).toBe('/run/app/app.sock');
    expect(finalSocketPath('/srv/shared/.ispy-Ab12Cd/app.sock')).toBe('/srv/shared/app.sock');
    expect(finalSocketPath('/tmp/ispy-1000/4242.sock')).toBe('/tmp/ispy-1000/4242.sock');
    // A kept link in the private folder is itself a live name of the socket.
    expect(finalSocketPath('/tmp/ispy-1000/.ispy-link-4242-k3j9az.app.sock')).toBe('/tmp/ispy-1000/.ispy-link-4242-k3j9az.app.sock');
  });
});

describe('sweepStaleSockets', () => {
  it("removes a staging socket whose agent is gone, and leaves a live agent's staging socket alone", async () => {
    const dir = tempDir();
    // A pid that is certainly gone: a child that has exited and been reaped.
    const deadPid = spawnSync(process.execPath, ['-e', '0']).pid!;
    // A socket file with nothing listening, as a killed agent leaves it: bound elsewhere,
    // linked under the name, then closed (closing unlinks only the name it was bound at).
    const at = async (name: string) => {
      const server = net.createServer();
      const elsewhere = path.join(dir, 'bound-here');
      await new Promise<void>((r) => server.listen(elsewhere, r));
      linkSync(elsewhere, path.join(dir, name));
      await new Promise((r) => server.close(r));
      return path.join(dir, name);
    };
    const dead = await at(`.ispy-${deadPid}-abc123.${deadPid}.sock`);
    const live = await at(`.ispy-${process.pid}-def456.${process.pid}.sock`);
    // Kept links of sockets in folders others can write, likewise judged by pid.
    const deadLink = await at(`.ispy-link-${deadPid}-abc123.app.sock`);
    const liveLink = await at(`.ispy-link-${process.pid}-def456.app.sock`);
    expect(await connects(live)).toBe(false);
    expect((await sweepStaleSockets(dir)).sort()).toEqual([dead, deadLink].sort());
    expect(existsSync(live)).toBe(true);
    expect(existsSync(liveLink)).toBe(true);
  });
});
