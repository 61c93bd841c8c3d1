// A main thread that only waits for a CPU is not a blocked one. On a host whose cores are all
// busy, the inspector's interrupt reaches a runnable main thread late; ispy used to call that
// "blocked outside JavaScript". Here the app's main thread is pinned to one CPU at the lowest
// priority with three CPU burners on that CPU (its slices come hundreds of ms apart), and runs
// JavaScript: `process stack` must find it running, every time.

import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { cleanup, runCli, startApp, waitFor } from './helpers';

function has(tool: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const missing = process.platform !== 'linux' ? 'Linux only (/proc)' : !has('taskset') || !has('renice') ? 'needs taskset and renice (util-linux)' : undefined;

afterAll(cleanup);

/** `process stack`'s state through the CLI, or the error it gave. */
async function stackState(socket: string): Promise<string> {
  const r = await runCli(['run', socket, '-c', 'process stack --limit 3', '--json', '--timeout', '60s'], { timeoutMs: 90_000 });
  const row = JSON.parse(r.stdout.trim().split('\n')[0]!);
  return row.ok ? row.result.state : `error ${row.error.code}: ${row.error.message}`;
}

describe.skipIf(missing !== undefined)(`a starved main thread${missing ? ` (skipped: ${missing})` : ''}`, () => {
  it('is found running JavaScript, not called blocked, when the host gives it a CPU only now and then', async () => {
    // The default limits (the inspector's: 1 s, which the starvation outlasts).
    const app = await startApp({ script: 'http-app.cjs' });
    const burners: ChildProcess[] = [];
    try {
      // It spins 60 s (by the wall clock), longer than the three stacks below take; found
      // running first, while the host is quiet for it.
      app.get('/spin?ms=60000', 180_000).catch(() => {});
      await waitFor(async () => (await stackState(app.socket)) === 'running', 30_000, 'the main thread to spin');
      // Only the main thread (its thread id is the pid): the agent's worker runs free.
      execFileSync('taskset', ['-p', '-c', '0', String(app.pid)], { stdio: 'ignore' });
      execFileSync('renice', ['-n', '19', '-p', String(app.pid)], { stdio: 'ignore' });
      for (let i = 0; i < 3; i++) burners.push(spawn('taskset', ['-c', '0', process.execPath, '-e', 'for (;;) {}'], { stdio: 'ignore' }));
      const states: string[] = [];
      for (let i = 0; i < 3; i++) states.push(await stackState(app.socket));
      expect(states.join(' | ')).toBe('running | running | running');
    } finally {
      for (const b of burners) b.kill('SIGKILL');
      await app.kill('SIGKILL');
    }
  }, 180_000);

  it('still runs main-thread commands: a main thread whose loop turns, but which gets a CPU only now and then, is waited for, not called busy', async () => {
    // A short limit for main-thread commands, which the starvation outlasts.
    const app = await startApp({ script: 'http-app.cjs', config: { limits: { mainThreadTimeout: '300ms' } } });
    const burners: ChildProcess[] = [];
    const handles = async () => {
      const r = await runCli(['run', app.socket, '-c', 'process handles', '--json', '--timeout', '60s'], { timeoutMs: 90_000 });
      const row = JSON.parse(r.stdout.trim().split('\n')[0]!);
      return row.ok ? 'ok' : `error ${row.error.code}: ${row.error.message}`;
    };
    try {
      expect(await handles()).toBe('ok');
      // CPU work in 2 ms slices with the loop turning between them, for longer than the three
      // commands below take: starved, each slice waits long for a CPU, and so does the turn
      // that would pick a command up.
      app.get('/churn?ms=120000', 180_000).catch(() => {});
      execFileSync('taskset', ['-p', '-c', '0', String(app.pid)], { stdio: 'ignore' });
      execFileSync('renice', ['-n', '19', '-p', String(app.pid)], { stdio: 'ignore' });
      for (let i = 0; i < 3; i++) burners.push(spawn('taskset', ['-c', '0', process.execPath, '-e', 'for (;;) {}'], { stdio: 'ignore' }));
      const answers: string[] = [];
      for (let i = 0; i < 3; i++) answers.push(await handles());
      expect(answers.join(' | ')).toBe('ok | ok | ok');
    } finally {
      for (const b of burners) b.kill('SIGKILL');
      await app.kill('SIGKILL');
    }
  }, 180_000);
});
