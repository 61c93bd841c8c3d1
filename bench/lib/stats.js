'use strict';
// Confidence intervals for the benchmarks' verdicts. Pure functions, seeded (the same data
// gives the same interval), no process hooks: the tests load this file.
//
// Windows measured in one round share a server process (its JIT, its memory layout) and a
// stretch of the machine's time, so they are not independent samples: a bootstrap that
// resampled all windows of all rounds as one pool would give an interval far too narrow.
// `clusteredCI` resamples the rounds first, then the windows inside each chosen round (the
// two-stage bootstrap), so the interval carries the spread between processes as well as
// the spread between windows. With few rounds it errs wide, which is the side a verdict
// that must be able to fail has to err on.

const { percentile, sorted } = require('./util');

/** mulberry32: a small seeded PRNG in [0, 1). */
function rng(seed = 12345) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function median(xs) {
  if (xs.length === 0) return NaN;
  const s = sorted(xs);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function mean(xs) {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
}

/**
 * 95 % interval of `stat` (median by default) over groups of samples (rounds of windows):
 * each bootstrap draw takes as many rounds as there are, with replacement, and from each
 * drawn round as many of its samples as it has, with replacement. Empty groups are ignored.
 * Returns [lo, hi]; [NaN, NaN] when there are fewer than 3 samples in all.
 */
function clusteredCI(groups, { stat = median, iterations = 2000, seed = 12345, level = 0.95 } = {}) {
  const gs = groups.filter((g) => g.length > 0);
  const n = gs.reduce((a, g) => a + g.length, 0);
  if (n < 3) return [NaN, NaN];
  const rand = rng(seed);
  const out = new Array(iterations);
  const pool = [];
  for (let i = 0; i < iterations; i++) {
    pool.length = 0;
    for (let k = 0; k < gs.length; k++) {
      const g = gs[Math.floor(rand() * gs.length)];
      for (let j = 0; j < g.length; j++) pool.push(g[Math.floor(rand() * g.length)]);
    }
    out[i] = stat(pool);
  }
  const tail = ((1 - level) / 2) * 100;
  return [percentile(out, tail), percentile(out, 100 - tail)];
}

/** 95 % bootstrap interval of `stat` over independent samples (one group of them). */
function bootstrapCI(xs, opts = {}) {
  return clusteredCI(xs.map((x) => [x]), opts);
}

/** Median, its clustered 95 % interval, the count and the per-group medians, rounded. */
function summarize(groups, { digits = 4, stat = median } = {}) {
  const all = groups.flat();
  const [lo, hi] = clusteredCI(groups, { stat });
  const r = (x) => (Number.isFinite(x) ? Math.round(x * 10 ** digits) / 10 ** digits : x);
  return {
    estimate: r(stat(all)),
    ci95: [r(lo), r(hi)],
    n: all.length,
    groups: groups.filter((g) => g.length).length,
    groupMedians: groups.filter((g) => g.length).map((g) => r(median(g))),
  };
}

module.exports = { rng, median, mean, clusteredCI, bootstrapCI, summarize };
