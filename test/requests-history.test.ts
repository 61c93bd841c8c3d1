// The history of finished requests keeps URLs as bytes in one buffer written round and round
// (table.ts, UrlArena), so that the last N URLs are not N strings alive at every scavenge.
// Here the real table is fed (its channel handlers called as node:http would) with more
// requests than it keeps, and `slow` must give back exactly the URLs of the newest.

import { describe, expect, it } from 'vitest';
import { RequestTable } from '../dist/plugins/requests/table.js';

function finish(t: InstanceType<typeof RequestTable>, url: string): void {
  const socket = {} as never;
  const request = { method: 'GET', url, headers: {} } as never;
  const response = { statusCode: 200 } as never;
  t.onServerStart({ request, response, socket });
  t.onServerFinish({ response, socket });
}

describe('requests history', () => {
  it('gives back the URLs of the newest requests it keeps, Latin-1 or not, short or long', () => {
    const t = new RequestTable(50, () => false);
    const urls: string[] = [];
    for (let i = 0; i < 3000; i++) {
      // Mostly short; now and then long (up to ~3 KB, more than an eighth of the buffer),
      // or with characters beyond Latin-1 (kept as the string), or with Latin-1 accents.
      const url =
        i % 97 === 0 ? `/long/${'x'.repeat(i % 3000)}` : i % 31 === 0 ? `/unicode/${i}/€` : i % 17 === 0 ? `/latin/${i}/café` : `/users/${i}?q=${'a'.repeat(i % 200)}`;
      urls.push(url);
      finish(t, url);
    }
    const slow = t.slow(50) as { kept: number; requests: { id: number; url: string }[] };
    expect(slow.kept).toBe(50);
    const byId = new Map(slow.requests.map((r) => [r.id, r.url]));
    expect([...byId.keys()].sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, k) => 2951 + k));
    for (const [id, url] of byId) expect(url).toBe(urls[id - 1]);
  });
});
