// What the always-on requests plugin does per request, counted (never timed): reads of the
// `performance` global, an accessor whose getter Node runs on every read (callgrind counted
// ~100 instructions a read, three reads a request), must not happen per request.

import { afterAll, describe, expect, it } from 'vitest';
import * as http from 'node:http';
import { cleanup, startApp } from './helpers';
import { connect } from '../dist/src/client/index.js';

afterAll(cleanup);

const REQUESTS = 200;

function get(port: number, pathname: string, agent: http.Agent): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: pathname, agent }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
  });
}

describe('requests plugin per-request work', () => {
  it('does not read the performance global per request, and still times every request', async () => {
    const app = await startApp({ script: 'requests-cost-app.cjs' });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 10 });
    try {
      const port = await app.port();
      const before = Number(await get(port, '/count', agent));
      for (let i = 0; i < REQUESTS; i += 10) {
        await Promise.all(Array.from({ length: 10 }, () => get(port, '/x', agent)));
      }
      const reads = Number(await get(port, '/count', agent)) - before;
      // The old table read it twice per request (start and finish): 400 here. A GC now and
      // then may read it (the process plugin's recorder), so not an exact zero.
      expect(reads).toBeLessThan(REQUESTS / 20);

      const client = await connect(app.socket);
      try {
        const slow = (await client.call('requests', 'slow', { limit: 500 })) as { requests: { url: string; durationMs: number; status: number }[] };
        const timed = slow.requests.filter((r) => r.url === '/x');
        expect(timed).toHaveLength(REQUESTS);
        for (const r of timed) {
          expect(r.status).toBe(200);
          expect(r.durationMs).toBeGreaterThanOrEqual(0);
          expect(r.durationMs).toBeLessThan(60_000);
        }
      } finally {
        await client.close();
      }
    } finally {
      agent.destroy();
      await app.kill();
    }
  }, 60_000);
});
