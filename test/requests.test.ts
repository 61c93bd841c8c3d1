// The requests plugin against real HTTP servers and real clients.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { openSync, closeSync, writeSync } from 'node:fs';
import { cleanup, startApp, tempDir, waitFor, FIXTURES, type App } from './helpers';
import { connect, type Client } from '../dist/src/client/index.js';
import { contextFramesCarryStores } from '../dist/plugins/requests/tracker.js';

afterAll(cleanup);

const APP_FILE = path.join(FIXTURES, 'requests-app.cjs');

/** A backend that holds each request until released. */
function slowBackend(): Promise<{ url: string; held: http.ServerResponse[]; release(): void; close(): Promise<void> }> {
  const held: http.ServerResponse[] = [];
  const server = http.createServer((_req, res) => held.push(res));
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      resolve({
        url: `http://127.0.0.1:${port}`,
        held,
        release: () => held.splice(0).forEach((r) => r.end('payload')),
        close: () =>
          new Promise<void>((r) => {
            held.splice(0).forEach((res) => res.destroy());
            server.closeAllConnections();
            server.close(() => r());
          }),
      });
    });
  });
}

/** Fires a request and leaves it in flight; returns how to abort it and its outcome. */
function fire(port: number, pathname: string): { done: Promise<string>; abort(): void } {
  let req!: http.ClientRequest;
  const done = new Promise<string>((resolve) => {
    req = http.get({ host: '127.0.0.1', port, path: pathname, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(body));
    });
    req.on('error', (e) => resolve(`error: ${e.message}`));
  });
  return { done, abort: () => req.destroy() };
}

/** Where AsyncLocalStorage runs on AsyncContextFrame (the same probe the plugin makes; the app runs on this same node). */
const CONTEXT_LINE = contextFramesCarryStores();

type Hooks = { promiseTracking: boolean; destroyHooks: number | null; beforeHooks: number | null; netSocketListened: boolean };

type Row = { id: number; url: string; ageMs: number; route?: string; outbound?: number; executing?: boolean; waitingOn?: number };

async function rows(client: Client, args: Record<string, unknown> = {}): Promise<{ requests: Row[]; total: number; tracking: string; mainThread?: any }> {
  return (await client.call('requests', 'list', args)) as never;
}

