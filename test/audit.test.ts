// The operator audit log, against real app processes: a line before every command that
// changes the app (on disk before it runs, so even an eval that exits the process is
// recorded), a line after every call, who ran it (user, host, pid, and the ssh origin a
// bridge states), 0600, rotated by size, and a change refused when its line cannot be written.

import { afterAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Duplex } from 'node:stream';
import { connect } from '../src/client/index';
import { BIN, cleanup, startApp, tempDir, waitFor } from './helpers';

afterAll(cleanup);

interface Line {
  event: string;
  phase?: string;
  call?: string;
  plugin?: string;
  command?: string;
  args?: Record<string, unknown>;
  changes?: boolean;
  ok?: boolean;
  error?: string;
  client?: { name: string; user?: string; host?: string; pid?: number; via?: string };
  by?: unknown;
}

function lines(file: string): Line[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Line);
}

describe('audit log', () => {
  it('writes a line before each change and after every call, naming who ran it, 0600 in the output folder', async () => {
    const dir = tempDir();
    const app = await startApp({ script: 'http-app.cjs', dir, config: { outputDir: dir } });
    const audit = path.join(dir, 'audit.jsonl');
    const c = await connect(app.socket, { clientName: 'audit-test' });
    await c.call('process', 'info');
    await waitFor(() => lines(audit).length === 1, 10_000, 'the first line');
    await c.call('heap', 'gc');
    await expect(c.call('trace', 'add', { target: 'nope:thing' })).rejects.toMatchObject({ code: 'ISPY_ERR_NOT_FOUND' });
    await c.close();
    const got = await waitFor(() => {
      const l = lines(audit);
      return l.length >= 5 ? l : undefined;
    }, 10_000, 'five audit lines');
    expect(got.map((l) => `${l.phase} ${l.plugin} ${l.command}`)).toEqual(['end process info', 'start heap gc', 'end heap gc', 'start trace add', 'end trace add']);
    expect(got[0]).toMatchObject({ event: 'call', changes: false, ok: true, client: { name: 'audit-test', user: os.userInfo().username, host: os.hostname(), pid: process.pid } });
    expect(got[1]).toMatchObject({ changes: true });
    expect(got[1]!.call).toBe(got[2]!.call);
    expect(got[4]).toMatchObject({ ok: false, error: 'ISPY_ERR_NOT_FOUND', args: { target: 'nope:thing' } });
    expect(statSync(audit).mode & 0o777).toBe(0o600);
    expect(app.stderr()).toBe('');
    await app.kill();
  });

  it('has the line on disk before the change runs: an eval sees its own line, and an eval that exits the process is recorded', async () => {
    const dir = tempDir();
    const audit = path.join(dir, 'trail.jsonl');
    const app = await startApp({ script: 'http-app.cjs', dir, config: { outputDir: dir, eval: true, audit: 'trail.jsonl' } });
    const c = await connect(app.socket);
    const seen = (await c.call('eval', 'eval', { expression: `require('node:fs').readFileSync(${JSON.stringify(audit)}, 'utf8')` })) as { value: string };
    expect(seen.value).toMatch(/"phase":"start".*"plugin":"eval"/);
    await c.call('eval', 'eval', { expression: 'process.exit(3)' }).catch(() => undefined);
    expect((await app.exited).code).toBe(3);
    const starts = lines(audit).filter((l) => l.phase === 'start');
    expect(starts.map((l) => l.args?.expression)).toEqual([expect.stringContaining('readFileSync'), 'process.exit(3)']);
  });

  it('refuses a change when its line cannot be written, and still answers what changes nothing', async () => {
    const dir = tempDir();
    const logs = path.join(dir, 'logs');
    mkdirSync(logs);
    const app = await startApp({ script: 'http-app.cjs', dir, config: { outputDir: dir, eval: true, audit: 'logs/audit.jsonl' } });
    // Fine at start (checked then); broken later: the folder becomes a file.
    rmdirSync(logs);
    writeFileSync(logs, '');
    const c = await connect(app.socket);
    await expect(c.call('heap', 'gc')).rejects.toMatchObject({ code: 'ISPY_ERR_AUDIT', message: expect.stringContaining(`cannot write the audit log ${path.join(logs, 'audit.jsonl')}`) });
    await expect(c.call('eval', 'eval', { expression: 'globalThis.ranAnyway = 1' })).rejects.toMatchObject({ code: 'ISPY_ERR_AUDIT' });
    expect(((await c.call('process', 'info')) as { pid: number }).pid).toBe(app.pid);
    await c.close();
    await app.kill();
  });

  it('never follows a symbolic link to the log', async () => {
    const dir = tempDir();
    const victim = path.join(dir, 'victim.txt');
    writeFileSync(victim, 'keep me\n');
    symlinkSync(victim, path.join(dir, 'audit.jsonl'));
    const app = await startApp({ script: 'http-app.cjs', dir, config: { outputDir: dir } });
    const c = await connect(app.socket);
    await expect(c.call('heap', 'gc')).rejects.toMatchObject({ code: 'ISPY_ERR_AUDIT', message: expect.stringContaining('is a symbolic link') });
    expect(readFileSync(victim, 'utf8')).toBe('keep me\n');
    await c.close();
    await app.kill();
  });

  it('with "audit": false keeps no log, and eval refuses to run', async () => {
    const dir = tempDir();
    const app = await startApp({ script: 'http-app.cjs', dir, config: { outputDir: dir, eval: true, audit: false } });
    const c = await connect(app.socket);
    await c.call('heap', 'gc');
    await expect(c.call('eval', 'eval', { expression: '1 + 1' })).rejects.toMatchObject({ code: 'ISPY_ERR_UNAVAILABLE', message: expect.stringContaining('"audit": false') });
    const info = (await c.call('process', 'info')) as { agent: { auditLog: string } };
    expect(info.agent.auditLog).toMatch(/^off/);
    await c.close();
    await app.kill();
    expect(readdirSync(dir).filter((n) => n.startsWith('audit'))).toEqual([]);
  });

  it('rotates by size, keeping the newest rotated files and every line whole', async () => {
    const dir = tempDir();
    const app = await startApp({ script: 'http-app.cjs', dir, config: { outputDir: dir, limits: { auditMaxSize: '2KB' } } });
    const c = await connect(app.socket);
    for (let i = 0; i < 40; i++) await c.call('process', 'info');
    await c.close();
    const audit = path.join(dir, 'audit.jsonl');
    const rotated = () => readdirSync(dir).filter((n) => n.startsWith('audit.jsonl.'));
    await waitFor(() => rotated().length === 4 && lines(audit).length > 0, 10_000, `four rotated audit files (have ${readdirSync(dir).join(', ')})`);
    for (const name of [...rotated(), 'audit.jsonl']) {
      const file = path.join(dir, name);
      expect(statSync(file).size).toBeLessThanOrEqual(2048);
      expect(statSync(file).mode & 0o777).toBe(0o600);
      for (const l of lines(file)) expect(l).toMatchObject({ plugin: 'process', command: 'info', phase: 'end' });
    }
    await app.kill();
  });

  it('records the ssh origin that `ispy bridge` states, and drops one the client claims', async () => {
    const dir = tempDir();
    const app = await startApp({ script: 'http-app.cjs', dir, config: { outputDir: dir } });
    const bridge = spawn(process.execPath, [BIN, 'bridge', app.socket], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, SSH_CONNECTION: '10.1.2.3 50022 10.1.2.4 22' } });
    const stream = Duplex.from({ readable: bridge.stdout!, writable: bridge.stdin! }) as Duplex & Record<string, unknown>;
    for (const method of ['setTimeout', 'setNoDelay', 'setKeepAlive', 'ref', 'unref']) stream[method] = () => stream;
    const c = await connect(`bridge:${app.socket}`, { createConnection: () => stream, timeoutMs: 10_000 });
    await c.call('heap', 'gc');
    const info = (await c.call('process', 'info')) as { agent: { connections: number } };
    expect(info.agent.connections).toBe(1);
    await c.close();
    bridge.stdin!.end();
    const audit = path.join(dir, 'audit.jsonl');
    const got = await waitFor(() => (lines(audit).length >= 3 ? lines(audit) : undefined), 10_000, 'audit lines');
    for (const l of got) expect(l.client?.via).toBe('ssh from 10.1.2.3 port 50022');
    await app.kill();
  });
});

describe('audit log: attach', () => {
  it('records who attached the agent', async () => {
    const dir = tempDir();
    mkdirSync(path.join(dir, 'out'));
    const app = await startApp({ script: 'attach-app.cjs', dir, preload: 'none', socket: null, env: { ISPY_SOCKET: path.join(dir, 'app.sock') } });
    await app.port();
    writeFileSync(path.join(dir, 'ispy.config.json'), JSON.stringify({ outputDir: path.join(dir, 'out') }));
    const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = spawn(process.execPath, [BIN, 'attach', String(app.pid), '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      child.on('exit', (code) => resolve({ code, out }));
    });
    expect(r.code, r.out).toBe(0);
    const audit = path.join(dir, 'out', 'audit.jsonl');
    const got = await waitFor(() => lines(audit).find((l) => l.event === 'attach'), 10_000, 'the attach line');
    expect(got.by).toMatchObject({ user: os.userInfo().username, host: os.hostname(), pid: expect.any(Number) });
    await app.kill();
  });
});
