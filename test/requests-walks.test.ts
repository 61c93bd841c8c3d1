// The requests plugin's per-request work must not grow with the number of requests in
// flight: no path a request or an outbound call takes may walk the live table. Counted,
// not timed: the table counts every entry its walks visit (the once-a-second sweep apart),
// and real requests go through real node:http, Express and Fastify servers with 10 and
// with 5,000 requests held in flight.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as http from 'node:http';
import type * as net from 'node:net';
import { cleanup, startApp, waitFor, type App } from './helpers';
import { connect } from '../dist/src/client/index.js';

afterAll(cleanup);

const FRAMEWORKS = ['http', 'express', 'fastify'] as const;
/** Requests sent through the table while it holds the others, each with two outbound calls. */
const BATCH = 60;

interface Backend {
  url: string;
  held: http.ServerResponse[];
  close(): Promise<void>;
}

/** Answers at once, except /held, which waits until the test ends it. */
function backend(): Promise<Backend> {
  const held: http.ServerResponse[] = [];
  const server = http.createServer((req, res) => (req.url === '/held' ? held.push(res) : res.end('ok')));
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
        held,
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

/** One request on its own connection (so thousands can be held at once). */
function get(port: number, pathname: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: pathname, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
  });
}

type Walks = { inFlight: number; visited: number; held: number };

describe.each(FRAMEWORKS)('requests table walks per request (%s)', (framework) => {
  let app: App;
  let port: number;
  let back: Backend;
  const parked: Promise<string>[] = [];

  const walks = async (): Promise<Walks> => JSON.parse(await get(port, '/walks'));

  /** Holds requests in the app until `total` are parked, a few hundred connections at a time. */
  async function holdUntil(total: number): Promise<void> {
    while (parked.length < total) {
      const step = Math.min(250, total - parked.length);
      for (let i = 0; i < step; i++) parked.push(get(port, `/hold/${parked.length}`));
      const want = parked.length;
      await waitFor(async () => (await walks()).held === want, 30_000, `${want} requests held in the ${framework} app`);
    }
  }

  /** Entries visited per request of a batch through the table as it stands. */
  async function visitedPerRequest(): Promise<number> {
    const before = await walks();
    for (let i = 0; i < BATCH; i += 10) {
      const bodies = await Promise.all(Array.from({ length: 10 }, (_, k) => get(port, `/work/${i + k}`)));
      expect(bodies).toEqual(Array(10).fill('worked'));
    }
    const after = await walks();
    return (after.visited - before.visited) / BATCH;
  }

  beforeAll(async () => {
    back = await backend();
    app = await startApp({ script: 'requests-walk-app.cjs', env: { FRAMEWORK: framework, BACKEND: back.url } });
    port = await app.port();
  }, 60_000);

  afterAll(async () => {
    await app?.kill();
    await Promise.allSettled(parked);
    await back?.close();
  });

  it('visits no entry of the table per request, at 10 and at 5,000 in flight', async () => {
    await holdUntil(10);
    expect((await walks()).inFlight).toBe(11); // the held ones and /walks itself
    expect(await visitedPerRequest()).toBe(0);

    await holdUntil(5000);
    expect((await walks()).inFlight).toBe(5001);
    expect(await visitedPerRequest()).toBe(0);

    // Tracking armed (arming reads the table once; the requests after it do not).
    const client = await connect(app.socket);
    try {
      expect(await client.call('requests', 'track', { duration: '60s' })).toMatchObject({ tracking: 'armed' });
      expect(await visitedPerRequest()).toBe(0);
      expect(await client.call('requests', 'track', { off: true })).toMatchObject({ wasArmed: true });
    } finally {
      await client.close();
    }
  }, 120_000);

  it('still names the route and attributes the outbound call to its request, made among 5,000', async () => {
    const client = await connect(app.socket);
    try {
      const calling = get(port, '/call/1');
      await waitFor(() => back.held.length === 1, 30_000, 'the outbound call to reach the backend');
      const oldest = (await client.call('requests', 'list', { limit: 1 })) as { total: number; requests: { url: string; route?: string }[] };
      expect(oldest.total).toBe(5001); // 5,000 held and /call/1: nothing left of the batches
      expect(oldest.requests[0]!.url).toBe('/hold/0');
      if (framework !== 'http') expect(oldest.requests[0]!.route).toBe('/hold/:n');

      expect(await get(port, '/release')).toBe('5000');
      expect(await Promise.all(parked.splice(0))).toEqual(Array(5000).fill('released'));
      const list = await waitFor(async () => {
        const l = (await client.call('requests', 'list')) as { total: number; requests: { id: number; url: string; outbound?: number }[] };
        return l.total === 1 && l;
      }, 10_000, 'only /call/1 left in flight');
      expect(list.requests[0]).toMatchObject({ url: '/call/1', outbound: 1 });
      const shown = (await client.call('requests', 'show', { id: list.requests[0]!.id })) as { request: string; route?: string; outbound: unknown[] };
      expect(shown.outbound).toEqual([expect.objectContaining({ kind: 'http', url: `${back.url}/held` })]);
      if (framework !== 'http') expect(shown.route).toBe('/call/:n');

      back.held.splice(0).forEach((res) => res.end('ok'));
      expect(await calling).toBe('called');
    } finally {
      await client.close();
    }
  }, 60_000);
});
