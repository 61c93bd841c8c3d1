// The benchmarks' verdicts (bench/lib/verdict.js, bench/lib/stats.js) must be able to fail:
// a goal is met only when the whole 95 % interval lies within it, an interval that merely
// includes ×1 is no pass, and an interval clustered by round is not narrowed by piling up
// windows of one noisy round. Pure functions: no process is started.
import { describe, expect, it } from 'vitest';
import { clusteredCI, roundsTInterval, summarize } from '../bench/lib/stats.js';
import { judge, MET, NOT_MET, UNRESOLVED } from '../bench/lib/verdict.js';

describe('bench verdicts', () => {
  it('meets a goal only when the whole interval is within it', () => {
    expect(judge({ estimate: 1.005, ci95: [0.99, 1.015], n: 30 }, 1.02).verdict).toBe(MET);
    expect(judge({ estimate: 1.3, ci95: [1.2, 1.4], n: 30 }, 1.15).verdict).toBe(NOT_MET);
  });

  it('does not pass an interval that includes ×1 but reaches past the goal', () => {
    const j = judge({ estimate: 1.0, ci95: [0.85, 1.2], n: 12 }, 1.02);
    expect(j.verdict).toBe(UNRESOLVED);
    expect(j.text).toMatch(/cannot resolve at this noise \(CI ±17\.5 %/);
  });

  it('judges "at least" goals and times the same way', () => {
    expect(judge({ estimate: 0.99, ci95: [0.98, 1.0], n: 20 }, 0.97, { better: 'higher' }).verdict).toBe(MET);
    expect(judge({ estimate: 0.9, ci95: [0.88, 0.93], n: 20 }, 0.97, { better: 'higher' }).verdict).toBe(NOT_MET);
    expect(judge({ estimate: 12, ci95: [9, 16], n: 20 }, 15, { unit: 'ms' }).text).toMatch(/±3\.5 ms/);
    expect(judge({ estimate: 1, ci95: [NaN, NaN], n: 1 }, 1.02).verdict).toBe(UNRESOLVED);
  });

  it('clusters by round: one round of many windows does not buy a narrow interval', () => {
    // Three rounds whose levels differ by ±5 %, each with many tight windows.
    const rounds = [0.95, 1.0, 1.05].map((level, r) => Array.from({ length: 40 }, (_, i) => level + ((i * 7 + r) % 5) * 0.001));
    const [lo, hi] = clusteredCI(rounds);
    const pooled = summarize(rounds.flat().map((x) => [x]));
    expect(hi - lo).toBeGreaterThan(0.05);
    expect(pooled.ci95[1] - pooled.ci95[0]).toBeLessThan(hi - lo);
    expect(judge(summarize(rounds), 1.02).verdict).toBe(UNRESOLVED);
  });

  it('with few rounds, widens the bootstrap to the t-interval of the round medians', () => {
    // Three rounds that agree closely inside, less so between: the bootstrap alone would
    // call ×1.02 met; the round medians (1.009, 1.013, 0.997) cannot.
    const rounds = [1.009, 1.013, 0.997].map((level) => Array.from({ length: 30 }, (_, i) => level + ((i % 7) - 3) * 0.002));
    const [blo, bhi] = clusteredCI(rounds);
    const s = summarize(rounds);
    expect(bhi).toBeLessThanOrEqual(1.02);
    expect(s.ci95[1]).toBeGreaterThan(1.02);
    expect(s.ci95[0]).toBeLessThanOrEqual(blo);
    expect(judge(s, 1.02).verdict).toBe(UNRESOLVED);
    const [tlo, thi] = roundsTInterval([1.009, 1.013, 0.997]);
    expect(thi - tlo).toBeCloseTo(2 * 4.303 * (Math.sqrt(((1.009 - 1.0063) ** 2 + (1.013 - 1.0063) ** 2 + (0.997 - 1.0063) ** 2) / 2) / Math.sqrt(3)), 3);
  });

  it('keeps the interval of a positive figure positive, however few and scattered the rounds', () => {
    // Two rounds of a ratio, ×0.6 and ×1.7: linear t with 1 degree of freedom reaches below 0.
    const rounds = [[0.6, 0.62, 0.58], [1.7, 1.72, 1.68]];
    const [llo] = roundsTInterval([0.6, 1.7]);
    expect(llo).toBeLessThan(0);
    const s = summarize(rounds);
    expect(s.ci95[0]).toBeGreaterThan(0);
    expect(s.ci95[1]).toBeGreaterThan(1.7);
    expect(judge(s, 1.02).verdict).toBe(UNRESOLVED);
    // A figure that can be negative (CPU above idle) stays on the linear scale.
    expect(summarize([[-2, -1], [3, 4]]).ci95[0]).toBeLessThan(-2);
  });

  it('is deterministic: the same data gives the same interval', () => {
    const groups = [[1, 1.1, 0.9], [1.05, 0.95, 1.0]];
    expect(clusteredCI(groups)).toEqual(clusteredCI(groups));
  });
});
