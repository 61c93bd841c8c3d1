// The agent's socket exists at its final path only once it accepts connections: tests,
// scripts and `ispy run` globs wait for the file and connect at once, and a sweep by another
// agent starting in the same folder must never take a socket mid-bind for a stale one.

import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, linkSync, lstatSync, mkdirSync, readdirSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { cleanup, tempDir } from './helpers';
import { bindSocket, MAX_SOCKET_PATH, sweepStaleSockets } from '../dist/src/agent/socket.js';
import { finalSocketPath } from '../dist/src/protocol/socket-path.js';

afterAll(cleanup);

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

describe('finalSocketPath', () => {
  it('maps a staging path (as /proc/<pid>/net/unix shows it) back to the socket it was linked to', () => {
    expect(finalSocketPath('/run/app/.ispy-4242-k3j9az.app.sock')).toBe('/run/app/app.sock');
    expect(finalSocketPath('/srv/shared/.ispy-Ab12Cd/app.sock')).toBe('/srv/shared/app.sock');
    expect(finalSocketPath('/tmp/ispy-1000/4242.sock')).toBe('/tmp/ispy-1000/4242.sock');
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
    expect(await connects(live)).toBe(false);
    expect(await sweepStaleSockets(dir)).toEqual([dead]);
    expect(existsSync(live)).toBe(true);
  });
});
