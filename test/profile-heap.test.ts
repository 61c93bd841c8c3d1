// The profile and heap plugins against real processes: what they find, the files they
// write, and that cancel or disconnect leaves no profiler running and no partial file.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, statSync, createWriteStream, existsSync } from 'node:fs';
import * as path from 'node:path';
import { artefactsIn, cleanup, startApp, tempDir, waitFor, FIXTURES, type App } from './helpers';
import { connect, type Client } from '../dist/src/client/index.js';

afterAll(cleanup);

const APP = path.join(FIXTURES, 'profile-app.cjs');
const LIB = path.join(FIXTURES, 'profile-lib.cjs');

function partials(dir: string): string[] {
  return readdirSync(dir).filter((f) => f.endsWith('.partial'));
}

describe('profile and heap', () => {
  let app: App;
  let client: Client;
  let out: string;

  beforeAll(async () => {
    out = tempDir();
    app = await startApp({ script: APP, config: { outputDir: out } });
    await app.port();
    client = await connect(app.socket);
  });

  afterAll(async () => {
    await client?.close();
    await app?.kill();
  });

  it('profile cpu names the hot function of a CPU-hot endpoint and writes a .cpuprofile', async () => {
    const progress: unknown[] = [];
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    const profiling = client.call('profile', 'cpu', { duration: '1500ms' }, { onProgress: (p) => (progress.push(p), started()) });
    await running;
    const hits: Promise<unknown>[] = [];
    for (let i = 0; i < 5; i++) {
      hits.push(app.get('/hot?ms=150'));
      await new Promise((r) => setTimeout(r, 200));
    }
    await Promise.all(hits);
    const result = (await profiling) as any;
    expect(result.self.slice(0, 3).map((f: any) => f.function)).toContain('burnCpu');
    const burn = result.self.find((f: any) => f.function === 'burnCpu');
    expect(burn).toMatchObject({ file: APP, line: expect.any(Number) });
    expect(progress.length).toBeGreaterThan(1);
    const profile = JSON.parse(readFileSync(result.file, 'utf8'));
    expect(Object.keys(profile)).toEqual(expect.arrayContaining(['nodes', 'startTime', 'endTime', 'samples', 'timeDeltas']));
    expect(statSync(result.file).mode & 0o777).toBe(0o600);
    expect(path.dirname(result.file)).toBe(out);
  });

  it('profile cpu taken while the main thread spins names the spinning function', async () => {
    const spinning = app.get('/spin?ms=2500');
    // Start once the agent sees the loop stuck (its heartbeat missed a few beats).
    await waitFor(async () => /not turning/.test(((await client.call('process', 'info')) as any).mainThread), 5000, 'the loop to be stuck');
    const result = (await client.call('profile', 'cpu', { duration: '500ms', format: 'collapsed' })) as any;
    // V8 attributes samples of a loop optimized before the profiler started to its caller,
    // so the result also carries the stack at the start, which names the looping function.
    expect(result.busyAtStart.stack[0]).toMatch(/^spinHere \(.*profile-app\.cjs:\d+:\d+\)$/);
    expect(result.self[0].file).toBe(APP);
    expect(result.file).toMatch(/\.collapsed\.txt$/);
    expect(readFileSync(result.file, 'utf8')).toMatch(/profile-app\.cjs:\d+\) \d+\n/);
    await spinning;
  });

  it('a profile running when the loop starts names the looping function in its top entries', async () => {
    await waitFor(async () => ((await client.call('process', 'info')) as any).mainThread === 'event loop turning', 3000, 'the loop to turn');
    const profiling = client.call('profile', 'cpu', { duration: '1s' }, { onProgress: () => {} });
    await new Promise((r) => setTimeout(r, 300));
    await app.get('/spin-fresh?ms=500');
    const result = (await profiling) as any;
    expect(result.self[0].function).toBe('spinFresh');
    expect(result.busyAtStart).toBeUndefined();
  });

  it('cancel mid-profile stops the profiler and still returns what was sampled, without a file', async () => {
    const controller = new AbortController();
    const t0 = performance.now();
    const profiling = client.call('profile', 'cpu', { duration: '60s' }, { signal: controller.signal });
    await new Promise((r) => setTimeout(r, 400));
    controller.abort();
    const result = (await profiling) as any;
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(result.cancelled).toBe(true);
    expect(result.samples).toBeGreaterThan(0);
    // A cancelled call leaves no artefact.
    expect(result.file).toBeUndefined();
    // The profiler is free again at once.
    expect(((await client.call('profile', 'cpu', { duration: '100ms' })) as any).cancelled).toBe(false);
    expect(partials(out)).toEqual([]);
  });

  it('a disconnect mid-profile stops the profiler', async () => {
    const other = await connect(app.socket);
    const running = other.call('profile', 'cpu', { duration: '60s' }).catch((e) => e);
    await new Promise((r) => setTimeout(r, 300));
    await other.close();
    expect((await running).code).toBe('ISPY_ERR_DISCONNECTED');
    await waitFor(async () => ((await client.call('profile', 'cpu', { duration: '100ms' }).catch(() => undefined)) as any)?.cancelled === false, 5000, 'the profiler to be free');
    expect(partials(out)).toEqual([]);
  });

  it('profile alloc names the allocating function', async () => {
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    const sampling = client.call('profile', 'alloc', { duration: '800ms', interval: 1024 }, { onProgress: () => started() });
    await running;
    for (let i = 0; i < 4; i++) await app.get('/alloc');
    const result = (await sampling) as any;
    expect(result.sites.slice(0, 5).map((s: any) => s.function)).toContain('allocateLots');
    expect(result.file).toMatch(/\.heapprofile$/);
    expect(JSON.parse(readFileSync(result.file, 'utf8')).head).toBeDefined();
  });

  it('a gate profiles exactly N calls no closer than --every, then puts the original back', async () => {
    // Calls long enough (~10 ms) for the sampler to catch them even on a loaded machine.
    await app.get('/loop?gap=40&n=4000000');
    try {
      const progress: any[] = [];
      const result = (await client.call('profile', 'gate', { target: `${LIB}:work`, every: '200ms', samples: 3 }, { onProgress: (p) => progress.push(p) })) as any;
      expect(result.taken).toBe(3);
      expect(result.state).toBe('done');
      expect(result.gapsMs).toHaveLength(2);
      for (const gap of result.gapsMs) expect(gap).toBeGreaterThanOrEqual(200);
      expect(result.self.map((f: any) => f.function)).toContain('work');
      expect(progress.at(-1)).toMatchObject({ done: 3, total: 3 });
      const merged = JSON.parse(readFileSync(result.file, 'utf8'));
      expect(merged.nodes[0].callFrame.functionName).toBe('(root)');
      expect(merged.samples.length).toBe(merged.timeDeltas.length);
      expect(JSON.parse((await app.get('/identity')).body)).toEqual({ same: true });
    } finally {
      await app.get('/stop');
    }
  });

  it('gates an async function until its promise settles', async () => {
    await app.get('/async-loop?gap=20');
    try {
      const result = (await client.call('profile', 'gate', { target: `${LIB}:slowAsync`, every: '50ms', samples: 2 })) as any;
      expect(result.taken).toBe(2);
      for (const ms of result.callMs) expect(ms).toBeGreaterThanOrEqual(4);
    } finally {
      await app.get('/stop');
    }
  });

  it('lists detached gates and removes them with ungate, restoring the function', async () => {
    const detached = (await client.call('profile', 'gate', { target: `${LIB}:work`, samples: 5, detach: true })) as any;
    expect(detached.state).toBe('armed');
    expect(JSON.parse((await app.get('/identity')).body)).toEqual({ same: false });
    const listed = (await client.call('profile', 'gates')) as any;
    expect(listed.gates).toContainEqual(expect.objectContaining({ id: detached.id, target: `${LIB}:work`, taken: 0, of: 5, state: 'armed' }));
    expect(await client.call('profile', 'ungate', { id: 'all' })).toEqual({ removed: [detached.id] });
    expect(JSON.parse((await app.get('/identity')).body)).toEqual({ same: true });
    await expect(client.call('profile', 'ungate', { id: '999' })).rejects.toMatchObject({ code: 'ISPY_ERR_NOT_FOUND' });
  });

  it('refuses to gate an ES module export binding, saying what to do instead', async () => {
    const esm = path.join(FIXTURES, 'targets/esm.mjs');
    await expect(client.call('profile', 'gate', { target: `${esm}:double` })).rejects.toMatchObject({
      code: 'ISPY_ERR_UNAVAILABLE',
      message: expect.stringMatching(/ES module's exported bindings are immutable\. Gate the object or prototype it lives on/),
    });
    await expect(client.call('profile', 'gate', { target: `${LIB}:nothing` })).rejects.toMatchObject({ code: 'ISPY_ERR_NOT_FOUND' });
  });

  it('heap stats and heap gc report the main heap', async () => {
    const stats = (await client.call('heap', 'stats')) as any;
    expect(stats.usedMB).toBeGreaterThan(1);
    expect(stats.spaces.map((s: any) => s.space)).toContain('old_space');
    const gc = (await client.call('heap', 'gc')) as any;
    expect(gc.afterMB).toBeGreaterThan(0);
    expect(gc.tookMs).toBeGreaterThanOrEqual(0);
  });

  it('heap snapshot writes valid JSON holding the marker object, and can send it to the client', async () => {
    const local = path.join(tempDir(), 'copy.heapsnapshot');
    const progress: any[] = [];
    const result = (await client.call(
      'heap',
      'snapshot',
      {},
      {
        onProgress: (p) => progress.push(p),
        onArtefact: () => {
          const stream = createWriteStream(local);
          return {
            write: (c: Buffer) => void stream.write(c),
            end: () => new Promise<void>((r) => stream.end(r)),
            abort: async () => void stream.destroy(),
          };
        },
      },
    )) as any;
    const text = readFileSync(result.file, 'utf8');
    const snap = JSON.parse(text);
    expect(Object.keys(snap)).toEqual(expect.arrayContaining(['snapshot', 'nodes', 'edges', 'strings']));
    expect(snap.strings).toContain('IspyTestMarker');
    expect(snap.strings).toContain('marker-7f3a9c');
    expect(statSync(result.file).mode & 0o777).toBe(0o600);
    expect(readFileSync(local, 'utf8')).toBe(text);
    expect(progress.length).toBeGreaterThan(0);
    expect(result.estimatedNeedMB).toBeGreaterThan(result.heapUsedMB);
  });
});

