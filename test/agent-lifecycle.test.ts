// The agent never changes how the app exits, never keeps it alive, and leaves nothing
// behind: the socket goes on every exit path, and stopAgent() undoes everything.

import { afterAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';
import { cleanup, DIST, startApp, tempDir, waitFor, writeFile } from './helpers';
import { connect } from '../dist/src/client/index.js';

afterAll(cleanup);

describe('exit paths', () => {
  it('exits on its own when the app is done, and removes the socket', async () => {
    const app = await startApp({ script: 'http-app.cjs' });
    const c = await connect(app.socket);
    await c.call('process', 'stack'); // uses the inspector session
    await c.call('process', 'modules'); // enables and disables the Debugger domain
    await c.close();
    await app.get('/exit');
    const exit = await Promise.race([app.exited, new Promise((r) => setTimeout(() => r('still running'), 5000))]);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(existsSync(app.socket)).toBe(false);
    expect(app.stderr()).not.toMatch(/Waiting for the debugger/);
  });

  it('exits mid-profile without a word from Node\'s inspector in its stderr', async () => {
    // A session of the worker's still connected to the main thread at exit makes Node print
    // "Waiting for the debugger to disconnect..." into the app's stderr.
    // (A loop that runs dry ends without it: only process.exit() shows it.)
    const dir = tempDir();
    const script = writeFile(dir, 'exits.cjs', "process.on('SIGUSR2', () => process.exit(0)); setInterval(() => {}, 1000);\n");
    const app = await startApp({ script, dir, waitForSocket: true });
    const c = await connect(app.socket);
    let recording = false;
    const profiling = c.call('profile', 'cpu', { duration: '30s' }, { onProgress: () => (recording = true) }).catch((err: Error) => err);
    await waitFor(() => recording, 10_000, 'the profile to be recording');
    process.kill(app.pid, 'SIGUSR2');
    expect(await app.exited).toEqual({ code: 0, signal: null });
    expect(await profiling).toBeInstanceOf(Error);
    await c.close();
    expect(app.stderr()).toBe('');
  });

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`dies of ${signal} at once, as without the agent, even while its loop is stuck`, async () => {
      const app = await startApp({ script: 'http-app.cjs' });
      const c = await connect(app.socket);
      await c.call('process', 'stack');
      // Stuck in a 20 s loop: a JavaScript signal listener would never run; the default must.
      void app.get('/spin?ms=20000').catch(() => {});
      await waitFor(async () => ((await c.call('process', 'stack')) as { state: string }).state === 'running', 5000, 'the loop to be stuck');
      await c.close();
      const t0 = performance.now();
      expect(await app.kill(signal)).toEqual({ code: null, signal });
      expect(performance.now() - t0).toBeLessThan(3000);
      expect(app.stderr()).toBe('');
      // Death by signal runs no JavaScript: the socket stays behind, stale, and is known as such.
      await expect(connect(app.socket)).rejects.toMatchObject({ code: 'ISPY_ERR_CONNECT', message: expect.stringMatching(/stale socket/) });
    });
  }

  it('sweeps stale sockets of dead agents from the default folder on start', async () => {
    const first = await startApp({ script: 'http-app.cjs', socket: null, waitForSocket: false });
    const sock = path.join(os.tmpdir(), `ispy-${process.getuid!()}`, `${first.pid}.sock`);
    await waitFor(() => existsSync(sock), 10_000, 'the first socket');
    await first.kill('SIGKILL');
    expect(existsSync(sock)).toBe(true);
    const second = await startApp({ script: 'http-app.cjs', socket: null, waitForSocket: false });
    await waitFor(() => !existsSync(sock), 10_000, 'the stale socket to be swept');
    // Ended as an app ends, so its socket goes with it: a kill by signal would leave one more
    // stale socket in the user's folder.
    const secondSock = path.join(path.dirname(sock), `${second.pid}.sock`);
    await waitFor(() => existsSync(secondSock), 10_000, 'the second socket');
    await second.get('/exit');
    await second.exited;
    expect(existsSync(secondSock)).toBe(false);
  });

  it("leaves SIGTERM to the app's own handler, and still removes the socket", async () => {
    const app = await startApp({ script: 'http-app.cjs', env: { APP_HANDLES_SIGTERM: '1' } });
    await app.port();
    expect(await app.kill('SIGTERM')).toEqual({ code: 7, signal: null });
    expect(app.stdout()).toContain('app got SIGTERM');
    expect(existsSync(app.socket)).toBe(false);
  });

  it('does not keep a process alive that has nothing left to do', async () => {
    const dir = tempDir();
    const script = path.join(dir, 'short.cjs');
    // Long enough for the agent to be up first, even on a loaded machine.
    (await import('node:fs')).writeFileSync(script, "setTimeout(() => console.log('done'), 1500);\n");
    const app = await startApp({ script, dir, waitForSocket: true });
    const exit = await Promise.race([app.exited, new Promise((r) => setTimeout(() => r('still running'), 5000))]);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(app.stdout()).toBe('done\n');
    expect(existsSync(app.socket)).toBe(false);
  });
});

describe('stopAgent()', () => {
  it('removes the socket, ends the worker and its threads, and lets the app exit', async () => {
    const dir = tempDir();
    const socket = path.join(dir, 'coded.sock');
    const app = await startApp({
      script: 'start-stop.cjs',
      dir,
      preload: 'none',
      socket: null,
      env: { ISPY_LIB: path.join(DIST, 'src', 'index.js'), APP_SOCKET: socket },
    });
    await app.port();
    const c = await connect(socket);
    expect(c.welcome.pid).toBe(app.pid);
    await c.call('process', 'stack');
    await c.call('process', 'modules');
    const closed = new Promise((r) => c.once('close', r));
    const report = JSON.parse((await app.get('/stop')).body);
    expect(report.socketExists).toBe(false);
    expect(existsSync(socket)).toBe(false);
    expect(report.during).toBeGreaterThan(report.before);
    expect(report.after).toBe(report.before);
    // The client learns the agent went away.
    await closed;
    expect(c.closeReason).toMatch(/agent stopping|went away/);
    const exit = await Promise.race([app.exited, new Promise((r) => setTimeout(() => r('still running'), 5000))]);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(app.stderr()).toBe('');
  });

  for (const kind of ['cjs', 'mjs'] as const) {
    it(`resolves for a ${kind === 'cjs' ? 'CommonJS' : 'ES module'} script that has nothing else to do, and the script then ends`, async () => {
      const dir = tempDir();
      const socket = path.join(dir, 'short.sock');
      const lib = JSON.stringify(path.join(DIST, 'src', 'index.js'));
      const code =
        kind === 'cjs'
          ? `const { startAgent, stopAgent } = require(${lib});\n(async () => {\n  await startAgent({ socket: ${JSON.stringify(socket)} });\n  await stopAgent();\n  console.log('stopped');\n})();\n`
          : `import ispy from ${lib};\nawait ispy.startAgent({ socket: ${JSON.stringify(socket)} });\nawait ispy.stopAgent();\nconsole.log('stopped');\n`;
      const script = writeFile(dir, `short.${kind}`, code);
      const app = await startApp({ script, dir, preload: 'none', socket: null });
      const exit = await Promise.race([app.exited, new Promise((r) => setTimeout(() => r('still running'), 10_000))]);
      expect(exit).toEqual({ code: 0, signal: null });
      expect(app.stdout()).toBe('stopped\n');
      expect(existsSync(socket)).toBe(false);
    });
  }
});
