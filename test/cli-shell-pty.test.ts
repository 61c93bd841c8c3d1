// The interactive shell at a real terminal: `script` (util-linux) gives `ispy connect` a
// pseudo-terminal, and this test types into it key by key (readline treats a multi-key
// chunk as a paste and does not complete inside it). Checks the prompt, Tab completion,
// Ctrl-C cancelling a long command while the session stays open, history, and Ctrl-D.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BIN, cleanup, startApp, tempDir, waitFor, type App } from './helpers';

const hasScript = spawnSync('script', ['--version'], { encoding: 'utf8' }).stdout?.includes('util-linux') === true;

let app: App;
const shells: ChildProcess[] = [];

beforeAll(async () => {
  if (hasScript) app = await startApp({ script: 'http-app.cjs' });
});
afterAll(async () => {
  for (const s of shells) if (s.exitCode === null && s.signalCode === null) s.kill('SIGKILL');
  await cleanup();
});

// eslint-disable-next-line no-control-regex
const plain = (s: string) => s.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r/g, '');

describe.skipIf(!hasScript)('interactive shell on a pseudo-terminal', () => {
  it('prompts, completes with Tab, cancels with Ctrl-C and keeps the session, leaves on Ctrl-D', async () => {
    const history = path.join(tempDir('ispy-hist-'), 'history');
    const child = spawn('script', ['-qfec', `${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)} connect ${JSON.stringify(app.socket)}`, '/dev/null'], {
      env: { ...process.env, ISPY_HISTORY: history, TERM: 'xterm', NO_COLOR: '1', COLUMNS: '120' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    shells.push(child);
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const seen = () => plain(out);
    const until = (what: string | RegExp, from = 0, ms = 10_000) =>
      waitFor(() => (typeof what === 'string' ? seen().indexOf(what, from) >= 0 : what.test(seen().slice(from))), ms, `${what} in:\n${seen()}`);
    const type = async (...keys: string[]) => {
      for (const k of keys) {
        child.stdin!.write(k);
        await new Promise((r) => setTimeout(r, 60));
      }
    };

    const prompt = `node ${app.pid}> `;
    await until(prompt);
    expect(seen()).toContain(`connected to node ${app.pid}`);

    // Tab completes the plugin name, then the command.
    let mark = seen().length;
    await type('proc', '\t');
    await until('process ', mark);
    mark = seen().length;
    await type('lo', '\t');
    await until('loop ', mark);

    // A 30 s command, cancelled by Ctrl-C long before it would end.
    await type('--duration 30s\r');
    await new Promise((r) => setTimeout(r, 700));
    mark = seen().length;
    const cancelledAt = Date.now();
    await type('\x03');
    await until('cancelling', mark);
    await until(prompt, mark);
    expect(Date.now() - cancelledAt).toBeLessThan(5000);
    expect(child.exitCode).toBeNull();

    // The session is still there.
    mark = seen().length;
    await type('process info\r');
    await until(new RegExp(`pid +${app.pid}\\n`), mark);
    await until(prompt, seen().indexOf(`pid `, mark));

    // A mistake is answered, not fatal.
    mark = seen().length;
    await type('process stak\r');
    await until('did you mean "stack"?', mark);

    await type('\x04');
    expect(await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), 5000))])).toBe(0);
    const saved = fs.readFileSync(history, 'utf8').split('\n');
    expect(saved).toContain('process loop --duration 30s');
    expect(saved).toContain('process info');
    expect(fs.statSync(history).mode & 0o777).toBe(0o600);
  });

  it('Ctrl-C twice at an empty prompt leaves', async () => {
    const child = spawn('script', ['-qfec', `${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)} connect ${JSON.stringify(app.socket)}`, '/dev/null'], {
      env: { ...process.env, ISPY_HISTORY: path.join(tempDir('ispy-hist-'), 'h'), TERM: 'xterm', NO_COLOR: '1' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    shells.push(child);
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await waitFor(() => plain(out).includes(`${app.pid}> `), 10_000, 'the prompt');
    child.stdin!.write('\x03');
    await waitFor(() => plain(out).includes('press Ctrl-C again'), 5000, 'the hint');
    child.stdin!.write('\x03');
    expect(await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), 5000))])).toBe(0);
  });
});