describe('requests in a raw http app', () => {
  let app: App;
  let client: Client;
  let port: number;
  let backend: Awaited<ReturnType<typeof slowBackend>>;
  let fifo: string;

  beforeAll(async () => {
    backend = await slowBackend();
    const dir = tempDir();
    fifo = path.join(dir, 'slow.fifo');
    execFileSync('mkfifo', [fifo]);
    app = await startApp({ script: APP_FILE, dir, env: { BACKEND: backend.url, FIFO: fifo } });
    port = await app.port();
    client = await connect(app.socket);
  });

  afterAll(async () => {
    await client?.close();
    await app?.kill();
    await backend?.close();
  });

  it('lists in-flight requests oldest first with growing ages, and drops finished and aborted ones', async () => {
    const timer = fire(port, '/timer?ms=1500');
    await new Promise((r) => setTimeout(r, 50));
    const outbound = fire(port, '/outbound');
    await waitFor(() => backend.held.length === 1, 5000, 'the outbound call to reach the backend');
    const aborted = fire(port, '/timer?ms=60000');
    await waitFor(async () => (await rows(client)).total === 3, 5000, 'three requests in flight');

    const first = await rows(client);
    expect(first.tracking).toMatch(/^off/);
    expect(first.requests.map((r) => r.url)).toEqual(['/timer?ms=1500', '/outbound', '/timer?ms=60000']);
    expect(first.requests[0]!.ageMs).toBeGreaterThan(first.requests[1]!.ageMs);
    // The outbound call was made synchronously by the handler: attributed even without tracking.
    expect(first.requests[1]!.outbound).toBe(1);

    await new Promise((r) => setTimeout(r, 200));
    const later = await rows(client);
    expect(later.requests[0]!.ageMs).toBeGreaterThan(first.requests[0]!.ageMs + 150);
    expect((await rows(client, { minAge: '150ms' })).requests.map((r) => r.url)).toContain('/timer?ms=1500');
    expect((await rows(client, { limit: 1 })).requests).toHaveLength(1);

    const show = (await client.call('requests', 'show', { id: first.requests[1]!.id })) as any;
    expect(show.request).toBe('GET /outbound HTTP/1.1');
    expect(show.outbound).toEqual([{ kind: 'http', method: 'GET', url: `${backend.url}/slow`, ageMs: expect.any(Number) }]);

    aborted.abort();
    expect(await timer.done).toBe('timer done');
    backend.release();
    expect(await outbound.done).toBe('backend done');
    await waitFor(async () => (await rows(client)).total === 0, 5000, 'the table to empty');
    const slow = (await client.call('requests', 'slow', { limit: 5 })) as any;
    const byUrl = Object.fromEntries(slow.requests.map((r: any) => [r.url, r]));
    expect(byUrl['/timer?ms=60000']).toMatchObject({ aborted: true, status: null });
    expect(byUrl['/timer?ms=1500']).toMatchObject({ aborted: false, status: 200 });
    expect(byUrl['/timer?ms=1500'].durationMs).toBeGreaterThanOrEqual(1400);
  });

  it('redacts secret headers and says how to see waits when tracking is off', async () => {
    // Held until the test lets it go, however slowly the machine answers the calls below.
    const req = http.get({ host: '127.0.0.1', port, path: '/timer?ms=60000&token=s3cret&page=2', agent: false, headers: { authorization: 'Bearer abc.def', cookie: 'sid=1', 'x-api-key': 'k', 'x-trace': 'visible' } });
    req.on('error', () => {});
    await waitFor(async () => (await rows(client)).total === 1, 5000, 'the request');
    const id = (await rows(client)).requests[0]!.id;
    const show = (await client.call('requests', 'show', { id })) as any;
    expect(show.headers.authorization).toBe('[redacted, 14 chars]');
    expect(show.headers.cookie).toMatch(/redacted/);
    expect(show.headers['x-api-key']).toMatch(/redacted/);
    expect(show.headers['x-trace']).toBe('visible');
    expect(show.request).toBe('GET /timer?ms=60000&token=***&page=2 HTTP/1.1');
    expect(JSON.stringify(await client.call('requests', 'list'))).not.toContain('s3cret');
    expect(show.tracking).toMatch(/run `requests track`/);
    expect(show.waitingOn).toBeUndefined();
    await expect(client.call('requests', 'show', { id: 99999 })).rejects.toMatchObject({ code: 'ISPY_ERR_NOT_FOUND' });
    // The client gives up: the request leaves the table (the next test counts what is in flight).
    req.destroy();
    await waitFor(async () => (await rows(client)).total === 0, 10_000, 'the abandoned request to leave the table');
  });

  it('with tracking armed on async_hooks, show names the timer, the outbound call and the file read with app frames, and the fetch\'s socket, with no destroy hook', async () => {
    const armed = (await client.call('requests', 'track', { duration: '20s', hooks: true })) as any;
    expect(armed).toMatchObject({ tracking: 'armed', mode: 'hooks', records: expect.stringMatching(/timers.*file system calls.*DNS/) });
    const hooks = JSON.parse((await app.get('/hooks')).body) as Hooks;
    expect(hooks.promiseTracking).toBe(true);
    // No destroy hook: with one, Node follows every promise to its collection (where the
    // count is exposed; null on Node 24+).
    if (hooks.destroyHooks !== null) expect(hooks.destroyHooks).toBe(0);
    // The `before` hook (which ends file reads, lookups, connects) is on only once one is recorded.
    if (hooks.beforeHooks !== null) expect(hooks.beforeHooks).toBe(0);

    const timer = fire(port, '/timer?ms=3000');
    const outbound = fire(port, '/outbound');
    const fetched = fire(port, '/fetch');
    const file = fire(port, '/file');
    await waitFor(() => backend.held.length === 2, 5000, 'both backend calls');
    await waitFor(async () => (await rows(client)).total === 4, 5000, 'four requests');
    const list = await rows(client);
    expect(list.tracking).toMatch(/^armed, \d+s left$/);
    const byUrl = Object.fromEntries(list.requests.map((r) => [r.url, r]));

    const show = async (url: string) => (await client.call('requests', 'show', { id: byUrl[url]!.id })) as any;
    const frameIn = (w: any, fn: string) => w.createdAt.some((f: any) => f.file === APP_FILE && f.function === fn);

    const t = await show('/timer?ms=3000');
    expect(t.waitingOn).toContainEqual(expect.objectContaining({ type: 'Timeout', detail: 'timer of 3000 ms' }));
    expect(frameIn(t.waitingOn.find((w: any) => w.type === 'Timeout'), 'waitOnTimer')).toBe(true);

    const o = await show('/outbound');
    expect(o.outbound).toEqual([expect.objectContaining({ kind: 'http', url: `${backend.url}/slow` })]);
    expect(o.waitingOn.some((w: any) => /TCP/.test(w.type) && frameIn(w, 'callBackend'))).toBe(true);

    const f = await show('/fetch');
    expect(f.outbound).toEqual([expect.objectContaining({ kind: 'fetch', url: `${backend.url}/slow` })]);
    // The socket undici opens for it is attributed through the promises in between (no app
    // frame: undici's code opened it; promises themselves are not recorded, see tracker.ts).
    expect(f.waitingOn).toContainEqual(expect.objectContaining({ type: 'TCPWRAP', detail: 'TCP socket' }));

    const r = await show('/file');
    expect(r.waitingOn).toContainEqual(expect.objectContaining({ type: 'FSREQCALLBACK', detail: 'file system call' }));
    expect(frameIn(r.waitingOn.find((w: any) => w.type === 'FSREQCALLBACK'), 'readSlowFile')).toBe(true);

    // Release everything; the table empties.
    backend.release();
    const fd = openSync(fifo, 'w');
    writeSync(fd, 'data');
    closeSync(fd);
    expect(await file.done).toBe('read 4');
    await Promise.all([timer.done, outbound.done, fetched.done]);
    await waitFor(async () => (await rows(client)).total === 0, 5000, 'the table to empty');

    if (hooks.beforeHooks !== null) expect((JSON.parse((await app.get('/hooks')).body) as Hooks).beforeHooks).toBe(1);

    // Disarm: no hook left behind.
    expect(await client.call('requests', 'track', { off: true })).toEqual({ tracking: 'off', wasArmed: true });
    expect(JSON.parse((await app.get('/hooks')).body)).toMatchObject({ promiseTracking: false, ...(hooks.destroyHooks === null ? {} : { destroyHooks: 0, beforeHooks: 0 }) });
    expect((await rows(client)).tracking).toMatch(/^off/);
  });

  it.skipIf(!CONTEXT_LINE)('by default where AsyncLocalStorage runs on AsyncContextFrame: no async hook, the sockets each request opens with app frames, and nothing left when off (needs AsyncLocalStorage on AsyncContextFrame, Node 24+)', async () => {
    const armed = (await client.call('requests', 'track', { duration: '20s' })) as any;
    expect(armed).toMatchObject({ tracking: 'armed', mode: 'context', records: expect.stringMatching(/not timers, file system calls or DNS lookups: add --hooks/) });
    expect(JSON.parse((await app.get('/hooks')).body)).toMatchObject({ promiseTracking: false, netSocketListened: true });

    // A backend of its own: the app's pools hold no connection to it, so each call opens one.
    const fresh = await slowBackend();
    const to = `?to=${encodeURIComponent(fresh.url)}`;
    const timer = fire(port, '/timer?ms=3000');
    const outbound = fire(port, `/outbound${to}`);
    const fetched = fire(port, `/fetch${to}`);
    await waitFor(() => fresh.held.length === 2, 5000, 'both backend calls');
    await waitFor(async () => (await rows(client)).total === 3, 5000, 'three requests');
    const list = await rows(client);
    const byUrl = Object.fromEntries(list.requests.map((r) => [r.url, r]));
    const show = async (url: string) => (await client.call('requests', 'show', { id: byUrl[url]!.id })) as any;

    // The http call's socket is opened on the handler's own path: its frames are the app's.
    const o = await show(`/outbound${to}`);
    expect(o.outbound).toEqual([expect.objectContaining({ kind: 'http', url: `${fresh.url}/slow` })]);
    const socket = o.waitingOn.find((w: any) => w.type === 'socket');
    expect(socket.createdAt.some((f: any) => f.file === APP_FILE && f.function === 'callBackend')).toBe(true);
    expect(socket.detail).toMatch(/^socket to 127\.0\.0\.1:\d+$/);
    // fetch: undici opens the socket after awaits; the store follows it there.
    const f = await show(`/fetch${to}`);
    expect(f.outbound).toEqual([expect.objectContaining({ kind: 'fetch', url: `${fresh.url}/slow` })]);
    expect(f.waitingOn).toContainEqual(expect.objectContaining({ type: 'socket' }));
    // A timer is not seen on this path (docs/requests.md says so).
    expect((await show('/timer?ms=3000')).waitingOn).toEqual([]);

    fresh.release();
    await Promise.all([timer.done, outbound.done, fetched.done]);
    await fresh.close();
    await waitFor(async () => (await rows(client)).total === 0, 5000, 'the table to empty');
    expect(await client.call('requests', 'track', { off: true })).toEqual({ tracking: 'off', wasArmed: true });
    expect(JSON.parse((await app.get('/hooks')).body)).toMatchObject({ promiseTracking: false, netSocketListened: false });
  });

  it('disarms itself when its time is up, leaving no hook', async () => {
    // Either way of tracking: the default one of this line, and async_hooks.
    for (const hooks of [false, true]) {
      await client.call('requests', 'track', { duration: '300ms', hooks });
      const armed = JSON.parse((await app.get('/hooks')).body) as Hooks;
      const viaHooks = hooks || !CONTEXT_LINE;
      expect(armed).toMatchObject({ promiseTracking: viaHooks, netSocketListened: !viaHooks });
      const off = (h: Hooks) => !h.promiseTracking && !h.netSocketListened;
      await waitFor(async () => off(JSON.parse((await app.get('/hooks')).body)), 3000, 'auto-disarm');
      expect((await rows(client)).tracking).toMatch(/^off/);
    }
  });

  it('refuses a duration over the configured cap', async () => {
    await expect(client.call('requests', 'track', { duration: '1h' })).rejects.toMatchObject({ code: 'ISPY_ERR_BAD_ARGS', message: expect.stringMatching(/over the configured cap of 300000 ms \(limits.trackMaxDuration\)/) });
  });

  it('still lists requests while a handler spins, naming the spinning one and the stack', async () => {
    const waiting = fire(port, '/timer?ms=3000');
    await waitFor(async () => (await rows(client)).total === 1, 5000, 'the waiting request');
    const spinning = fire(port, '/spin?ms=3000');
    let elapsed = 0;
    const list = await waitFor(async () => {
      const t0 = performance.now();
      const l = await rows(client);
      elapsed = performance.now() - t0;
      return l.mainThread?.stack?.length ? l : undefined;
    }, 5000, 'the list to see the spinning handler');
    expect(elapsed).toBeLessThan(1500);
    expect(list.mainThread.busyForMs).toBeGreaterThan(250);
    expect(list.mainThread.stack[0]).toMatch(new RegExp(`^spinHere \\(${APP_FILE.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+\\)$`));
    const spin = list.requests.find((r) => r.url === '/spin?ms=3000');
    expect(spin?.executing).toBe(true);
    expect(list.requests.find((r) => r.url === '/timer?ms=3000')?.executing).toBeUndefined();
    await Promise.all([spinning.done, waiting.done]);
  });
});

