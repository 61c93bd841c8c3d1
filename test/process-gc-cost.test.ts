// What recording GC pauses for `process gc` does to the app's own collections: counts from
// V8's trace (the app prints them), not timings. Node's 'gc' PerformanceObserver built an
// entry per collection in JavaScript, about 3 KB of which lived past the next scavenge and
// was promoted each time; the old generation grew until a mark-compact, after which V8
// grew the young generation (fewer, longer scavenges: the p99 of issue 12).

import { afterAll, describe, expect, it } from 'vitest';
import { cleanup, startApp, waitFor } from './helpers';
import { connect } from '../dist/src/client/index.js';

afterAll(cleanup);

interface Collection {
  isolate: string;
  kind: string;
  promoted: number;
}

/** The collections V8 printed between the churn markers, of the isolate that made most (the main thread's). */
function churnCollections(stdout: string): Collection[] {
  const from = stdout.indexOf('CHURN BEGIN');
  const to = stdout.indexOf('CHURN END');
  const all: Collection[] = [];
  for (const line of stdout.slice(from, to).split('\n')) {
    const m = /^\[\d+:(0x[0-9a-f]+)\].*? gc=(\w+) .*? promoted=(\d+)/.exec(line);
    if (m) all.push({ isolate: m[1]!, kind: m[2]!, promoted: Number(m[3]) });
  }
  const counts = new Map<string, number>();
  for (const c of all) counts.set(c.isolate, (counts.get(c.isolate) ?? 0) + 1);
  const main = [...counts].sort((a, b) => b[1] - a[1])[0]?.[0];
  return all.filter((c) => c.isolate === main);
}

describe('process gc recording', () => {
  it('leaves nothing per collection that outlives the next scavenge', async () => {
    const app = await startApp({ script: 'gc-churn-app.cjs' });
    const client = await connect(app.socket);
    try {
      // Recording has started (the recorder starts a turn after the agent) and works.
      await waitFor(async () => {
        try {
          return (await client.call('process', 'gc', { limit: 1 })) as object;
        } catch {
          return undefined;
        }
      }, 30_000, 'process gc to answer');
      expect((await app.get('/churn?n=3000000', 120_000)).status).toBe(200);
      const scavenges = churnCollections(app.stdout()).filter((c) => c.kind === 's');
      // Enough collections for the count to mean something (each is ~1-16 MB of churn).
      expect(scavenges.length).toBeGreaterThanOrEqual(20);
      // Without any recording nearly every scavenge here promotes nothing (a rare one promotes
      // what the server itself keeps); with Node's GC entries about half promoted 3.3 KB each.
      const promoting = scavenges.filter((c) => c.promoted >= 1024).length;
      expect(promoting / scavenges.length).toBeLessThan(0.15);
      // And the pauses were recorded: `process gc` lists them.
      const gc = (await client.call('process', 'gc', { limit: 100 })) as { totals: { kind: string; count: number }[] };
      const minor = gc.totals.find((t) => t.kind === 'minor');
      expect(minor?.count).toBeGreaterThanOrEqual(scavenges.length);
    } finally {
      await client.close();
      await app.kill();
    }
  }, 180_000);
});
