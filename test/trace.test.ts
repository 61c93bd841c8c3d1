// The trace plugin and the eval plugin against real CommonJS and ES module apps.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { cleanup, startApp, waitFor, FIXTURES, type App } from './helpers';
import { connect, type Client } from '../dist/src/client/index.js';

afterAll(cleanup);

const LIB = path.join(FIXTURES, 'targets/lib.cjs');
const ESM = path.join(FIXTURES, 'targets/esm.mjs');

async function identity(app: App): Promise<Record<string, boolean>> {
  return JSON.parse((await app.get('/identity')).body);
}

async function collect(client: Client, args: Record<string, unknown>, until: (events: any[]) => boolean, trigger: () => Promise<unknown>): Promise<any[]> {
  const events: any[] = [];
  const controller = new AbortController();
  // --replay: events that happen before the watch is in place on a loaded machine still arrive.
  const watching = client.call('trace', 'watch', { replay: true, ...args }, { signal: controller.signal, onData: (e) => events.push(e) }).catch((e) => e);
  await trigger();
  await waitFor(() => until(events), 5000, 'trace events');
  controller.abort();
  await watching;
  return events;
}

describe('trace in a CommonJS app', () => {
  let app: App;
  let client: Client;

  beforeAll(async () => {
    app = await startApp({ script: 'trace-app.cjs', config: { limits: { traceEventsPerSecond: 50 }, redact: ['^pin$'] } });
    await app.port();
    client = await connect(app.socket);
  });

  afterAll(async () => {
    await client?.close();
    await app?.kill();
  });

  it('records arguments, result and caller stack, and removes itself after --limit calls', async () => {
    const added = (await client.call('trace', 'add', { target: `${LIB}:add`, args: true, result: true, stack: true, limit: 3 })) as any;
    expect(added).toMatchObject({ target: `${LIB}:add`, state: 'active', limit: 3 });
    expect((await identity(app)).add).toBe(false);
    const events = await collect(client, { id: added.id }, (e) => e.length >= 3, async () => {
      for (let i = 0; i < 5; i++) await app.get(`/add?a=${i}&b=10`);
    });
    expect(events.map((e) => e.seq)).toEqual([1, 2, 3]);
    expect(events[0]).toMatchObject({ trace: added.id, args: ['0', '10'], result: '10', durationMs: expect.any(Number) });
    expect(events[0].stack[0]).toMatch(/trace-app\.cjs:\d+:\d+/);
    const list = (await client.call('trace', 'list')) as any;
    expect(list.traces.find((t: any) => t.id === added.id)).toMatchObject({ state: 'removed', ended: 'limit of 3 calls reached', emitted: 3 });
    expect((await identity(app)).add).toBe(true);
  });

  it('redacts values under secret-looking keys in --args and --result, with the config\'s patterns, and the app gets the real values', async () => {
    const added = (await client.call('trace', 'add', { target: `${FIXTURES}/targets/auth.cjs:login`, args: true, result: true, limit: 1 })) as any;
    let body = '';
    const events = await collect(client, { id: added.id }, (e) => e.length >= 1, async () => {
      body = (await app.get('/login')).body;
    });
    const [shown] = events[0].args;
    expect(shown).toContain("user: 'ada'");
    expect(shown).toContain("password: '[redacted, 7 chars]'");
    expect(shown).toContain("pin: '[redacted]'"); // the config's "redact": ["^pin$"]
    expect(shown).toContain("apiKey: '[redacted, 5 chars]'");
    expect(shown).toContain("city: 'Oslo'");
    expect(shown).not.toMatch(/hunter2|1234|k-123/);
    expect(events[0].result).toContain("token: '[redacted, 5 chars]'");
    expect(events[0].result).toContain('ttl: 60');
    // The app's own objects were not touched.
    expect(JSON.parse(body)).toEqual({ user: 'ada', grant: { token: 't-ada', ttl: 60 } });
  });

  it('passes an app exception through unchanged and reports it', async () => {
    const added = (await client.call('trace', 'add', { target: `${LIB}:fail` })) as any;
    const events = await collect(client, { id: added.id }, (e) => e.length >= 1, async () => {
      expect(JSON.parse((await app.get('/fail')).body)).toEqual({ type: 'TypeError', message: 'bad input', fromLib: true });
    });
    expect(events[0].error).toMatchObject({ name: 'TypeError', message: 'bad input' });
    expect(events[0].error.frames[0]).toMatch(/fail \(.*lib\.cjs/);
    await client.call('trace', 'remove', { id: String(added.id) });
    expect((await identity(app)).fail).toBe(true);
  });

  it('times async functions until their promise settles, and keeps `new` working', async () => {
    const later = (await client.call('trace', 'add', { target: `${LIB}:later`, result: true })) as any;
    const store = (await client.call('trace', 'add', { target: `${LIB}:Store` })) as any;
    const events = await collect(client, {}, (e) => e.some((x) => x.trace === later.id) && e.some((x) => x.trace === store.id), async () => {
      expect((await app.get('/later')).body).toBe('42');
      expect(JSON.parse((await app.get('/store')).body)).toEqual({ value: 'shop:k', isStore: true });
    });
    expect(events.find((e) => e.trace === later.id)).toMatchObject({ async: true, result: '42' });
    expect(events.find((e) => e.trace === later.id).durationMs).toBeGreaterThanOrEqual(4);
    expect(events.find((e) => e.trace === store.id)).toMatchObject({ construct: true });
    await client.call('trace', 'remove', { id: 'all' });
    expect(await identity(app)).toEqual({ add: true, fail: true, Store: true, get: true });
  });

  it('composes two traces on one function, removable in either order', async () => {
    const a = (await client.call('trace', 'add', { target: `${LIB}:add` })) as any;
    const b = (await client.call('trace', 'add', { target: `${LIB}:Store.prototype.get` })) as any;
    const c = (await client.call('trace', 'add', { target: `${LIB}:add` })) as any;
    await app.get('/add');
    const counts = (await client.call('trace', 'list')) as any;
    expect(counts.traces.find((t: any) => t.id === a.id).emitted).toBe(1);
    expect(counts.traces.find((t: any) => t.id === c.id).emitted).toBe(1);
    await client.call('trace', 'remove', { id: String(a.id) });
    expect((await identity(app)).add).toBe(false);
    await client.call('trace', 'remove', { id: String(c.id) });
    await client.call('trace', 'remove', { id: String(b.id) });
    expect(await identity(app)).toEqual({ add: true, fail: true, Store: true, get: true });
  });

  it('drops and counts calls past the per-second cap instead of slowing the app', async () => {
    const added = (await client.call('trace', 'add', { target: `${LIB}:add`, limit: 10000 })) as any;
    expect((await app.get('/burst?n=500')).body).toBe('500');
    const t = ((await client.call('trace', 'list')) as any).traces.find((x: any) => x.id === added.id);
    expect(t).toMatchObject({ calls: 500, emitted: 50, dropped: 450 });
    await client.call('trace', 'remove', { id: String(added.id) });
  });

  it('expires after --duration', async () => {
    const added = (await client.call('trace', 'add', { target: `${LIB}:add`, duration: '300ms' })) as any;
    await waitFor(async () => ((await client.call('trace', 'list')) as any).traces.find((t: any) => t.id === added.id)?.state === 'removed', 5000, 'the trace to expire');
    expect(((await client.call('trace', 'list')) as any).traces.find((t: any) => t.id === added.id).ended).toMatch(/its 0s were up/);
    expect((await identity(app)).add).toBe(true);
  });

  it("removes a client's traces when it disconnects, unless --detach", async () => {
    const other = await connect(app.socket, { clientName: 'short-lived' });
    const attached = (await other.call('trace', 'add', { target: `${LIB}:add` })) as any;
    const detached = (await other.call('trace', 'add', { target: `${LIB}:fail`, detach: true })) as any;
    expect(attached.origin).toBe('short-lived');
    await other.close();
    await waitFor(async () => ((await client.call('trace', 'list')) as any).traces.find((t: any) => t.id === attached.id)?.state === 'removed', 5000, 'the trace to go');
    const list = ((await client.call('trace', 'list')) as any).traces;
    expect(list.find((t: any) => t.id === attached.id).ended).toBe('its client disconnected');
    expect(list.find((t: any) => t.id === detached.id).state).toBe('active');
    expect(await identity(app)).toMatchObject({ add: true, fail: false });
    await client.call('trace', 'remove', { id: String(detached.id) });
    expect((await identity(app)).fail).toBe(true);
  });

  it('names what is wrong with a bad target, and caps the duration', async () => {
    await expect(client.call('trace', 'add', { target: 'add' })).rejects.toMatchObject({ code: 'ISPY_ERR_BAD_ARGS', message: expect.stringMatching(/must be <module>:<export path>/) });
    await expect(client.call('trace', 'add', { target: `${LIB}:nothing` })).rejects.toMatchObject({ code: 'ISPY_ERR_NOT_FOUND' });
    await expect(client.call('trace', 'add', { target: `${LIB}:frozen` })).rejects.toMatchObject({ code: 'ISPY_ERR_UNAVAILABLE', message: expect.stringMatching(/read-only/) });
    await expect(client.call('trace', 'add', { target: `${LIB}:add`, duration: '1h' })).rejects.toMatchObject({ message: expect.stringMatching(/over the configured cap of 600000 ms/) });
    await expect(client.call('trace', 'remove', { id: '999' })).rejects.toMatchObject({ code: 'ISPY_ERR_NOT_FOUND' });
  });
});

describe('trace in an ES module app', () => {
  it('traces a method of an exported class, and refuses an export binding with what to do instead', async () => {
    const app = await startApp({ script: 'trace-app.mjs', preload: 'import' });
    await app.port();
    const client = await connect(app.socket);
    try {
      const err = (await client.call('trace', 'add', { target: `${ESM}:double` }).catch((e) => e)) as any;
      expect(err.code).toBe('ISPY_ERR_UNAVAILABLE');
      expect(err.message).toMatch(/ES module export, and an ES module's exported bindings are immutable/);
      expect(err.message).toMatch(/list it under "traces"/);
      const added = (await client.call('trace', 'add', { target: `${ESM}:Greeter.prototype.hello`, args: true, result: true })) as any;
      const events = await collect(client, { id: added.id }, (e) => e.length >= 1, async () => {
        expect((await app.get('/greet?name=lin')).body).toBe('hello lin');
      });
      expect(events[0]).toMatchObject({ args: ["'lin'"], result: "'hello lin'" });
    } finally {
      await client.close();
      await app.kill();
    }
  });
});

describe('config-time traces', () => {
  it('wrap a CommonJS export when its module loads and see the first call', async () => {
    const app = await startApp({ script: 'trace-app.cjs', config: { traces: [{ target: `${LIB}:add`, args: true, result: true }] } });
    await app.port();
    const client = await connect(app.socket);
    try {
      const list = ((await client.call('trace', 'list')) as any).traces;
      expect(list[0]).toMatchObject({ target: `${LIB}:add`, origin: 'config', state: 'active', emitted: 1 });
      const events: any[] = [];
      await client.call('trace', 'watch', { replay: true, limit: 1 }, { onData: (e) => events.push(e) });
      expect(events[0]).toMatchObject({ seq: 1, args: ['40', '2'], result: '42' });
      await client.call('trace', 'remove', { id: 'all' });
      expect((await identity(app)).add).toBe(true);
    } finally {
      await client.close();
      await app.kill();
    }
  });

  it('wrap an ES module export from its first call, restore the exact original, and explain a const export', async () => {
    const app = await startApp({
      script: 'trace-app.mjs',
      preload: 'import',
      config: { traces: [{ target: `${ESM}:double`, args: true, result: true }, { target: `${ESM}:tripler` }, { target: `${ESM}:Greeter.prototype.hello` }, { target: `${ESM}:default` }] },
    });
    await app.port();
    const client = await connect(app.socket);
    try {
      const list = ((await client.call('trace', 'list')) as any).traces;
      const byTarget = Object.fromEntries(list.map((t: any) => [t.target.split(':').pop(), t]));
      expect(byTarget.double).toMatchObject({ state: 'active', emitted: 1 });
      expect(byTarget.tripler).toMatchObject({ state: 'removed', ended: expect.stringMatching(/const binding/) });
      expect(byTarget['Greeter.prototype.hello']).toMatchObject({ state: 'active' });
      // A default export has no local name to assign: refused, and the app runs on.
      expect(byTarget.default).toMatchObject({ state: 'removed', ended: expect.stringMatching(/cannot be traced from the config/) });
      expect((await app.get('/greet')).body).toBe('hello ada');
      const events: any[] = [];
      await client.call('trace', 'watch', { replay: true, limit: 1 }, { onData: (e) => events.push(e) });
      expect(events[0]).toMatchObject({ args: ['21'], result: '42' });
      expect((await app.get('/double?x=5')).body).toBe('10');
      expect((await identity(app)).double).toBe(false);
      await client.call('trace', 'remove', { id: String(byTarget.double.id) });
      expect((await identity(app)).double).toBe(true);
      // Only live traces are removed by `all`; the refused ones were never in place.
      expect(await client.call('trace', 'remove', { id: 'all' })).toEqual({ removed: [byTarget['Greeter.prototype.hello'].id] });
      expect((await app.get('/double?x=5')).body).toBe('10');
      // The load hook is one Node does not warn about (module.register() is deprecated on 26):
      // nothing of Node's about the agent in the app's stderr.
      expect(app.stderr()).not.toMatch(/Warning/);
    } finally {
      await client.close();
      await app.kill();
    }
  });
});

describe('eval', () => {
  it('is off unless the config enables it, and says how', async () => {
    const app = await startApp({ script: 'trace-app.cjs' });
    const client = await connect(app.socket);
    try {
      await expect(client.call('eval', 'eval', { expression: '1 + 1' })).rejects.toMatchObject({ code: 'ISPY_ERR_UNAVAILABLE', message: expect.stringMatching(/eval is disabled.*set "eval": true/) });
    } finally {
      await client.close();
      await app.kill();
    }
  });

  it('evaluates expressions and statements with await in the app, and audits each (nothing in its stderr)', async () => {
    const app = await startApp({ script: 'trace-app.cjs', config: { eval: true, audit: './audit.log' } });
    const client = await connect(app.socket, { clientName: 'tester' });
    try {
      expect(await client.call('eval', 'eval', { expression: '1 + 1' })).toMatchObject({ type: 'number', value: '2' });
      expect(await client.call('eval', 'eval', { expression: 'process.pid' })).toMatchObject({ value: String(app.pid) });
      expect(await client.call('eval', 'eval', { expression: 'await new Promise((r) => setTimeout(() => r("late"), 20))' })).toMatchObject({ value: "'late'" });
      expect(await client.call('eval', 'eval', { expression: 'const x = 6; return x * 7;' })).toMatchObject({ value: '42' });
      expect(await client.call('eval', 'eval', { expression: 'require("./targets/lib.cjs") === undefined', timeout: '1s' }).catch((e) => e)).toBeDefined();
      expect(await client.call('eval', 'eval', { expression: 'null.x' })).toMatchObject({ threw: true, name: 'TypeError' });
      await expect(client.call('eval', 'eval', { expression: 'while (true) {}', timeout: '100ms' })).rejects.toMatchObject({ code: 'ISPY_ERR_TIMEOUT', message: expect.stringMatching(/ran for more than 100 ms and was stopped/) });
      await expect(client.call('eval', 'eval', { expression: 'this is not javascript' })).rejects.toMatchObject({ code: 'ISPY_ERR_BAD_ARGS' });
      expect((await app.get('/')).body).toBe('ok');
      // Each is in the audit log, with the client, before it ran; nothing in the app's stderr.
      const audited = readFileSync(path.join(app.dir, 'audit.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      expect(audited).toContainEqual(expect.objectContaining({ phase: 'start', plugin: 'eval', command: 'eval', client: expect.objectContaining({ name: 'tester' }), args: expect.objectContaining({ expression: '1 + 1' }) }));
      expect(app.stderr()).toBe('');
    } finally {
      await client.close();
      await app.kill();
    }
  });
});