describe('requests track under load', () => {
  let app: App;
  let client: Client;

  beforeAll(async () => {
    app = await startApp({ script: APP_FILE, config: { pluginOptions: { requests: { trackStacksPerSecond: 2 } } } });
    client = await connect(app.socket);
  });

  afterAll(async () => {
    await client?.close();
    await app?.kill();
  });

  it('captures the frames of a bounded number of waits a second, and lists the rest without', async () => {
    const armed = (await client.call('requests', 'track', { duration: '20s', hooks: true })) as any;
    expect(armed.note).toMatch(/frames are captured for at most 2 waits a second/);
    const port = await app.port();
    // A burst: 2 stacks a second for 8 timers.
    const fired = Array.from({ length: 8 }, () => fire(port, '/timer?ms=20000'));
    await waitFor(async () => (await rows(client)).total === 8, 30_000, 'eight requests');
    const listed = (await rows(client)).requests;
    // How many seconds the burst spanned in the app (a busy machine may spread it): the cap
    // allows 2 captures in each one-second window it touched.
    const ages = listed.map((r) => r.ageMs);
    const windows = Math.floor((Math.max(...ages) - Math.min(...ages)) / 1000) + 2;
    const waits = await Promise.all(listed.map(async (r) => ((await client.call('requests', 'show', { id: r.id })) as any).waitingOn));
    const timers = waits.map((w) => w.find((x: any) => x.type === 'Timeout'));
    expect(timers.every((t) => t?.detail === 'timer of 20000 ms')).toBe(true);
    const captured = timers.filter((t) => Array.isArray(t.createdAt));
    expect(captured.length).toBeGreaterThanOrEqual(1);
    expect(captured.length).toBeLessThanOrEqual(2 * windows);
    expect(captured.every((t) => t.createdAt.some((f: any) => f.function === 'waitOnTimer'))).toBe(true);
    expect(timers.filter((t) => !Array.isArray(t.createdAt)).every((t) => t.createdAt === 'not captured (over 2 stacks a second)')).toBe(true);
    fired.forEach((f) => f.abort());
    await Promise.all(fired.map((f) => f.done));
    await client.call('requests', 'track', { off: true });
  });
});

describe('requests in an Express app', () => {
  it('names the matched route and streams finished requests with watch', async () => {
    const app = await startApp({ script: 'express-app.cjs' });
    const port = await app.port();
    const client = await connect(app.socket);
    try {
      const watched: any[] = [];
      const watching = client.call('requests', 'watch', { minDuration: '100ms' }, { onData: (d) => watched.push(d) }).catch((e) => e);
      const pending = fire(port, '/users/42?ms=600');
      // The table may be read mid-routing (the inspector interrupts running JavaScript), so wait for the route.
      const row = await waitFor(async () => (await rows(client)).requests.find((r) => r.route), 5000, 'the routed request');
      expect(row).toMatchObject({ url: '/users/42?ms=600', route: '/users/:id' });
      expect(await pending.done).toBe('{"id":"42"}');
      await app.get('/health'); // fast: filtered out by --min-duration
      await waitFor(() => watched.length === 1, 5000, 'the watched request');
      expect(watched[0]).toMatchObject({ method: 'GET', url: '/users/42?ms=600', route: '/users/:id', status: 200, aborted: false });
      await client.close();
      expect((await watching).code).toBe('ISPY_ERR_DISCONNECTED');
    } finally {
      await app.kill();
    }
  });
});