describe('heap snapshot safety', () => {
  it('refuses when the estimate exceeds the memory allowed, and --force overrides', async () => {
    const out = tempDir();
    const app = await startApp({ script: APP, config: { outputDir: out, limits: { snapshotMemory: '1MB' } } });
    const client = await connect(app.socket);
    try {
      const err = (await client.call('heap', 'snapshot').catch((e) => e)) as any;
      expect(err.code).toBe('ISPY_ERR_UNAVAILABLE');
      expect(err.message).toMatch(/refusing to take a heap snapshot: with [\d.]+ MB of heap it may need about [\d.]+ MB more memory \(15x the heap\), and only 1 MB is available \(limits.snapshotMemory in the config\).*--force/);
      expect(artefactsIn(out)).toEqual([]);
      const forced = (await client.call('heap', 'snapshot', { force: true })) as any;
      expect(existsSync(forced.file)).toBe(true);
    } finally {
      await client.close();
      await app.kill();
    }
  });

  it('takes a snapshot while the main thread spins, and shows the file growing', async () => {
    const out = tempDir();
    const app = await startApp({ script: APP, config: { outputDir: out } });
    const client = await connect(app.socket);
    try {
      await app.get('/grow?n=400000');
      // Its answer waits for the snapshot too, which takes seconds more on a busy machine.
      const spinning = app.get('/spin?ms=4000', 240_000);
      await waitFor(async () => ((await client.call('process', 'stack')) as any).state === 'running', 30_000, 'the main thread to spin');
      const progress: string[] = [];
      const result = (await client.call('heap', 'snapshot', {}, { onProgress: (p) => progress.push(p.message ?? '') })) as any;
      expect(JSON.parse(readFileSync(result.file, 'utf8')).strings).toContain('spinHere');
      expect(progress[0]).toMatch(/walking the heap/);
      expect(progress.some((m) => /^writing: [\d.]+ MB so far/.test(m))).toBe(true);
      expect(artefactsIn(out)).toEqual([path.basename(result.file)]);
      await spinning;
    } finally {
      await client.close();
      await app.kill();
    }
    // A slow snapshot is not a failure: on a loaded 2-core machine this one (a 400,000-object
    // heap, written while the thread spins, then parsed here) took over a minute.
  }, 300_000);

  it('cancel mid-snapshot leaves no file behind', async () => {
    const out = tempDir();
    const app = await startApp({ script: APP, config: { outputDir: out } });
    const client = await connect(app.socket);
    try {
      await app.get('/grow?n=400000');
      const controller = new AbortController();
      const snap = client.call('heap', 'snapshot', {}, { signal: controller.signal, onProgress: () => controller.abort() }).catch((e) => e);
      const err = (await snap) as any;
      expect(err).toMatchObject({ code: 'ISPY_ERR_CANCELLED' });
      expect(artefactsIn(out)).toEqual([]);
      expect((await app.get('/')).body).toBe('ok');
    } finally {
      await client.close();
      await app.kill();
    }
  });
});
