// `ispy bridge <socket>` carries the raw bytes of a whole WebSocket session: the client
// library talks to a spawned bridge's stdin/stdout exactly as it would to ssh running
// `ispy bridge` on another host.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { Duplex } from 'node:stream';
import { connect } from '../src/client/index';
import { BIN, cleanup, runCli, startApp, tempDir, type App } from './helpers';

let app: App;
const bridges: ChildProcess[] = [];

beforeAll(async () => {
  app = await startApp({ script: 'http-app.cjs' });
});
afterAll(async () => {
  for (const b of bridges) if (b.exitCode === null && b.signalCode === null) b.kill('SIGKILL');
  await cleanup();
});

/** A Duplex over a child's stdio, with the socket methods the WebSocket layer calls. */
function stdioStream(child: ChildProcess): Duplex {
  const stream = Duplex.from({ readable: child.stdout!, writable: child.stdin! }) as Duplex & Record<string, unknown>;
  for (const method of ['setTimeout', 'setNoDelay', 'setKeepAlive', 'ref', 'unref']) stream[method] = () => stream;
  return stream;
}

describe('ispy bridge', () => {
  it('carries a client session over stdio and exits when the client leaves', async () => {
    const child = spawn(process.execPath, [BIN, 'bridge', app.socket], { stdio: ['pipe', 'pipe', 'pipe'] });
    bridges.push(child);
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const client = await connect(`bridge:${app.socket}`, { createConnection: () => stdioStream(child), timeoutMs: 10_000 });
    expect(client.welcome.pid).toBe(app.pid);
    const info = (await client.call('process', 'info')) as { pid: number };
    expect(info.pid).toBe(app.pid);
    await client.close();
    child.stdin!.end();
    const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), 5000))]);
    expect(code).toBe(0);
    expect(stderr).toBe('');
  });

  it('says clearly when the socket cannot be reached', async () => {
    const missing = path.join(tempDir('ispy-br-'), 'gone.sock');
    const r = await runCli(['bridge', missing]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`ispy bridge: no agent socket at ${missing} (no such file); \`ispy ps\` lists live agents\n`);
    expect(r.stdout).toBe('');
  });
});
