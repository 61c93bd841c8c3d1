// What newer Node lines give, used behind feature tests (docs/node-lines.md): `process
// info`'s CPU split by thread (process.threadCpuUsage() where the line has it, /proc
// otherwise) and `heap count` (v8.queryObjects where the line has it, the inspector's
// Runtime.queryObjects on every line). Run on each line:
//   PATH=/path/to/node24/bin:$PATH npx vitest run test/lines-apis.test.ts

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as v8 from 'node:v8';
import * as nodeModule from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { cleanup, runCli, startApp, tempDir, waitFor, type App } from './helpers';
import { connect, type Client } from '../dist/src/client/index.js';
import { parseProcStat } from '../dist/plugins/process/cpu.js';
import { contextFramesCarryStores } from '../dist/plugins/requests/tracker.js';

afterAll(cleanup);

const WIDGETS = 25;
// Feature tests, the same the plugins make: the app runs on this very node binary.
const hasThreadCpu = typeof (process as { threadCpuUsage?: unknown }).threadCpuUsage === 'function';
const hasQueryObjects = typeof (v8 as { queryObjects?: unknown }).queryObjects === 'function';
const linux = process.platform === 'linux';

type Row = { thread: string; userSeconds?: number; systemSeconds?: number; source?: string; unavailable?: string };
const rows = (info: any): Record<string, Row> => Object.fromEntries((info.cpu.threads as Row[]).map((r) => [r.thread, r]));
const seconds = (r: Row) => (r.userSeconds ?? 0) + (r.systemSeconds ?? 0);
const failure = (p: Promise<unknown>) => p.then(() => { throw new Error('expected the call to fail'); }, (e: { code?: string; message: string }) => e);

