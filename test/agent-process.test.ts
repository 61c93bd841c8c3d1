// The `process` plugin over the real socket, against real CommonJS and ES module apps.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { statSync, existsSync } from 'node:fs';
import * as path from 'node:path';
import { cleanup, startApp, tempDir, waitFor, type App } from './helpers';
import { connect, type Client } from '../dist/src/client/index.js';

afterAll(cleanup);

for (const kind of ['cjs', 'esm'] as const) {
  describe(`process plugin in a ${kind} app`, () => {
    let app: App;
    let client: Client;
    const script = kind === 'cjs' ? 'http-app.cjs' : 'http-app.mjs';

    beforeAll(async () => {
      const dir = tempDir();
      app = await startApp({
        script,
        dir,
        // Artefacts (process report) go to the test's folder, not the user's default one. A
        // main-thread command's verdict on a spinning thread comes within 5 × 500 ms even when
        // the machine gives that thread under half a CPU (src/agent/sched.ts), inside the spin.
        config: { outputDir: dir, limits: { mainThreadTimeout: '500ms' } },
        preload: kind === 'cjs' ? 'require' : 'import',
        env: { API_TOKEN: 'tok-123-secret', DATABASE_URL: 'postgres://app:hunter2@db/app', PLAIN_SETTING: 'visible' },
      });
      await app.port();
      client = await connect(app.socket);
    });

    afterAll(async () => {
      await client?.close();
      await app?.kill();
    });

    it('welcomes with pid, versions and the catalogue', () => {
      expect(client.welcome.pid).toBe(app.pid);
      expect(client.welcome.node).toBe(process.version);
      const proc = client.plugins.find((p) => p.name === 'process');
      expect(proc?.commands.map((c) => c.name).sort()).toEqual(['env', 'gc', 'handles', 'info', 'loop', 'modules', 'report', 'stack']);
      const stack = proc!.commands.find((c) => c.name === 'stack')!;
      expect(stack.thread).toBe('worker');
      expect(stack.args.map((a) => a.name)).toEqual(['limit', 'appOnly']);
    });

    it('info names the process', async () => {
      const info = (await client.call('process', 'info')) as Record<string, any>;
      expect(info.pid).toBe(app.pid);
      expect(info.argv.at(-1)).toBe(path.join(__dirname, 'fixtures', script));
      expect(info.execArgv).toContain(kind === 'cjs' ? '-r' : '--import');
      expect(info.versions.node).toBe(process.versions.node);
      expect(info.uptimeSeconds).toBeGreaterThan(0);
      expect(info.memory.processRssMB).toBeGreaterThan(10);
      expect(info.memory.mainThread.heapUsedMB).toBeGreaterThan(0);
      // The agent's own heap, read in its worker: a few MB, well below the app's process.
      expect(info.memory.agentWorker.heapTotalMB).toBeGreaterThan(0);
      expect(info.memory.agentWorker.heapTotalMB).toBeLessThan(info.memory.processRssMB);
      expect(info.cpu.userSeconds).toBeGreaterThan(0);
      expect(info.mainThread).toBe('event loop turning');
    });

    it('stack says the loop is idle when it is', async () => {
      // Just after start (an ES module app on a loaded machine) the main thread can still be
      // running start-up code when the first capture lands; it must settle to idle.
      const stack = await waitFor(async () => {
        const s = (await client.call('process', 'stack')) as Record<string, any>;
        return s.state === 'idle' ? s : undefined;
      }, 5000, 'an idle main thread');
      expect(stack.message).toMatch(/idle/);
    });

    it('stack names the busy function while the main thread spins', async () => {
      const spinning = app.get('/spin?ms=6000');
      // Until the request reaches the handler the loop is idle; on a loaded machine that can take a while.
      let elapsed = 0;
      const stack = await waitFor(async () => {
        const t0 = performance.now();
        const s = (await client.call('process', 'stack')) as Record<string, any>;
        elapsed = performance.now() - t0;
        return s.state === 'running' && s.frames[0].function === 'spinHere' ? s : undefined;
      }, 3000, 'the stack of the spinning handler');
      expect(stack.state).toBe('running');
      expect(stack.frames[0].function).toBe('spinHere');
      expect(stack.frames[0].file).toBe(path.join(__dirname, 'fixtures', script));
      expect(stack.frames[0].app).toBe(true);
      expect(elapsed).toBeLessThan(1000);
      // A main-thread command cannot run meanwhile, and says why instead of hanging.
      await expect(client.call('process', 'handles')).rejects.toMatchObject({ code: 'ISPY_ERR_MAIN_BUSY', message: expect.stringMatching(/main thread busy for \d+ ms/) });
      await spinning;
      expect((await client.call('process', 'handles')) as object).toHaveProperty('total');
    });

    it('loop reports delay percentiles and utilisation', async () => {
      const loop = (await client.call('process', 'loop', { duration: '200ms' })) as Record<string, any>;
      expect(loop.sampledMs).toBeGreaterThanOrEqual(195);
      expect(loop.sampledMs).toBeLessThan(1500);
      expect(loop.delayMs.p50).toBeGreaterThan(0);
      expect(loop.delayMs.p99).toBeGreaterThanOrEqual(loop.delayMs.p50);
      expect(loop.utilisation).toBeGreaterThanOrEqual(0);
      expect(loop.utilisation).toBeLessThanOrEqual(1);
    });

    it('handles lists the listening server', async () => {
      const handles = (await client.call('process', 'handles')) as Record<string, any>;
      const port = await app.port();
      expect(handles.details).toContainEqual(expect.objectContaining({ type: 'server', address: `127.0.0.1:${port}` }));
      expect(handles.byType.map((t: { type: string }) => t.type)).toContain('TCPServerWrap');
    });

    it('env redacts secrets and passwords in URLs', async () => {
      const env = (await client.call('process', 'env')) as Record<string, any>;
      expect(env.vars.API_TOKEN).toBe('[redacted, 14 chars]');
      expect(env.vars.DATABASE_URL).toBe('postgres://app:***@db/app');
      expect(env.vars.PLAIN_SETTING).toBe('visible');
      expect(JSON.stringify(env)).not.toContain('hunter2');
      const filtered = (await client.call('process', 'env', { filter: 'plain' })) as Record<string, any>;
      expect(Object.keys(filtered.vars)).toEqual(['PLAIN_SETTING']);
    });

    it('modules lists the app file with its module kind', async () => {
      const mods = (await client.call('process', 'modules', { files: true })) as Record<string, any>;
      const mine = mods.list.find((f: { file: string }) => f.file.endsWith(script));
      expect(mine).toEqual({ file: path.join(__dirname, 'fixtures', script), kind: kind });
      expect(mods.nodeInternals).toBeGreaterThan(10);
    });

    it('report writes a 0600 artefact', async () => {
      const artefacts: { name: string; path?: string }[] = [];
      const report = (await client.call('process', 'report', {}, { onArtefact: (a) => void artefacts.push(a) })) as Record<string, any>;
      expect(report.nodejsVersion).toBe(process.version);
      expect(path.dirname(report.file)).toBe(app.dir);
      expect(existsSync(report.file)).toBe(true);
      expect(statSync(report.file).mode & 0o777).toBe(0o600);
      expect(path.basename(report.file)).toMatch(new RegExp(`^report-${app.pid}-\\d{8}T\\d{6}Z\\.json$`));
      expect(artefacts[0]?.path).toBe(report.file);
    });

    it('gc records pauses after allocation', async () => {
      for (let i = 0; i < 5; i++) await app.get('/alloc');
      const gc = (await client.call('process', 'gc', { limit: 5 })) as Record<string, any>;
      expect(gc.totals.length).toBeGreaterThan(0);
      expect(gc.recent.length).toBeGreaterThan(0);
      expect(gc.recent.length).toBeLessThanOrEqual(5);
      expect(gc.recent[0]).toEqual({ at: expect.any(String), kind: expect.stringMatching(/minor|major|incremental|weakcb/), durationMs: expect.any(Number) });
    });
  });
}

