// The soak, CI form (~30 s; bench/reliability-soak.js runs it for 10 minutes): clients come,
// run commands and go, in a loop, while the app serves HTTP. After the warm-up the app's
// RSS must stay flat by the measure of its own warm-up, its fd count within what the
// clients and the load hold at once, and back at its baseline exactly once they have gone.
// The verdict on memory is itself checked on series whose answer is known.

import { afterAll, describe, expect, it } from 'vitest';
import { cleanup } from '../helpers';
import { engineApp, needsProc, NO_PROC, startReliabApp } from './harness';
import { retainedGrowth, runSoak } from '../../bench/reliability-soak.js';
import { memoryVerdict, prng } from '../../bench/reliability-lib.js';

afterAll(cleanup);

/** RSS samples every 250 ms: a level, GC-like noise of ±`noiseKB`, and a leak of `leakKBPerS`. */
function series(fromS: number, toS: number, { levelKB = 120_000, noiseKB = 4000, leakKBPerS = 0, seed = 7 } = {}): { t: number; v: number }[] {
  const rng = prng(seed);
  const out = [];
  for (let t = fromS * 1000; t < toS * 1000; t += 250) out.push({ t, v: levelKB + (rng.next() * 2 - 1) * noiseKB + (leakKBPerS * t) / 1000 });
  return out;
}

describe('memory verdict', () => {
  it('calls a noisy but level series flat, for any noise level', () => {
    for (const noiseKB of [200, 4000, 20_000]) {
      for (const seed of [1, 2, 3]) expect(memoryVerdict(series(7.5, 15, { noiseKB, seed }), series(15, 30, { noiseKB, seed: seed + 10 })).flat).toBe(true);
    }
  });

  it('calls a leak past the warm-up swing not flat, and one within it flat', () => {
    // ±4 MB of noise: the warm-up swing is ~7 MB, so the tolerance is ~22 MB over the 15 s measured.
    expect(memoryVerdict(series(7.5, 15), series(15, 30, { leakKBPerS: 2000 })).flat).toBe(false);
    expect(memoryVerdict(series(7.5, 15), series(15, 30, { leakKBPerS: 200 })).flat).toBe(true);
    // The same slow leak in a quiet app: its swing is small, so the leak stands out.
    expect(memoryVerdict(series(7.5, 15, { noiseKB: 200 }), series(15, 30, { noiseKB: 200, leakKBPerS: 200 })).flat).toBe(false);
  });

  it('catches a step up after the warm-up as well as a slope', () => {
    const warm = series(7.5, 15);
    const stepped = series(15, 30).map((p) => ({ t: p.t, v: p.v + 30_000 }));
    expect(memoryVerdict(warm, stepped).flat).toBe(false);
  });

  it('after a full GC, tells garbage V8 had not collected from a leak', () => {
    const warm = { heapUsedMB: 8, rssKB: 100_000 };
    // Garbage only: what a full GC leaves is where it was.
    expect(retainedGrowth(warm, { heapUsedMB: 8.4, rssKB: 104_000 }, 5000).grew).toBe(false);
    // Retained heap, or RSS a GC does not give back: a leak.
    expect(retainedGrowth(warm, { heapUsedMB: 14, rssKB: 104_000 }, 5000).grew).toBe(true);
    expect(retainedGrowth(warm, { heapUsedMB: 8, rssKB: 130_000 }, 5000).grew).toBe(true);
    // Not measured is not a pass.
    expect(retainedGrowth(warm, { error: 'timeout' }, 5000).grew).toBe(true);
  });

  it('does not widen its allowance for a warm-up that is still rising', () => {
    // A leak from the start: the warm-up's own trend is not noise.
    const leak = { noiseKB: 1000, leakKBPerS: 500 };
    expect(memoryVerdict(series(7.5, 15, leak), series(15, 30, leak)).flat).toBe(false);
  });
});

describe.skipIf(NO_PROC !== undefined)(needsProc('soak'), () => {
  it('clients come and go for ~30 s while the app serves HTTP: memory and fds flat, fds back to baseline, nothing left on', async () => {
    const app = await startReliabApp();
    const result = await runSoak(engineApp(app), { seconds: 10, minWarmupVisits: 1000, maxWarmupSeconds: 45, settleSeconds: 5, clients: 4, loadConnections: 4 });
    const { problems, ...figures } = result;
    console.log(`soak: ${JSON.stringify(figures)}`);
    expect(problems).toEqual([]);
    expect(result.visits).toBeGreaterThan(100);
    expect(result.http.ok).toBeGreaterThan(1000);
    await app.kill();
  }, 90_000);
});
