// The statistics of bench/instructions.js: instructions per request from two counted
// segments, the total read from a callgrind dump, and the ratio of two sets of repeats with
// a Welch interval on the log scale, judged like every other goal (met only when the whole
// interval is within). Pure functions: no process is started.
import { describe, expect, it } from 'vitest';
import { parseTotals, perRequest } from '../bench/lib/callgrind.js';
import { logRatioInterval, pairedLogRatioInterval, t95 } from '../bench/lib/stats.js';
import { judge, MET, NOT_MET, UNRESOLVED } from '../bench/lib/verdict.js';
import { schedule } from '../bench/instructions.js';

describe('bench instruction counts', () => {
  it('pairs by repeat: a shift both sides of a pair share drops out, which unpaired repeats cannot resolve', () => {
    // Each repeat lands in one of two modes (~55 k or ~60 k), the agent adding 1 % within it.
    const bare = [55000, 60000, 55200, 60100];
    const agent = bare.map((b) => b * 1.01);
    const paired = pairedLogRatioInterval(agent.map((a, i) => [a, bare[i]!]));
    expect(paired.estimate).toBeCloseTo(1.01, 4);
    expect(paired.ci95[1]! - paired.ci95[0]!).toBeLessThan(0.001);
    expect(judge(paired, 1.02).verdict).toBe(MET);
    const unpaired = logRatioInterval(agent, bare);
    expect(judge(unpaired, 1.02).verdict).toBe(UNRESOLVED);
    expect(pairedLogRatioInterval([[1, 1]]).ci95.every(Number.isNaN)).toBe(true);
  });

  it('takes per request the difference of two segments over the difference of their lengths', () => {
    // 1,000,000 instructions a segment whatever its length, 60,000 a request.
    expect(perRequest({ n1: 500, i1: 1e6 + 500 * 60000, n2: 2500, i2: 1e6 + 2500 * 60000 })).toBe(60000);
    expect(() => perRequest({ n1: 500, i1: 1, n2: 500, i2: 2 })).toThrow(/more requests/);
  });

  it('reads the totals of a callgrind dump, and refuses what is not one', () => {
    const dump = '# callgrind format\nversion: 1\nevents: Ir\nsummary: 123456\nfn=(1) x\n3 5\ntotals: 123456\n';
    expect(parseTotals(dump)).toBe(123456);
    expect(parseTotals('events: Ir\nsummary: 42\n')).toBe(42);
    expect(() => parseTotals('hello')).toThrow(/not a callgrind dump/);
  });

  it('meets a goal when repeats agree closely and their ratio is under it', () => {
    const bare = [60000, 60120, 59950];
    const agent = [60600, 60700, 60500];
    const r = logRatioInterval(agent, bare);
    expect(r.estimate).toBeCloseTo(1.0096, 4);
    expect(r.ci95[0]).toBeLessThan(r.estimate);
    expect(r.ci95[1]).toBeGreaterThan(r.estimate);
    expect(r.ci95[1]).toBeLessThan(1.02);
    expect(judge(r, 1.02).verdict).toBe(MET);
    // Half the range of the repeats, in % of their median: 0.14 % for the bare ones.
    expect(r.spreadPct.b).toBeCloseTo(0.1417, 3);
  });

  it('does not meet it when the whole interval is over, and cannot tell when repeats scatter', () => {
    expect(judge(logRatioInterval([63000, 63100, 62900], [60000, 60050, 59950]), 1.02).verdict).toBe(NOT_MET);
    // The same medians, repeats scattered by ±4 %: three of them cannot resolve ×1.02.
    const j = judge(logRatioInterval([60600, 63000, 58200], [60000, 62400, 57600]), 1.02);
    expect(j.verdict).toBe(UNRESOLVED);
    expect(j.text).toMatch(/cannot resolve at this noise/);
  });

  it('widens with few repeats: Welch degrees of freedom rounded down, t from the table', () => {
    expect(t95(2)).toBe(4.303);
    expect(t95(2.9)).toBe(4.303);
    expect(t95(12)).toBe(2.179);
    expect(t95(1000)).toBe(1.96);
    // Two a side of the same spread give a wider interval than five a side.
    const two = logRatioInterval([101, 103], [100, 102]);
    const five = logRatioInterval([101, 103, 101, 103, 102], [100, 102, 100, 102, 101]);
    expect(two.ci95[1] - two.ci95[0]).toBeGreaterThan(five.ci95[1] - five.ci95[0]);
    // Fewer than two a side: no interval, so no verdict either way.
    expect(judge(logRatioInterval([101], [100, 102]), 1.02).verdict).toBe(UNRESOLVED);
  });

  it('an exact repeat on both sides is an interval of one point', () => {
    const r = logRatioInterval([1010, 1010, 1010], [1000, 1000, 1000]);
    expect(r.ci95).toEqual([1.01, 1.01]);
    expect(judge(r, 1.02).verdict).toBe(MET);
  });

  it('interleaves: every repeat runs every variant of every group before the next repeat', () => {
    const jobs = schedule({ frameworks: ['http', 'express'], sizes: [10], variants: ['bare', 'default', 'armed'], repeats: 3 });
    expect(jobs).toHaveLength(18);
    for (let rep = 0; rep < 3; rep++) {
      const block = jobs.slice(rep * 6, rep * 6 + 6);
      expect(block.every((j) => j.rep === rep)).toBe(true);
      expect(new Set(block.map((j) => `${j.framework} ${j.variant}`)).size).toBe(6);
    }
    // Warm-up lengths differ from process to process (the phase of the garbage collector).
    expect(new Set(jobs.map((j) => j.jitter)).size).toBeGreaterThan(10);
  });
});