describe(`Node ${process.version}: lines-dependent APIs`, () => {
  let app: App;
  let client: Client;
  const state = async () => JSON.parse((await app.get('/state')).body) as { widgets: number; gadgets: number; emitWarningRestored: boolean };

  beforeAll(async () => {
    app = await startApp({ script: 'lines-app.cjs', env: { WIDGETS: String(WIDGETS) } });
    await app.port();
    client = await connect(app.socket);
  });

  afterAll(async () => {
    await client?.close();
    await app?.kill();
  });

  describe('process info: CPU by thread', () => {
    it('splits the process CPU into the main thread and the agent worker, each naming its source', async () => {
      const before = rows(await client.call('process', 'info'));
      // CPU time, not wall time: the same work however loaded the machine is.
      await app.get('/spin?ms=600');
      const info = (await client.call('process', 'info')) as any;
      const after = rows(info);
      const source = hasThreadCpu ? 'threadCpuUsage' : '/proc';
      expect(after.main!.source).toBe(source);
      expect(after['agent worker']!.source).toBe(source);
      // The spin ran on the main thread: its own figure took (nearly) all of it, the worker's not.
      const mainGrew = seconds(after.main!) - seconds(before.main!);
      const workerGrew = seconds(after['agent worker']!) - seconds(before['agent worker']!);
      expect(mainGrew).toBeGreaterThanOrEqual(0.5);
      expect(workerGrew).toBeLessThan(mainGrew);
      // Each thread is part of the process: read before the total, never above it.
      expect(seconds(after.main!) + seconds(after['agent worker']!)).toBeLessThanOrEqual(info.cpu.userSeconds + info.cpu.systemSeconds + 0.02);
    });

    it.skipIf(!hasThreadCpu)('reads the main thread through threadCpuUsage() while it spins', async () => {
      const stop = path.join(tempDir(), 'stop');
      const spinning = app.get(`/spin?until=${encodeURIComponent(stop)}`, 180_000);
      try {
        const info = await waitFor(async () => {
          const i = (await client.call('process', 'info')) as any;
          return /not turning/.test(i.mainThread) ? i : undefined;
        }, 30_000, 'process info while the loop is stuck');
        expect(rows(info).main!.source).toBe('threadCpuUsage');
        expect(info.memory.mainThread.heapUsedMB).toBeGreaterThan(0);
      } finally {
        writeFileSync(stop, '');
        await spinning;
      }
    });

    it.skipIf(!linux)('falls back to /proc when the main thread is blocked in native code', async () => {
      const stop = path.join(tempDir(), 'stop');
      const blocked = app.get(`/native?until=${encodeURIComponent(stop)}`, 180_000);
      try {
        const info = await waitFor(async () => {
          const i = (await client.call('process', 'info')) as any;
          return i.memory.mainThread.unavailable ? i : undefined;
        }, 30_000, 'process info while the main thread is blocked');
        const main = rows(info).main!;
        expect(main.source).toBe('/proc');
        expect(main.userSeconds).toBeGreaterThan(0);
      } finally {
        writeFileSync(stop, '');
        await blocked;
      }
    });

    it('keeps the split to a three-line table in the human output', async () => {
      const r = await runCli(['run', app.socket, '-c', 'process info']);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/threads\n\s+thread\s+userSeconds\s+systemSeconds\s+source\n\s+main\s+[\d.]+\s+[\d.]+\s+(threadCpuUsage|\/proc)\n\s+agent worker\s/);
    });

    it('parses a /proc stat line whose command name holds spaces and parentheses', () => {
      const line = '4242 (node (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 11 0 100 0 0';
      expect(parseProcStat(line)).toEqual({ userSeconds: 12.34, systemSeconds: 0.56 });
      expect(parseProcStat('garbage')).toBeUndefined();
    });
  });

  describe('heap count', () => {
    const count = async (name: string, via?: string) => (await client.call('heap', 'count', via ? { name, via } : { name })) as any;

    it.skipIf(!hasQueryObjects)('counts through v8.queryObjects by default where the line has it', async () => {
      const r = await count('LinesWidget');
      expect(r.source).toBe('v8.queryObjects');
    });

    it('gives the same count both ways, for a global and for a module export', async () => {
      const ways = hasQueryObjects ? ['v8', 'inspector'] : ['inspector'];
      for (const via of ways) {
        // 25 Widgets + 2 Gadgets (a subclass) + Gadget.prototype, which has Widget's in its chain.
        const global = await count('LinesWidget', via);
        expect(global).toMatchObject({ constructor: 'Widget', module: 'global', count: WIDGETS + 3, source: via === 'v8' ? 'v8.queryObjects' : 'Runtime.queryObjects' });
        const fromModule = await count('./lines-app.cjs:Widget', via);
        expect(fromModule.count).toBe(WIDGETS + 3);
        expect(fromModule.module).toMatch(/lines-app\.cjs$/);
        expect((await count('./lines-app.cjs:Gadget', via)).count).toBe(2);
        expect((await count('./lines-app.cjs:Unused', via)).count).toBe(0);
      }
    });

    it('writes nothing into the app (no ExperimentalWarning) and puts process.emitWarning back', async () => {
      await count('LinesWidget');
      await count('LinesWidget', 'inspector');
      expect((await state()).emitWarningRestored).toBe(true);
      // A warning is written on the next tick; a request served after it proves the tick passed.
      await app.get('/');
      expect(app.stderr()).not.toMatch(/ExperimentalWarning|queryObjects/);
    });

    it('answers for a global while the main thread spins', async () => {
      // It spins until told to stop: however long the counts take on a busy machine.
      const stop = path.join(tempDir(), 'stop');
      const spinning = app.get(`/spin?until=${encodeURIComponent(stop)}`, 180_000);
      try {
        await waitFor(async () => /not turning/.test(((await client.call('process', 'info')) as any).mainThread), 30_000, 'the loop to be stuck');
        expect((await count('LinesWidget')).count).toBe(WIDGETS + 3);
        expect((await count('LinesWidget', 'inspector')).count).toBe(WIDGETS + 3);
        // A module target needs the module loader, which needs the loop: said, not waited out.
        const err = await failure(count('./lines-app.cjs:Widget'));
        expect(err.code).toBe('ISPY_ERR_UNAVAILABLE');
        expect(err.message).toMatch(/unavailable while the main thread is busy/);
      } finally {
        writeFileSync(stop, '');
        await spinning;
      }
    });

    it('says clearly what is wrong with a name', async () => {
      const unknown = await failure(count('NoSuchThing'));
      expect(unknown).toMatchObject({ code: 'ISPY_ERR_NOT_FOUND' });
      expect(unknown.message).toMatch(/no global named NoSuchThing/);
      const notCtor = await failure(count('JSON'));
      expect(notCtor).toMatchObject({ code: 'ISPY_ERR_BAD_ARGS' });
      expect(notCtor.message).toMatch(/JSON is an object, not a constructor/);
      const arrow = await failure(count('./lines-app.cjs:makeOne'));
      expect(arrow).toMatchObject({ code: 'ISPY_ERR_BAD_ARGS' });
      expect(arrow.message).toMatch(/without a prototype object .* not a constructor/);
      const code = await failure(count('process.exit()'));
      expect(code).toMatchObject({ code: 'ISPY_ERR_BAD_ARGS' });
      expect(code.message).toMatch(/is not a constructor name/);
      const missing = await failure(count('./no-such-file.js:X'));
      expect(missing).toMatchObject({ code: 'ISPY_ERR_NOT_FOUND' });
    });

    it('holds no instance after counting: dropped instances count 0 both ways (real CLI)', async () => {
      await app.get('/drop');
      expect(await state()).toMatchObject({ widgets: 0, gadgets: 0 });
      const ways = hasQueryObjects ? ['v8', 'inspector'] : ['inspector'];
      for (const via of ways) {
        const r = await runCli(['run', app.socket, '-c', `heap count ./lines-app.cjs:Widget --via ${via}`, '--json']);
        expect(r.code, r.stderr).toBe(0);
        // Only Gadget.prototype is left with Widget's prototype in its chain.
        expect(r.stdout).toMatch(/"count":\s*1\b/);
      }
    });
  });
});

