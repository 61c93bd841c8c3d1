// How the requests plugin names Fastify's routes. Fastify publishes the matched route only
// on its handler tracing channel, and with a subscriber there it builds objects for every
// request; the agent instead keeps each instance (fastify.initialization, once) and names a
// request's route when the table is read, with the instance's own router. Only an agent
// that arrives after the instance was made (as `ispy attach` does) subscribes to the channel.

import { afterAll, describe, expect, it } from 'vitest';
import { cleanup, startApp, waitFor, REGISTER, type App } from './helpers';
import { connect, type Client } from '../dist/src/client/index.js';

afterAll(cleanup);

type Row = { id: number; url: string; route?: string };

// URL → the route it matched, as `requests` names it. A parameter with a regular expression
// is named without it (the router confirms the pattern without the expression only).
const ROUTES: Record<string, string> = {
  '/users/42?x=1': '/users/:id',
  '/users/me': '/users/me',
  '/span/3-9': '/span/:from-:to',
  '/files/a/b.txt': '/files/*',
  '/v1/1': '/v1/:n',
  '/num/12': '/num/:id',
};
const HELD: Record<string, string> = {
  ...Object.fromEntries(Object.entries(ROUTES).map(([u, r]) => [`/hold${u}`, `/hold${r}`])),
  '/api/items/7': '/api/items/:item',
};

async function inFlight(client: Client, count: number): Promise<Row[]> {
  return waitFor(async () => {
    const l = (await client.call('requests', 'list', { limit: 100 })) as { requests: Row[] };
    const held = l.requests.filter((r) => r.url in HELD);
    return held.length === count && held;
  }, 30_000, `${count} held requests in the table`);
}

async function withApp(opts: Parameters<typeof startApp>[0], fn: (app: App, client: Client) => Promise<void>): Promise<void> {
  const app = await startApp(opts);
  await app.port();
  // A late agent makes its socket after the app printed its port.
  const client = await waitFor(() => connect(app.socket).catch(() => undefined), 30_000, 'the agent socket');
  try {
    await fn(app, client);
  } finally {
    await client.close();
    await app.kill();
  }
}

describe('requests in a Fastify app', () => {
  it('subscribes to no channel Fastify builds per-request objects for, and still names every route', async () => {
    await withApp({ script: 'fastify-routes-app.cjs' }, async (app, client) => {
      expect((await app.get('/subscribed')).body).toBe('false');
      // Requests in flight from before the client came: list and show name their routes.
      const pending = Object.keys(HELD).map((u) => app.get(u, 60_000));
      const rows = await inFlight(client, Object.keys(HELD).length);
      expect(Object.fromEntries(rows.map((r) => [r.url, r.route]))).toEqual(HELD);
      const shown = (await client.call('requests', 'show', { id: rows[0]!.id })) as { route?: string };
      expect(shown.route).toBe(HELD[rows[0]!.url]);
      expect((await app.get('/release')).body).toBe(String(Object.keys(HELD).length));
      expect((await Promise.all(pending)).map((r) => r.body)).toEqual(Object.keys(HELD).map(() => 'released'));
      // Finished requests: slow names them too.
      for (const u of Object.keys(ROUTES)) expect((await app.get(u)).status).toBe(200);
      // The client can have its answer a moment before the app's 'finish' (its write callback)
      // runs and moves the request to the history: wait for all of them, then compare.
      const named = await waitFor(async () => {
        const slow = (await client.call('requests', 'slow', { limit: 500 })) as { requests: Row[] };
        const all = Object.fromEntries(slow.requests.filter((r) => r.url in ROUTES || r.url in HELD).map((r) => [r.url, r.route]));
        return Object.keys(all).length === Object.keys(ROUTES).length + Object.keys(HELD).length ? all : undefined;
      }, 30_000, 'every finished request in the history');
      expect(named).toEqual({ ...ROUTES, ...HELD });
      // Still no subscriber after the reads.
      expect((await app.get('/subscribed')).body).toBe('false');
    });
  }, 120_000);

  it('names the routes of an instance made before the agent came, through the handler channel', async () => {
    await withApp({ script: 'fastify-routes-app.cjs', preload: 'none', env: { LATE_AGENT: REGISTER } }, async (app, client) => {
      expect((await app.get('/subscribed')).body).toBe('true');
      const pending = app.get('/hold/users/42?x=1', 60_000);
      await waitFor(async () => {
        const l = (await client.call('requests', 'list')) as { requests: Row[] };
        return l.requests.find((r) => r.url === '/hold/users/42?x=1')?.route === '/hold/users/:id';
      }, 30_000, 'the held request, named');
      await app.get('/release');
      expect((await pending).body).toBe('released');
    });
  }, 120_000);
});