describe('a main thread blocked in native code', () => {
  it('stack answers "blocked outside JavaScript" instead of hanging', async () => {
    const app = await startApp({ script: 'http-app.cjs' });
    await app.port();
    const client = await connect(app.socket);
    try {
      const blocked = app.get('/native?ms=4000');
      await waitFor(async () => /not turning/.test(((await client.call('process', 'info')) as Record<string, any>).mainThread), 5000, 'the loop to be blocked');
      const t0 = performance.now();
      const stack = (await client.call('process', 'stack')) as Record<string, any>;
      expect(performance.now() - t0).toBeLessThan(1500);
      expect(stack.state).toBe('blocked');
      expect(stack.message).toMatch(/blocked outside JavaScript for \d+ ms/);
      const info = (await client.call('process', 'info')) as Record<string, any>;
      expect(info.mainThread).toMatch(/not turning its event loop/);
      expect(info.memory.mainThread.unavailable).toMatch(/blocked outside JavaScript/);
      await blocked;
      // Afterwards the stack path works normally again (no debugger left paused or enabled):
      // once the response has been handled the loop goes idle.
      await waitFor(async () => ((await client.call('process', 'stack')) as Record<string, any>).state === 'idle', 3000, 'the loop to be idle again');
      expect((await app.get('/')).body).toBe('ok');
    } finally {
      await client.close();
      await app.kill();
    }
  });
});