describe('docs/node-lines.md', () => {
  const text = readFileSync(path.join(__dirname, '..', 'docs', 'node-lines.md'), 'utf8');
  // The table's header names the lines; the version picks this line's column of the doc,
  // and only that: what the line has is asked of the line itself.
  const header = /^\| feature \(as tested\) \|(.*)\| commands it changes \|$/m.exec(text);
  const lines = header ? header[1]!.split('|').map((c) => c.trim()) : [];
  const column = lines.indexOf(process.versions.node.split('.')[0]!);
  const has: Record<string, boolean> = {
    '`process.threadCpuUsage`': hasThreadCpu,
    '`v8.queryObjects`': hasQueryObjects,
    '`module.registerHooks`': typeof (nodeModule as { registerHooks?: unknown }).registerHooks === 'function',
    '`AsyncContextFrame`': contextFramesCarryStores(),
  };

  it('has the feature table, a row for each feature test the code makes', () => {
    expect(lines.length).toBeGreaterThan(0);
    const rows = text.split('\n');
    for (const feature of Object.keys(has)) expect(rows.some((l) => l.startsWith(`| ${feature} |`)), `a row for ${feature}`).toBe(true);
  });

  it.skipIf(column === -1)(`says what Node ${process.versions.node.split('.')[0]} has`, () => {
    for (const [feature, present] of Object.entries(has)) {
      const row = text.split('\n').find((l) => l.startsWith(`| ${feature} |`))!;
      const cells = row.split('|').slice(2, 2 + lines.length).map((c) => c.trim());
      expect(cells[column], `${feature} on this line`).toBe(present ? 'yes' : 'no');
    }
  });

  it('is linked from the plugin guide', () => {
    expect(readFileSync(path.join(__dirname, '..', 'docs', 'plugins.md'), 'utf8')).toContain('(node-lines.md)');
  });
});
