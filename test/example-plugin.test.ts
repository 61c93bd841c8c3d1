// The example third-party plugin (examples/hello-plugin): unit-tested in-process with
// loadForTest, the way a plugin author would, then loaded by a real agent from a config
// and called over the real socket with the real client.

import { createRequire } from 'node:module';
import * as dc from 'node:diagnostics_channel';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { command, definePlugin, loadForTest, type TestHarness } from '../dist/src/plugin/index.js';
import { connect, type Client } from '../dist/src/client/index.js';
import { ROOT, cleanup, startApp, waitFor } from './helpers';

const EXAMPLE = path.join(ROOT, 'examples', 'hello-plugin', 'index.js');
// Loaded with Node's own require, exactly as the agent would load a CommonJS plugin.
const hello = createRequire(__filename)(EXAMPLE);

describe('examples/hello-plugin, in-process', () => {
  let h: TestHarness | undefined;
  afterEach(async () => {
    vi.useRealTimers();
    await h?.close();
    h = undefined;
  });

  it('greets, counts and remembers names', async () => {
    h = await loadForTest(hello);
    expect(await h.run('greet', { name: 'Ada' })).toEqual({ greeting: 'hello, Ada', served: 1 });
    expect(await h.run('greet', { name: 'Ada', shout: true })).toEqual({ greeting: 'HELLO, ADA!', served: 2 });
    expect(await h.run('greet', { name: 'Linus' })).toMatchObject({ served: 3 });
    expect(await h.run('count')).toEqual({ served: 3, names: 2, httpRequests: 0 });
    expect(await h.run('count', { name: 'Ada' })).toEqual({ name: 'Ada', times: 2 });
  });

  it('takes its greeting word from pluginOptions', async () => {
    h = await loadForTest(hello, { options: { greeting: 'kia ora' } });
    expect(await h.run('greet', { name: 'Ada' })).toMatchObject({ greeting: 'kia ora, Ada' });
  });

  it('refuses bad arguments with ISPY_ERR_BAD_ARGS and unknown names with ISPY_ERR_NOT_FOUND', async () => {
    h = await loadForTest(hello);
    await expect(h.run('greet', {})).rejects.toMatchObject({ code: 'ISPY_ERR_BAD_ARGS', message: expect.stringContaining('missing <name>') });
    await expect(h.run('greet', { name: 'Ada', loud: true })).rejects.toMatchObject({ code: 'ISPY_ERR_BAD_ARGS' });
    await expect(h.run('ticks', { every: 'soon' })).rejects.toMatchObject({ code: 'ISPY_ERR_BAD_ARGS', message: expect.stringContaining('--every expects a duration') });
    await expect(h.run('ticks', { count: 0 })).rejects.toMatchObject({ code: 'ISPY_ERR_BAD_ARGS' });
    await expect(h.run('count', { name: 'Nobody' })).rejects.toMatchObject({ code: 'ISPY_ERR_NOT_FOUND' });
  });

  it('streams ticks with progress, and stops at maxItems', async () => {
    h = await loadForTest(hello);
    const ticks = (await h.run('ticks', { every: '10ms', count: 3 })) as { tick: number }[];
    expect(ticks.map((t) => t.tick)).toEqual([1, 2, 3]);
    expect(h.progress).toEqual([
      { done: 1, total: 3 },
      { done: 2, total: 3 },
      { done: 3, total: 3 },
    ]);
    const some = (await h.run('ticks', { every: '10ms' }, { maxItems: 2 })) as unknown[];
    expect(some).toHaveLength(2);
  });

  it('ends a cancelled stream at once, and close() leaves no timer and no subscriber', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval'] });
    h = await loadForTest(hello);
    expect(dc.hasSubscribers('http.server.request.start')).toBe(true);
    const controller = new AbortController();
    const running = h.run('ticks', { every: '1m' }, { signal: controller.signal });
    const settled = running.catch((err: unknown) => err);
    await vi.advanceTimersByTimeAsync(150_000);
    expect(vi.getTimerCount()).toBe(1); // the wait for tick 3
    controller.abort();
    expect(await settled).toMatchObject({ code: 'ISPY_ERR_CANCELLED' });
    expect(vi.getTimerCount()).toBe(0);
    await h.close();
    await h.close(); // idempotent
    h = undefined;
    expect(vi.getTimerCount()).toBe(0);
    expect(dc.hasSubscribers('http.server.request.start')).toBe(false);
  });
});

