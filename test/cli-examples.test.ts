// The examples run as a newcomer would run them: `npm run demo` with a line piped in, and
// the fleet answering `ispy run` over its glob, each cleaning up after itself.

import { afterAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ROOT, cleanup, runCli, waitFor } from './helpers';
import { processAlive } from '../dist/src/protocol/socket-path.js';

const started: ChildProcess[] = [];
afterAll(async () => {
  // SIGINT first: both examples stop their apps on it (the demo's app is detached, so a
  // SIGKILL of demo.js alone would leave it running). SIGKILL only if that does not work.
  await Promise.all(
    started
      .filter((c) => c.exitCode === null && c.signalCode === null)
      .map(
        (c) =>
          new Promise<void>((resolve) => {
            const t = setTimeout(() => c.kill('SIGKILL'), 5000);
            c.once('exit', () => {
              clearTimeout(t);
              resolve();
            });
            c.kill('SIGINT');
          }),
      ),
  );
  await cleanup();
});

function run(script: string, args: string[], input?: string): { child: ChildProcess; out: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [path.join(ROOT, 'examples', script), ...args], { cwd: ROOT, env: { ...process.env, NO_COLOR: '1' }, stdio: ['pipe', 'pipe', 'pipe'] });
  started.push(child);
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  if (input !== undefined) child.stdin!.end(input);
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, out: () => out, exited };
}

describe('examples', () => {
  it('demo.js starts the misbehaving app, runs piped lines in the shell, then stops the app', async () => {
    const demo = run('demo.js', [], 'process info\nrequests list\n');
    const code = await Promise.race([demo.exited, new Promise((r) => setTimeout(() => r('timed out'), 25_000))]);
    const out = demo.out();
    expect(code, out).toBe(0);
    const pid = Number(/demo app: pid (\d+)/.exec(out)?.[1]);
    const socket = /agent socket: (\S+)/.exec(out)?.[1];
    expect(pid).toBeGreaterThan(0);
    expect(out).toContain('Try:');
    expect(out).toMatch(new RegExp(`^pid +${pid}$`, 'm'));
    // The /slow request the demo leaves in flight is what `requests list` shows.
    expect(out).toMatch(/GET +\/slow/);
    await waitFor(() => !processAlive(pid), 5000, `demo app ${pid} to stop`);
    expect(fs.existsSync(path.dirname(socket!))).toBe(false);
  });

  it('fleet.js starts N agents in one folder that ispy run reaches by glob, and stops them on Ctrl-C', async () => {
    const fleet = run('fleet.js', ['3']);
    await waitFor(() => fleet.out().includes('Ctrl-C stops them all.'), 20_000, `the fleet to start: ${fleet.out()}`);
    const dir = /^FLEET (\S+)$/m.exec(fleet.out())![1]!;
    expect(fleet.out()).toContain(`run '${dir}/*.sock' -c "process info"`);
    const r = await runCli(['run', `${dir}/*.sock`, '-c', 'process info', '--json']);
    expect(r.code).toBe(0);
    const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(rows.length).toBe(3);
    const pids = rows.map((x) => x.result.pid as number);
    fleet.child.kill('SIGINT');
    expect(await Promise.race([fleet.exited, new Promise((res) => setTimeout(() => res('timed out'), 10_000))])).toBe(0);
    for (const pid of pids) expect(processAlive(pid)).toBe(false);
    expect(fs.existsSync(dir)).toBe(false);
  });
});