describe('loadForTest, the output folder', () => {
  // A plugin that says where its artefacts go, and writes one on request.
  const filer = definePlugin({
    name: 'filer',
    summary: 'writes a file',
    commands: {
      where: command({ summary: 'the output folder', thread: 'main', run: (_a, ctx) => ({ dir: ctx.settings.outputDir }) }),
      write: command({ summary: 'writes a file', thread: 'main', artefact: true, run: async (_a, ctx) => ({ file: await ctx.artefacts.writeFile('note.txt', 'hi') }) }),
    },
  });

  it('is a temp folder of its own that close() removes when the test left nothing in it', async () => {
    const h = await loadForTest(filer);
    const { dir } = (await h.run('where')) as { dir: string };
    expect(existsSync(dir)).toBe(true);
    await h.close();
    expect(existsSync(dir)).toBe(false);
  });

  it('is removed when the plugin fails to set up', async () => {
    let dir = '';
    const failing = definePlugin({
      name: 'failing',
      summary: 'fails in setup',
      setup: {
        worker(ctx) {
          dir = ctx.settings.outputDir;
          throw new Error('no database');
        },
      },
      commands: {},
    });
    await expect(loadForTest(failing)).rejects.toThrow(/no database/);
    expect(dir).not.toBe('');
    expect(existsSync(dir)).toBe(false);
  });

  it('keeps the artefacts a test made, for it to read', async () => {
    const h = await loadForTest(filer);
    const { file } = (await h.run('write')) as { file: string };
    await h.close();
    expect(readFileSync(file, 'utf8')).toBe('hi');
    rmSync(path.dirname(file), { recursive: true });
  });
});

describe('examples/hello-plugin, loaded by a real agent', () => {
  let client: Client | undefined;
  afterAll(async () => {
    await client?.close();
    await cleanup();
  });

  it('is listed in the catalogue and answers over the socket', async () => {
    const app = await startApp({
      script: 'http-app.cjs',
      config: { plugins: [EXAMPLE], limits: { mainThreadTimeout: '300ms' } },
    });
    client = await connect(app.socket, { clientName: 'example-plugin.test' });
    const info = client.plugins.find((p) => p.name === 'hello');
    expect(info).toMatchObject({ source: EXAMPLE, version: '0.1.0' });
    expect(info!.commands.map((c) => [c.name, c.thread, c.stream])).toEqual([
      ['greet', 'main', false],
      ['count', 'main', false],
      ['ticks', 'worker', true],
    ]);
    expect(client.welcome.failedPlugins).toEqual([]);

    expect(await client.call('hello', 'greet', { name: 'Ada', shout: true })).toEqual({ greeting: 'HELLO, ADA!', served: 1 });
    await app.get('/');
    expect(await client.call('hello', 'count')).toEqual({ served: 1, names: 1, httpRequests: 1 });
    await expect(client.call('hello', 'greet', { name: 42 })).rejects.toMatchObject({ code: 'ISPY_ERR_BAD_ARGS' });

    const ticks: unknown[] = [];
    for await (const t of client.stream('hello', 'ticks', { every: '20ms', count: 2 })) ticks.push(t);
    expect(ticks).toEqual([expect.objectContaining({ tick: 1 }), expect.objectContaining({ tick: 2 })]);
  });

  it('keeps streaming from the worker while the main thread is blocked; main-thread commands say busy', async () => {
    const app = await startApp({
      script: 'http-app.cjs',
      config: { plugins: [EXAMPLE], limits: { mainThreadTimeout: '300ms' } },
    });
    const c = await connect(app.socket, { clientName: 'example-plugin.test' });
    try {
      void app.get('/spin?ms=3000').catch(() => {});
      // Wait until the worker's ticks report the main thread's heartbeat has stopped.
      await waitFor(
        async () => {
          const items: { heartbeatAgeMs: number }[] = [];
          for await (const item of c.stream('hello', 'ticks', { every: '10ms', count: 1 })) items.push(item as { heartbeatAgeMs: number });
          return items[0]!.heartbeatAgeMs > 500;
        },
        5000,
        'the main thread to block',
      );
      await expect(c.call('hello', 'greet', { name: 'Ada' })).rejects.toMatchObject({ code: 'ISPY_ERR_MAIN_BUSY' });
    } finally {
      await c.close();
    }
  });
});
